"""What a bucket adds to a local emulator: an HTTP proxy in front of it that delays every request,
injects transient faults (503 answers, connections reset before an answer), can take the store down
altogether, and counts the requests and response bytes it forwarded. Used by the tests and
benchmarks/bench_remote.py; not collected by pytest.

    with StoreProxy(upstream="http://127.0.0.1:4443", delay=0.05, fault_rate=0.05) as proxy:
        os.environ["STORAGE_EMULATOR_HOST"] = proxy.url   # gcsfs now goes through it
"""

from __future__ import annotations

import http.client
import os
import random
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade"}


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = self.bytes = self.faults = self.refused = 0  # refused: answered 503 while down
        self.by_path: dict[str, list[int]] = {}  # path -> [requests, bytes]

    def add(self, path: str, size: int) -> None:
        with self.lock:
            self.requests += 1
            self.bytes += size
            entry = self.by_path.setdefault(path, [0, 0])
            entry[0] += 1
            entry[1] += size

    def reset(self) -> None:
        with self.lock:
            self.requests = self.bytes = self.faults = self.refused = 0
            self.by_path.clear()


class StoreProxy:
    """A threaded reverse proxy on localhost. `delay` seconds before each request is forwarded;
    `fault_rate` of requests answered 503 or cut (half each); `down=True` answers every request 503, and
    so does every request after the first `down_after` GETs it forwarded (an outage at a chosen moment)."""

    def __init__(self, upstream: str, delay: float = 0.0, fault_rate: float = 0.0, seed: int = 0,
                 down_after: int | None = None, cpus: set[int] | None = None):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.delay, self.fault_rate, self.down, self.down_after = delay, fault_rate, False, down_after
        self.counters = Counters()
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                proxy.handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # a pod's clients open many connections at once; the default 5 drops SYNs
            def handle_error(self, request, client_address):
                if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                    super().handle_error(request, client_address)  # a client that hung up is not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self._serve, args=(cpus,), daemon=True)

    def _serve(self, cpus: set[int] | None) -> None:
        """`cpus`: the cores this thread, and the request threads it starts (they inherit it), run on."""
        if cpus:
            os.sched_setaffinity(0, cpus)  # 0: the calling thread, on Linux
        self.server.serve_forever()

    def __enter__(self) -> "StoreProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _draw(self) -> float:
        with self._random_lock:
            return self._random.random()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        if self.delay:
            time.sleep(self.delay)
        draw = self._draw()
        if self.down_after is not None and self.counters.requests >= self.down_after:
            self.down = True
        if self.down or draw < self.fault_rate / 2:
            with self.counters.lock:
                if self.down:
                    self.counters.refused += 1
                else:
                    self.counters.faults += 1
            return self._reply(request, 503, b'{"error": {"code": 503, "message": "injected: service unavailable"}}',
                               {"Content-Type": "application/json"})
        if draw < self.fault_rate:
            with self.counters.lock:
                self.counters.faults += 1
            request.close_connection = True
            request.connection.shutdown(socket.SHUT_RDWR)  # reset before any answer
            return
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            head = request.command == "HEAD"  # its Content-Length is the resource's, and passes through
            dropped = HOP_BY_HOP if head else HOP_BY_HOP | {"content-length"}
            answer = {k: v for k, v in response.getheaders() if k.lower() not in dropped}
        finally:
            connection.close()
        if request.command == "GET":
            self.counters.add(urllib.parse.urlsplit(request.path).path, len(payload))
        self._reply(request, response.status, payload, answer)

    @staticmethod
    def _reply(request, status: int, payload: bytes, headers: dict) -> None:
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        if request.command != "HEAD":
            request.send_header("Content-Length", str(len(payload)))
        elif not any(k.lower() == "content-length" for k in headers):
            request.send_header("Content-Length", "0")
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(payload)

"""A static file server on localhost that honours `Range: bytes=a-b`, as the Hugging Face Hub's file URLs
do: HEAD and GET of files (Content-Length, Accept-Ranges, Last-Modified, ETag), 206 for ranges, no
directory listings. Used by the tests of shards read over HTTP; not collected by pytest.

    with RangeServer(folder) as server:
        TarShardSource(f"{server.url}/train-{{0000..0003}}.tar")
"""

from __future__ import annotations

import email.utils
import os
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class RangeServer:
    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                server.answer(self, body=False)

            def do_GET(self):
                server.answer(self, body=True)

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # many requests in flight; the default backlog of 5 drops connections

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "RangeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = os.path.join(self.folder, urllib.parse.unquote(urllib.parse.urlsplit(request.path).path).lstrip("/"))
        if not os.path.isfile(path) or not os.path.abspath(path).startswith(self.folder):
            return self.reply(request, 404, {}, b"not found" if body else b"", length=9)
        stat = os.stat(path)
        start, end, status = 0, stat.st_size, 200
        match = RANGE.match(request.headers.get("Range", ""))
        if match and (match[1] or match[2]):
            if match[1]:
                start, end = int(match[1]), min(stat.st_size, int(match[2]) + 1 if match[2] else stat.st_size)
            else:  # a suffix: the last N bytes
                start = max(0, stat.st_size - int(match[2]))
            if start >= stat.st_size:
                return self.reply(request, 416, {"Content-Range": f"bytes */{stat.st_size}"}, b"", length=0)
            status = 206
        headers = {"Accept-Ranges": "bytes", "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True),
                   "ETag": f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"', "Content-Type": "application/octet-stream"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{stat.st_size}"
        data = b""
        if body:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(end - start)
        self.reply(request, status, headers, data, length=end - start)

    @staticmethod
    def reply(request, status: int, headers: dict, data: bytes, length: int) -> None:
        request.send_response(status)
        for key, value in {**headers, "Content-Length": str(length)}.items():
            request.send_header(key, value)
        request.end_headers()
        if data:
            request.wfile.write(data)

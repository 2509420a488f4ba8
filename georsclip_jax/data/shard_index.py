"""Tar shard indexes that survive restarts: reading every tar header of RS5M takes minutes per host.

A shard's index (tar_shards.INDEX_DTYPE rows) is cached beside it (`<shard>.georsclip-index.npz`) when
its folder is writable, else under `$XDG_CACHE_HOME/georsclip_jax/tar_index/` (remote shards always
there). A cache is used only while the shard's size and modification stamp, the field keys and the
format version are those it records; one that does not load is ignored and rewritten. Writes go to a
temporary file renamed into place, so concurrent writers (hosts, workers) never leave a torn file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile

import numpy as np

from georsclip_jax import storage

VERSION = 1
SUFFIX = ".georsclip-index.npz"


def cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "georsclip_jax",
                        "tar_index")


def locations(shard_path: str) -> list[str]:
    """Where the shard's index may live, preferred first."""
    central = os.path.join(cache_dir(), hashlib.sha256(shard_path.encode()).hexdigest()[:32] + SUFFIX)
    return [central] if storage.is_remote(shard_path) else [shard_path + SUFFIX, central]


def _tag(shard_path: str, keys) -> str:
    return f"v{VERSION}|{storage.stamp(shard_path)}|{keys!r}"


def load(shard_path: str, keys) -> np.ndarray | None:
    tag = _tag(shard_path, keys)
    for path in locations(shard_path):
        try:
            with np.load(path, allow_pickle=False) as cached:
                if str(cached["tag"]) == tag and cached["rows"].dtype == _dtype():
                    return cached["rows"]
        except (OSError, ValueError, KeyError, EOFError):  # absent, stale format or damaged: rebuilt
            continue
    return None


def save(shard_path: str, keys, rows: np.ndarray) -> None:
    """Beside the shard if that works, else in the cache dir; a cache that cannot be written anywhere
    only costs the next start a re-index."""
    for path in locations(shard_path):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        except OSError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, rows=rows, tag=np.array(_tag(shard_path, keys)))
            os.replace(tmp, path)
            return
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(tmp)


def _dtype():
    from georsclip_jax.data.tar_shards import INDEX_DTYPE

    return INDEX_DTYPE

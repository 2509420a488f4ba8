"""Index a dataset's tar shards once for every host and every later run.

Reading a shard's tar headers means reading the shard whole when it lives in a bucket. The hosts of a
run split the shards that have no index yet (host i of n builds those among shards i, i + n, ...),
store what they built where all can read it (data/shard_index.py: beside the shards, else under the
workdir), wait for each other, and load the rest; a later run, on any number of hosts, reads no shard to index it. Loads and builds run in
a thread pool, so start-up overlaps the store's latency.

Ahead of a run (indexes go beside the shards, else under --workdir, else the local cache):

    python -m georsclip_jax.data.index 'gs://bucket/RS5M/{pub11,rs3}-train-{0000..0099}.tar' [--workdir W]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from georsclip_jax import storage
from georsclip_jax.data import shard_index

THREADS = 16  # shards loaded or built at once: hides per-request latency, bounded memory (readahead blocks)


@dataclasses.dataclass(frozen=True)
class Hosts:
    """This process among the run's processes, and a barrier they all reach."""

    index: int = 0
    count: int = 1
    barrier: Callable[[], None] = lambda: None

    @classmethod
    def of_jax(cls) -> "Hosts":
        import jax

        if jax.process_count() == 1:
            return cls()
        from jax.experimental import multihost_utils

        return cls(jax.process_index(), jax.process_count(),
                   lambda: multihost_utils.sync_global_devices("georsclip_jax shard indexes"))


def build(path: str, keys, workdir: str = "") -> np.ndarray:
    """Read the shard's tar headers and store the index for everyone after."""
    from georsclip_jax.data.tar_shards import read_index

    rows = read_index(path, keys)
    shard_index.save(path, keys, rows, workdir)
    return rows


def shard_indexes(paths: list[str], keys, workdir: str = "", hosts: Hosts = Hosts(),
                  progress: bool = True) -> list[np.ndarray]:
    """Each shard's index rows (shard number 0), built by this host only for its share of the shards
    nobody has indexed; every host of a multi-host run must call it (it waits at `hosts.barrier`)."""
    from tqdm import tqdm

    def load(i):
        return shard_index.load(paths[i], keys, workdir)

    def load_or_build(i):
        rows = load(i)
        return build(paths[i], keys, workdir) if rows is None else rows

    with ThreadPoolExecutor(THREADS) as pool:
        rows = list(pool.map(load, range(len(paths))))
        missing = [i for i, r in enumerate(rows) if r is None]
        mine = [i for i in missing if i % hosts.count == hosts.index]  # owners fixed: no agreement needed
        built = pool.map(lambda i: build(paths[i], keys, workdir), mine)
        for i, r in tqdm(zip(mine, built), total=len(mine), desc="indexing tar shards", unit="shard",
                         disable=not progress or not mine):
            rows[i] = r
        if hosts.count > 1:
            hosts.barrier()
            shared = [storage.join(workdir, "shard_index", "-")] if workdir else []
            storage.list_folders_of([paths[i] for i in missing] + shared)  # the listings others wrote into
            theirs = [i for i in missing if rows[i] is None]
            for i, r in zip(theirs, pool.map(load_or_build, theirs)):  # built by others (or by no one)
                rows[i] = r
    return rows


def main(argv=None) -> int:
    from georsclip_jax.data.tar_shards import PROBLEMS, FieldKeys, resolve_shards

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pattern", help="brace pattern(s) of tar shards, '::'-separated; globs allowed")
    parser.add_argument("--workdir", default="", help="a run's workdir: where indexes go when the shards' "
                                                      "folder is read-only")
    args = parser.parse_args(argv)
    paths = resolve_shards(args.pattern)
    rows = np.concatenate(shard_indexes(paths, FieldKeys(), args.workdir))
    problems = {name: int((rows["problem"] == code).sum()) for code, name in enumerate(PROBLEMS) if name}
    print(f"{len(paths)} shards, {len(rows)} samples, {sum(problems.values())} with problems "
          f"{ {k: v for k, v in problems.items() if v} }")
    return 0


if __name__ == "__main__":
    sys.exit(main())

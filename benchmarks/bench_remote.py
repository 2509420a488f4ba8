"""Input from object storage at pod latencies: the training pipeline reading `gs://` vs the same
shards on local disk, in one process run, interleaved.

The store is a GCS emulator on localhost (fake-gcs-server, tests/fake_gcs.py) behind a proxy that
delays every request by 0 / 20 / 50 / 100 ms (tests/store_proxy.py) and counts the requests it
forwards; gcsfs reaches the emulator only through it. The shards are bench_data.py's real-photo
mosaics (RS5M layout, sides 256-2048 px, JPEG q90); the pipeline is the trainer's with training
defaults (GeoRSCLIP's full augmentation, DCT-scaled decoding, uint8, batch 64) in worker processes.
The emulator and the proxy run on the same cores as the pipeline: the 0 ms row measures what they
cost, and a ratio that stays flat from 0 to 100 ms means the latency is hidden. With `--pin` they run on
a core of their own and both arms of the pipeline on the rest (a real bucket costs the host only its
client): then gs:// and local get the same CPU, and the ratio is what the latency costs.
Shard indexes are built before timing (they are cached per dataset); each throughput is the median of
`--repeats` runs, local and remote alternating; requests per sample are counted at the proxy.

Usage: python benchmarks/bench_remote.py [--images 1024] [--delays-ms 0 20 50 100] [--workers 1 2]
       [--read-threads 2] [--repeats 3] [--pin] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
from bench_data import images_per_second, make_shards, our_loader  # noqa: E402
from fake_gcs import fake_gcs  # noqa: E402
from georsclip_jax.data.pipeline import PipelineOptions  # noqa: E402
from store_proxy import StoreProxy  # noqa: E402


def point_gcsfs_at(url: str) -> None:
    """gcsfs (here and in worker processes started from now on) talks to `url`."""
    import gcsfs

    os.environ["STORAGE_EMULATOR_HOST"] = url
    gcsfs.GCSFileSystem.clear_instance_cache()


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` onto `cpus` (threads it starts later inherit the mask)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def split_cores(store_cpus: set[int], pipeline_cpus: set[int]) -> None:
    """The emulator (this process's child) onto `store_cpus`, this process's threads onto `pipeline_cpus`:
    the worker processes the pipeline starts inherit them, and StoreProxy(cpus=store_cpus) moves itself."""
    for child in child_pids(os.getpid()):
        pin_process(child, store_cpus)
    pin_process(os.getpid(), pipeline_cpus)


def child_pids(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])  # after "pid (comm)": state, ppid
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent:
            children.append(int(entry))
    return children


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--delays-ms", type=int, nargs="+", default=[0, 20, 50, 100])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--read-threads", type=int, nargs="+", default=[PipelineOptions.read_threads],
                        help="PipelineOptions.read_threads: batches each worker fetches and decodes at once")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pin", action="store_true",
                        help="run the emulator and the proxy on the last core and the pipeline (both arms) on the "
                             "others, as a real bucket costs the host only its client")
    parser.add_argument("--data", default="/tmp/georsclip_bench_photos_remote")
    parser.add_argument("--out")
    args = parser.parse_args()
    from georsclip_jax import storage
    from georsclip_jax.data.tar_shards import TarShardSource

    local = make_shards(args.data, args.images)

    def rate(paths, workers, read_threads):
        loader = our_loader(paths, args.batch, workers, "fast", read_threads=read_threads)
        return images_per_second(loader, 2 * workers)

    results = {"host": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "images": args.images,
               "shards": len(local), "batch": args.batch, "pinned": args.pin, "runs": {}}
    cores = sorted(os.sched_getaffinity(0))
    store_cpus, pipeline_cpus = ({cores[-1]}, set(cores[:-1])) if args.pin else (None, None)
    with fake_gcs("bucket") as emulator:
        remote_dir = "gs://bucket/photos"
        storage.upload_tree(args.data, remote_dir)
        remote = [f"{remote_dir}/{os.path.basename(p)}" for p in local]
        if args.pin:
            split_cores(store_cpus, pipeline_cpus)
        for delay in args.delays_ms:
            with StoreProxy(emulator, delay=delay / 1000, cpus=store_cpus) as proxy:
                point_gcsfs_at(proxy.url)
                TarShardSource(remote)  # index once (cached for the runs below)
                for workers, threads in [(w, t) for w in args.workers for t in args.read_threads]:
                    runs = {"local": [], "gs": []}
                    proxy.counters.reset()
                    samples = 0
                    for _ in range(args.repeats):
                        runs["local"].append(rate(local, workers, threads))
                        runs["gs"].append(rate(remote, workers, threads))
                        samples += args.images // args.batch * args.batch
                    here, there = statistics.median(runs["local"]), statistics.median(runs["gs"])
                    # Each round's gs:// run against the local run just before it: the machine's load drifts
                    # between rounds more than within one, so these are what to pool across runs.
                    round_ratios = [g / loc for loc, g in zip(runs["local"], runs["gs"])]
                    per_sample = proxy.counters.requests / samples
                    results["runs"][f"delay={delay}ms,workers={workers},read_threads={threads}"] = {
                        "local_img_s": here, "gs_img_s": there, "ratio": there / here, "round_ratios": round_ratios,
                        "requests_per_sample": per_sample, "all_runs": runs}
                    print(f"{delay:3d} ms, {workers} worker(s), {threads} read thread(s): local {here:.0f} img/s, "
                          f"gs:// {there:.0f} img/s, ratio {there / here:.2f}x (rounds "
                          f"{[round(r, 2) for r in round_ratios]}), {per_sample:.3f} requests/sample  (runs: local "
                          f"{[round(x) for x in runs['local']]}, gs {[round(x) for x in runs['gs']]})", flush=True)
        point_gcsfs_at(emulator)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

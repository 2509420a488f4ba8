"""Restarts without recompiling: time to the first step of a run started cold and of the same config
started again with JAX's persistent compilation cache warm (as after a preemption).

Each workload runs twice as `python -m georsclip_jax.main` processes, each in a fresh workdir sharing
one compilation-cache folder (`--config.train.compilation_cache`), so the second start reads the same
synthetic data and compiles nothing it compiled before. Reported: wall time from process start to the
first logged step, and the train step's compile report (seconds, loaded from the cache or not).

Usage: python benchmarks/bench_restart.py [--workloads demo vitb32] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["--config.train.total_steps=2", "--config.train.log_every=1", "--config.eval.tasks=",
          "--config.eval.every_steps=0", "--config.export.open_clip=False", "--config.export.loss_plot=False",
          "--config.data.synthetic.val_samples=0", "--config.data.synthetic.train_samples=64",
          "--config.data.synthetic.eval_per_class=1", "--config.data.synthetic.retrieval_images=2"]
WORKLOADS = {
    "demo": ["--config.train.global_batch_size=16"],  # the quick demo's tiny CLIP, 32 px
    "vitb32": ["--config.model.name=ViT-B-32", "--config.train.global_batch_size=8"],  # 224 px, 151 M params
}


def start_to_first_step(workdir: str, cache: str, overrides: list[str]) -> tuple[float, dict]:
    began = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "georsclip_jax.main", "--config", "configs/demo.py:quick",
                                "--workdir", workdir, f"--config.train.compilation_cache={cache}", *COMMON,
                                *overrides], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics, first = os.path.join(workdir, "metrics.jsonl"), None
    while process.poll() is None:
        if first is None and os.path.exists(metrics) and '"loss"' in open(metrics).read():
            first = time.perf_counter() - began
        time.sleep(0.05)
    assert process.returncode == 0, process.stderr.read()[-3000:]
    with open(os.path.join(workdir, "results.json")) as f:
        return first if first is not None else time.perf_counter() - began, json.load(f)["compile"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--out")
    args = parser.parse_args()
    results = {"host": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "runs": {}}
    for name in args.workloads:
        with tempfile.TemporaryDirectory() as root:
            cache = os.path.join(root, "compilation_cache")
            runs = {}
            for start in ("first", "second"):
                seconds, compile_report = start_to_first_step(os.path.join(root, start), cache, WORKLOADS[name])
                runs[start] = {"seconds_to_first_step": seconds,
                               "compile_seconds": compile_report["compile_seconds"],
                               "from_compilation_cache": compile_report["from_compilation_cache"]}
                print(f"{name}, {start} start: first step after {seconds:.1f} s; train step "
                      f"{'loaded from the cache' if compile_report['from_compilation_cache'] else 'compiled'} in "
                      f"{compile_report['compile_seconds']:.1f} s", flush=True)
            results["runs"][name] = runs
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

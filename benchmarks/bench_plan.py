"""Right-sizing the recipes for TPU pods from this CPU machine: each recipe's own train step compiled
for TPU topologies (`main --compile_only --topology`, libtpu, no TPU) under each remat policy, and
the compile time of scanned vs unrolled blocks. Every compile runs in a fresh process.

Usage:
  python benchmarks/bench_plan.py --recipes georsclip_rs5m_vith14 --topologies v5p:4x4x4,v5e:4x4 \\
      [--remat none,dots,full] [--batch-per-chip 32,64] [--scan True] [--out plans.json]
  python benchmarks/bench_plan.py --compare-scan --recipes georsclip_rs5m_vith14 --topologies v5p:4x4x4
  python benchmarks/bench_plan.py --xla-counts --recipes georsclip_rs5m_vitb32 --topologies v5e:2x2 \\
      --batch-per-chip 8 --scan True
(--xla-counts: XLA's own FLOP count of the same per-chip work compiled for the TPU and for as many CPU
devices, on a matmul-bound recipe; the plan's count is the same on both by construction.)
Prints a Markdown table (HBM per chip, FLOPs per chip per step, compile seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2**30


def chips(topology: str) -> int:
    import math

    return math.prod(int(d) for d in topology.split(":")[1].split("x"))


def plan(recipe: str, topology: str, overrides: list[str], on_cpu: bool = False) -> dict:
    """The recipe's plan for `topology`, or (`on_cpu`) compiled for as many CPU devices as it has chips."""
    where = [] if on_cpu else ["--topology", topology]
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={chips(topology)}"} if on_cpu else None
    with tempfile.TemporaryDirectory() as workdir:
        result = subprocess.run([sys.executable, "-m", "georsclip_jax.main", "--config",
                                 os.path.join(ROOT, "configs", f"{recipe}.py"), "--workdir", workdir, "--compile_only",
                                 *where, *overrides], capture_output=True, text=True, cwd=ROOT, env=env)
        if result.returncode not in (0, 1):
            raise RuntimeError(result.stderr[-2000:])
        name = "local" if on_cpu else topology.replace(":", "_")
        with open(os.path.join(workdir, f"plan-{name}.json")) as f:
            report = json.load(f)
    report.update(recipe=recipe, overrides=overrides)
    print(json.dumps({k: report[k] for k in ("recipe", "topology", "remat", "scan_layers", "batch_per_device",
                                             "hbm_total_bytes", "fits", "compile_seconds")}), flush=True)
    return report


def row(r: dict) -> str:
    gib = lambda b: f"{b / GIB:.2f}"
    memory = (f"{gib(r.get('argument_size_in_bytes', 0))} | {gib(r.get('temp_size_in_bytes', 0))} | "
              f"{gib(r['hbm_total_bytes'])}" if "compile_error" not in r else f"— | — | > {gib(r['hbm_total_bytes'])}")
    verdict = {True: "fits", False: "**no**", None: "?"}[r["fits"]]
    return (f"| {r['recipe']} | {r['topology']} ({r['devices']} chips, {r['processes']} hosts) | "
            f"{r['batch_per_device']:g} | {r['remat']} | {'scan' if r['scan_layers'] else 'unrolled'} | {memory} | "
            f"{gib(r['hbm_capacity_bytes'])} {verdict} | {r['flops_per_step_per_device'] / 1e12:.2f} | "
            f"{r['compile_seconds']:.0f} |")


HEADER = ("| recipe | topology | batch/chip | remat | blocks | arguments GiB | temporaries GiB | total GiB/chip | "
          "HBM GiB | TFLOP/chip/step | compile s |\n|---|---|---:|---|---|---:|---:|---:|---|---:|---:|")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", required=True, help="comma-separated configs/<name>.py")
    parser.add_argument("--topologies", required=True)
    parser.add_argument("--remat", default="none,dots,full")
    parser.add_argument("--batch-per-chip", default="", help="comma-separated; default: the recipe's global batch")
    parser.add_argument("--scan", default="", help="True/False to override the recipe's model.scan_layers")
    parser.add_argument("--compare-scan", action="store_true", help="unrolled vs scanned compile time, same run")
    parser.add_argument("--xla-counts", action="store_true", help="XLA's FLOP count, TPU vs the same work on CPU")
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = []
    for recipe in args.recipes.split(","):
        for topology in args.topologies.split(","):
            batches = [int(b) for b in args.batch_per_chip.split(",") if b] or [None]
            for batch in batches:
                common = [f"--config.train.global_batch_size={batch * chips(topology)}"] if batch else []
                if args.compare_scan:
                    for scan in ("False", "True"):
                        rows.append(plan(recipe, topology, [*common, f"--config.model.scan_layers={scan}"]))
                    continue
                if args.xla_counts:
                    scan = [f"--config.model.scan_layers={args.scan}"] if args.scan else []
                    tpu, cpu = (plan(recipe, topology, [*common, *scan], on_cpu) for on_cpu in (False, True))
                    print(f"{recipe} on {topology} vs {tpu['devices']} CPU devices: XLA's FLOPs per chip "
                          f"{tpu['xla_flops_per_step_per_device'] / 1e12:.3f} / {cpu['xla_flops_per_step_per_device'] / 1e12:.3f}"
                          f" TFLOP = {tpu['xla_flops_per_step_per_device'] / cpu['xla_flops_per_step_per_device']:.3f}; "
                          f"the plan's: {tpu['flops_per_step_per_device'] / 1e12:.3f} / "
                          f"{cpu['flops_per_step_per_device'] / 1e12:.3f} TFLOP")
                    rows.append(tpu)
                    continue
                for remat in args.remat.split(","):
                    scan = [f"--config.model.scan_layers={args.scan}"] if args.scan else []
                    rows.append(plan(recipe, topology, [*common, f"--config.model.remat={remat}", *scan]))
    print(HEADER)
    print("\n".join(row(r) for r in rows))
    if args.compare_scan:
        for unrolled, scanned in zip(rows[::2], rows[1::2]):
            print(f"{unrolled['recipe']} on {unrolled['topology']}: compile scanned / unrolled = "
                  f"{scanned['compile_seconds']:.0f} s / {unrolled['compile_seconds']:.0f} s = "
                  f"{scanned['compile_seconds'] / unrolled['compile_seconds']:.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

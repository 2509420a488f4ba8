"""Conversion cost and encode_image throughput, ours vs open_clip, side by side in one run.

1. Conversion: a random-init open_clip checkpoint (ViT-L-14 by default) saved with torch.save is
   loaded by open_clip (`create_model(name, pretrained=path)`) and by us (`gj.create_model`), each in
   a fresh subprocess so that peak RSS is its own. Reported: seconds and peak RSS.
2. Throughput: `encode_image` images/s for the same random weights (ViT-B-32 by default), our jitted
   float32 forward vs open_clip's eager torch forward under no_grad, interleaved repeats, median.

Usage: python benchmarks/bench_foundation.py [--convert-model ViT-L-14] [--encode-model ViT-B-32]
       [--batch 32] [--repeats 5] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

LOADERS = {
    "open_clip": "import open_clip; m = open_clip.create_model({name!r}, pretrained={path!r})",
    "georsclip_jax": "import georsclip_jax as gj; m = gj.create_model({name!r}, {path!r}); "
                     "import jax; jax.block_until_ready(m.visual.proj[...])",
}


def measure_load(loader: str, name: str, path: str) -> dict:
    code = (
        "import resource, time, json; t = time.perf_counter(); "
        + LOADERS[loader].format(name=name, path=path)
        + "; print(json.dumps({'seconds': time.perf_counter() - t, "
        "'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_conversion(name: str) -> dict:
    import open_clip
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.pt")
        torch.save(open_clip.create_model(name).state_dict(), path)
        size_gb = os.path.getsize(path) / 2**30
        results = {loader: measure_load(loader, name, path) for loader in LOADERS}
    return {"model": name, "checkpoint_gb": size_gb, **results}


def bench_encode(name: str, batch: int, repeats: int) -> dict:
    import jax
    import numpy as np
    import open_clip
    import torch
    from flax import nnx

    import georsclip_jax as gj

    torch.manual_seed(0)
    ref = open_clip.create_model(name).eval()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(ref.state_dict(), os.path.join(tmp, "w.pt"))
        ours = gj.create_model(name, os.path.join(tmp, "w.pt"))
    size = ours.config.vision.image_size
    pixels = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype(np.float32)
    pixels_torch = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
    graphdef, state = nnx.split(ours)
    encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode_image(x, normalize=True))
    device_pixels = jax.device_put(pixels)
    compile_start = time.perf_counter()
    encode(state, device_pixels).block_until_ready()
    compile_s = time.perf_counter() - compile_start

    def run_ours():
        encode(state, device_pixels).block_until_ready()

    def run_torch():
        with torch.no_grad():
            ref.encode_image(pixels_torch, normalize=True)

    run_torch()
    times = {"georsclip_jax": [], "open_clip": []}
    for _ in range(repeats):  # interleaved, so drifts in machine load hit both
        for label, fn in (("georsclip_jax", run_ours), ("open_clip", run_torch)):
            t = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t)
    ips = {k: batch / statistics.median(v) for k, v in times.items()}
    with torch.no_grad():
        diff = float(np.abs(np.asarray(encode(state, device_pixels)) - ref.encode_image(pixels_torch, normalize=True).numpy()).max())
    return {"model": name, "batch": batch, "repeats": repeats, "images_per_s": ips,
            "ratio_ours_over_open_clip": ips["georsclip_jax"] / ips["open_clip"], "jit_compile_s": compile_s,
            "max_abs_diff_normalized": diff, "torch_threads": torch.get_num_threads()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--convert-model", default="ViT-L-14")
    p.add_argument("--encode-model", default="ViT-B-32")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].platform}",
        "conversion": bench_conversion(args.convert_model),
        "encode_image": bench_encode(args.encode_model, args.batch, args.repeats),
    }
    conv, enc = results["conversion"], results["encode_image"]
    print(f"\nconversion of a random {conv['model']} checkpoint ({conv['checkpoint_gb']:.2f} GiB .pt)")
    print(f"  {'loader':<15}{'seconds':>10}{'peak RSS GiB':>15}")
    for loader in LOADERS:
        print(f"  {loader:<15}{conv[loader]['seconds']:>10.1f}{conv[loader]['peak_rss_gb']:>15.2f}")
    print(f"encode_image {enc['model']} batch {enc['batch']} (float32, median of {enc['repeats']})")
    for label, ips in enc["images_per_s"].items():
        print(f"  {label:<15}{ips:>10.1f} images/s")
    print(f"  ratio ours/open_clip: {enc['ratio_ours_over_open_clip']:.2f}x; max |diff| {enc['max_abs_diff_normalized']:.1e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

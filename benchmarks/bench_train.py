"""Training-step throughput, ours vs open_clip (PyTorch), same model config, batch and precision,
side by side in one run.

Ours: the jitted train step (global-view CLIP loss, AdamW, clamp) over all local devices (data
parallel). open_clip: its model + ClipLoss + torch AdamW, `loss.backward()`, `optimizer.step()`,
with autocast for bf16. Random images/tokens, same for both. Reports samples/s per implementation,
the ratio, and (ours, on an accelerator with a known bf16 peak) MFU from the compiled step's FLOPs.

Usage: python benchmarks/bench_train.py [--model ViT-B-32] [--batch 16] [--dtype float32|bfloat16]
       [--steps 5] [--repeats 3] [--out results.json]
CPU: small configs; GPU: e.g. --model ViT-B-32 --batch 256 --dtype bfloat16, ViT-B-16, ViT-L-14.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np


def random_batch(batch: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((batch, 77), np.int32)
    tokens[:, 0], tokens[:, 1:21], tokens[:, 21] = 49406, rng.integers(1, 49000, (batch, 20)), 49407
    return rng.normal(size=(batch, size, size, 3)).astype(np.float32), tokens


def ours(model_name: str, batch: int, dtype: str):
    import jax

    from georsclip_jax import sharding
    from georsclip_jax.train.config import base_config
    from georsclip_jax.train.program import build_model, compile_step, initial_state, make_program

    config = base_config()  # the trainer's own program: model born sharded, AdamW, global-view loss
    config.model.name, config.model.dtype = model_name, dtype
    config.train.global_batch_size, config.data.image_dtype = batch, "float32"
    mesh = sharding.make_mesh(dict(config.mesh))
    model = build_model(config, mesh)
    program, params, frozen = make_program(config, mesh, model, 1000)
    state = initial_state(program, params)
    images, tokens = random_batch(batch, model.preprocess.image_size)
    data = jax.device_put({"image": images, "tokens": tokens, "mask": np.ones(batch, bool)}, program.batch_sharding)
    compiled, report = compile_step(program, state, frozen, data)

    def step():
        nonlocal state
        state, metrics = compiled(state, frozen, data)
        jax.block_until_ready(metrics["loss"])
    return step, report


def theirs(model_name: str, batch: int, dtype: str):
    import contextlib

    import open_clip
    import torch
    from open_clip.loss import ClipLoss

    model = open_clip.create_model(model_name)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)
    loss_fn = ClipLoss()
    images, tokens = random_batch(batch, model.visual.image_size[0])
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    tokens = torch.from_numpy(tokens).long()
    autocast = (lambda: torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)) \
        if dtype == "bfloat16" else contextlib.nullcontext
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    images, tokens = images.to(device), tokens.to(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            out = model(images, tokens)
            loss = loss_fn(out[0], out[1], out[2])
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        if device == "cuda":
            torch.cuda.synchronize()
    return step


def timed(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    import jax

    from georsclip_jax.train.loop import PEAK_BF16_FLOPS

    our_step, report = ours(args.model, args.batch, args.dtype)
    their_step = theirs(args.model, args.batch, args.dtype)
    our_step(), their_step()  # warm up
    times = {"ours": [], "open_clip": []}
    for _ in range(args.repeats):
        times["open_clip"].append(timed(their_step, args.steps))
        times["ours"].append(timed(our_step, args.steps))
    seconds = {k: statistics.median(v) for k, v in times.items()}
    kind = jax.devices()[0].device_kind
    peak = next((f for name, f in PEAK_BF16_FLOPS.items() if name in kind), None) if args.dtype == "bfloat16" else None
    results = {"model": args.model, "batch": args.batch, "dtype": args.dtype, "device": kind,
               "devices": jax.device_count(), "host": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "ours_samples_s": args.batch / seconds["ours"],
               "open_clip_samples_s": args.batch / seconds["open_clip"],
               "ratio": seconds["open_clip"] / seconds["ours"], "compile": report,
               "mfu": report["flops_per_step_per_device"] / seconds["ours"] / peak if peak else None}
    print(f"{args.model} batch {args.batch} {args.dtype} on {kind}: ours {results['ours_samples_s']:.1f} samples/s, "
          f"open_clip {results['open_clip_samples_s']:.1f} samples/s, ratio {results['ratio']:.2f}x"
          + (f", MFU {results['mfu']:.1%}" if results["mfu"] else ""))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

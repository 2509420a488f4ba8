"""Evaluation throughput, ours vs references, side by side in one run on this machine.

1. Image embedding (decode + eval preprocessing + encoder), ViT-B-32 random init by default:
   our Encoders (host threads + jitted, batch-sharded encoder) vs open_clip in PyTorch (its
   preprocessing, eager forward under no_grad), same JPEG files, same batch size.
2. Retrieval metrics at 10k images x 50k captions (random unit vectors, D=512): our chunked,
   sharded top-k kernel vs torch (full score matrix + torch.topk, as clip_benchmark does) and,
   with --numpy, NumPy's full argsort.
Interleaved repeats, median reported.

Usage: python benchmarks/bench_eval.py [--model ViT-B-32] [--images 256] [--batch 64]
       [--gallery 10000] [--captions 50000] [--repeats 3] [--numpy] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np


def write_images(folder: str, n: int) -> list[str]:
    from georsclip_jax.data.synthetic import make_sample

    paths = []
    for i in range(n):
        path = os.path.join(folder, f"{i:05d}.jpg")
        make_sample(0, i, (256, 256))[0].save(path, quality=90)
        paths.append(path)
    return paths


def bench_embedding(model_name: str, paths: list[str], batch: int, repeats: int) -> dict:
    import open_clip
    import torch
    from PIL import Image

    import georsclip_jax as gj
    from georsclip_jax.evals.encoders import Encoders, path_loader

    reference = open_clip.create_model(model_name).eval()
    preprocess = open_clip.image_transform(224, is_train=False)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(reference.state_dict(), os.path.join(tmp, "m.pt"))
        encoders = Encoders(gj.create_model(model_name, os.path.join(tmp, "m.pt"), act="gelu"), batch)
    loaders = [path_loader(p) for p in paths]

    def ours():
        return encoders.images(loaders)

    def theirs():
        out = []
        with torch.no_grad():
            for start in range(0, len(paths), batch):
                x = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[start:start + batch]])
                out.append(torch.nn.functional.normalize(reference.encode_image(x), dim=-1).numpy())
        return np.concatenate(out)

    ours()  # compile
    max_diff = float(np.abs(ours() - theirs()).max())
    times = {"ours": [], "open_clip": []}
    for _ in range(repeats):
        for name, fn in (("open_clip", theirs), ("ours", ours)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    row = {k: len(paths) / statistics.median(v) for k, v in times.items()}
    return {"model": model_name, "images": len(paths), "ours_img_s": row["ours"],
            "open_clip_img_s": row["open_clip"], "ratio": row["ours"] / row["open_clip"],
            "max_abs_diff": max_diff}


def bench_retrieval(gallery: int, captions: int, repeats: int, with_numpy: bool) -> dict:
    import torch

    from georsclip_jax.evals.retrieval import retrieval_metrics

    rng = np.random.default_rng(0)
    unit = lambda n: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(rng.normal(size=(n, 512)).astype(np.float32))
    images, texts = unit(gallery), unit(captions)
    owner = rng.integers(0, gallery, captions)

    def torch_topk():
        scores = torch.from_numpy(texts) @ torch.from_numpy(images).T
        return scores.topk(10, dim=1).indices, scores.T.topk(10, dim=1).indices

    def numpy_argsort():
        scores = texts @ images.T
        return np.argsort(-scores, axis=1)[:, :10], np.argsort(-scores.T, axis=1)[:, :10]

    runs = {"ours": lambda: retrieval_metrics(texts, images, owner, chunk=2048), "torch_topk": torch_topk}
    if with_numpy:
        runs["numpy_argsort"] = numpy_argsort
    runs["ours"]()  # compile
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    out = {"gallery": gallery, "captions": captions, **{f"{k}_s": statistics.median(v) for k, v in times.items()}}
    out["ratio_vs_torch"] = out["torch_topk_s"] / out["ours_s"]
    if with_numpy:
        out["ratio_vs_numpy"] = out["numpy_argsort_s"] / out["ours_s"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--gallery", type=int, default=10_000)
    parser.add_argument("--captions", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--numpy", action="store_true", help="also time NumPy's full argsort (slow)")
    parser.add_argument("--out")
    args = parser.parse_args()
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    results = {"host": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "devices": jax.device_count()}
    with tempfile.TemporaryDirectory() as tmp:
        results["embedding"] = bench_embedding(args.model, write_images(tmp, args.images), args.batch, args.repeats)
    e = results["embedding"]
    print(f"image embedding {e['model']}: ours {e['ours_img_s']:.1f} img/s, open_clip {e['open_clip_img_s']:.1f} img/s, "
          f"ratio {e['ratio']:.2f}x (max |diff| {e['max_abs_diff']:.1e})", flush=True)
    results["retrieval"] = r = bench_retrieval(args.gallery, args.captions, args.repeats, args.numpy)
    print(f"retrieval {r['gallery']} x {r['captions']}: ours {r['ours_s']:.2f} s, torch full matrix + topk "
          f"{r['torch_topk_s']:.2f} s (ratio {r['ratio_vs_torch']:.2f}x)"
          + (f", numpy argsort {r['numpy_argsort_s']:.1f} s (ratio {r['ratio_vs_numpy']:.1f}x)" if args.numpy else ""))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

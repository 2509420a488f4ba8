"""Candidates for the fast train-augmentation path: time per stage and quality, one core, real photos.

Every candidate gets the same draws (crop box, flip, angle; `transforms.draw_augmentation`) on the
same JPEGs (`tests/photos.py`: scikit-image photo mosaics, q90, sides log-uniform in 256-2048 px) and
produces the 224 px uint8 image GeoRSCLIP trains on. Quality is against the exact path (torchvision's
pixels: full decode, bicubic antialiased resize, PIL flip and nearest rotation): mean |difference| in
8-bit levels and PSNR over all pixels. Stages are timed separately (decode / resize / flip + rotate),
so the table is also the profile of where the chosen path's time goes.

Usage: python benchmarks/bench_augment.py [--images 256] [--repeats 3] [--out results.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))  # photos.py
from photos import photo_sample  # noqa: E402
from georsclip_jax.data.synthetic import jpeg_bytes
from georsclip_jax.transforms import (AugmentDraw, apply_augmentation, draw_augmentation, jpeg_draft_factor, resized_crop,
                                     to_rgb)

SIZE = 224


def _pil_flip_rotate(img: Image.Image, draw: AugmentDraw) -> np.ndarray:
    img = img.transpose(Image.FLIP_LEFT_RIGHT) if draw.flip else img
    return np.asarray(img.rotate(draw.angle, resample=Image.NEAREST, fillcolor=(0, 0, 0)))


def _cv2_flip_rotate(pixels: np.ndarray, draw: AugmentDraw) -> np.ndarray:
    pixels = np.ascontiguousarray(pixels[:, ::-1]) if draw.flip else pixels
    matrix = cv2.getRotationMatrix2D((SIZE / 2 - 0.5, SIZE / 2 - 0.5), draw.angle, 1.0)
    return cv2.warpAffine(pixels, matrix, (SIZE, SIZE), flags=cv2.INTER_NEAREST)


def _decode(img: Image.Image) -> Image.Image:
    img.load()  # PIL decodes lazily: force it here so the decode stage is timed as such
    return to_rgb(img)


def _box(draw: AugmentDraw, factor: int = 1) -> tuple[float, ...]:
    return tuple(v / factor for v in (draw.left, draw.top, draw.left + draw.width, draw.top + draw.height))


def pil_draft(resample, request_ceil: bool = False):
    """DCT-scaled decode by PIL's draft, then PIL resampling of the box (images too small to draft:
    the exact crop + resize); `request_ceil` is the request the first jpeg_draft made (PIL then often
    picks a smaller scale) with its box mapping by the rounded-up size ratio."""

    def run(data: bytes, draw: AugmentDraw, clock):
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        factor = jpeg_draft_factor(img, draw, SIZE)
        if factor > 1:
            img.draft("RGB", (-(-width // factor), -(-height // factor)) if request_ceil
                      else (width // factor, height // factor))
        img = _decode(img)
        sx, sy = (img.width / width, img.height / height) if request_ceil else (1 / factor, 1 / factor)
        box = (draw.left * sx, draw.top * sy, (draw.left + draw.width) * sx, (draw.top + draw.height) * sy)
        clock("decode")
        if factor == 1:
            img = resized_crop(img, draw.top, draw.left, draw.height, draw.width, SIZE)
        else:
            img = img.resize((SIZE, SIZE), resample, box=box)
        clock("resize")
        return _pil_flip_rotate(img, draw)

    return run


def cv2_reduced(data: bytes, draw: AugmentDraw, clock):
    """OpenCV's DCT-scaled decode (IMREAD_REDUCED_COLOR_k), integer crop, INTER_AREA, warpAffine."""
    img = Image.open(io.BytesIO(data))
    factor = jpeg_draft_factor(img, draw, SIZE)
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
    pixels = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), flag), cv2.COLOR_BGR2RGB)
    clock("decode")
    left, top, right, bottom = (int(round(v)) for v in _box(draw, factor))
    pixels = cv2.resize(pixels[top:bottom, left:right], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    clock("resize")
    return _cv2_flip_rotate(pixels, draw)


def chosen(data: bytes, draw: AugmentDraw, clock):
    """What the pipeline runs (`jpeg_draft=True`): transforms.apply_augmentation, timed as a whole."""
    out = np.asarray(apply_augmentation(Image.open(io.BytesIO(data)), draw, SIZE, jpeg_draft=True))
    clock("total")
    return out


def exact(data: bytes, draw: AugmentDraw, clock):
    img = _decode(Image.open(io.BytesIO(data)))
    clock("decode")
    img = resized_crop(img, draw.top, draw.left, draw.height, draw.width, SIZE)
    clock("resize")
    return _pil_flip_rotate(img, draw)


CANDIDATES = {
    "exact (full decode, PIL bicubic)": exact,
    "jpeg_draft as first written (ceil request)": pil_draft(Image.BICUBIC, request_ceil=True),
    "PIL draft + PIL bicubic box (chosen)": pil_draft(Image.BICUBIC),
    "PIL draft + PIL bilinear box": pil_draft(Image.BILINEAR),
    "cv2 reduced decode + INTER_AREA + warpAffine": cv2_reduced,
    "apply_augmentation(jpeg_draft=True)": chosen,
}


def run_candidate(fn, jpegs, draws) -> tuple[dict, list[np.ndarray]]:
    stages, outputs = {}, []
    for data, draw in zip(jpegs, draws):
        last = [time.perf_counter()]

        def clock(stage):
            now = time.perf_counter()
            stages[stage] = stages.get(stage, 0.0) + now - last[0]
            last[0] = now

        outputs.append(fn(data, draw, clock))
        clock("flip+rotate")
    return {k: 1e3 * v / len(jpegs) for k, v in stages.items() if v > 0}, outputs


def quality(outputs, references) -> dict:
    """Mean |difference| and PSNR over all pixels, and the worst single image's PSNR (inf: identical)."""
    diff = np.stack(outputs).astype(np.float64) - np.stack(references)
    per_image = np.mean(diff ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        psnr = 10 * np.log10(255.0 ** 2 / np.array([np.mean(per_image), np.max(per_image)]))
    return {"mean_abs_diff": float(np.mean(np.abs(diff))), "psnr_db": float(psnr[0]), "worst_psnr_db": float(psnr[1])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    jpegs = [jpeg_bytes(photo_sample(0, i)) for i in range(args.images)]
    sizes = [Image.open(io.BytesIO(d)).size for d in jpegs]
    draws = [draw_augmentation(np.random.default_rng([1, i]), w, h, hflip=True, rotate=True)
             for i, (w, h) in enumerate(sizes)]
    timings = {name: [] for name in CANDIDATES}
    outputs = {}
    for _ in range(args.repeats):  # interleaved: every candidate once per round
        for name, fn in CANDIDATES.items():
            stages, outputs[name] = run_candidate(fn, jpegs, draws)
            timings[name].append(stages)
    reference = [o.astype(np.float64) for o in outputs["exact (full decode, PIL bicubic)"]]
    exact_ms = statistics.median(sum(t.values()) for t in timings["exact (full decode, PIL bicubic)"])
    rows = {}
    print(f"{'candidate':46s} {'ms/img':>7s} {'speed-up':>8s} {'mean|d|':>7s} {'PSNR':>6s} {'worst':>6s}  stages (ms)")
    for name in CANDIDATES:
        stages = {k: statistics.median(t.get(k, 0.0) for t in timings[name]) for k in timings[name][0]}
        total = statistics.median(sum(t.values()) for t in timings[name])
        rows[name] = {"ms_per_image": total, "speedup_vs_exact": exact_ms / total, "stages_ms": stages,
                      **quality(outputs[name], reference)}
        r = rows[name]
        print(f"{name:46s} {total:7.2f} {r['speedup_vs_exact']:7.2f}x {r['mean_abs_diff']:7.3f} {r['psnr_db']:6.1f} {r['worst_psnr_db']:6.1f}  "
              + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"images": args.images, "mean_megapixels": float(np.mean([w * h for w, h in sizes]) / 1e6),
                       "candidates": rows}, f, indent=1)


if __name__ == "__main__":
    main()

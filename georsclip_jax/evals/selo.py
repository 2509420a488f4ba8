"""Semantic localization (SeLo) on AIR-SLT, exactly as GeoRSCLIP runs it (eval spec §4).

Per sample: multi-scale sliding-window crops (256/512/768, two half-step-offset passes per scale,
starts clamped to the border, unique boxes), each resized to 256 with OpenCV bicubic and put through
a JPEG round trip (quality 95) before the CLIP preprocessing; the per-pixel mean of crop-caption
cosine similarities is min-max scaled, truncated to uint8, median-blurred (251) and JPEG round-
tripped; then Rsu, Ras, Rda and Rmi from SLM.py. Post-processing runs on host with the libraries
the reference uses (OpenCV, SciPy, scikit-image); only the encoders run in JAX.
"""

from __future__ import annotations

import io
import json
import logging
import os

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import measure

from georsclip_jax.evals.encoders import Encoders

log = logging.getLogger(__name__)

SCALES = (256, 512, 768)
CROP_SIZE = 256
JPEG_QUALITY = 95
MEDIAN_KERNEL = 251
RSU_BETA, EPS = 0.707, 1e-7
RADIUS_EXPAND = 1.5
BOX_FILTER_REPEATS, BOX_FILTER_SIZE = 5, 50
MAX_FILTER_SIZE = 1000
CENTRE_THRESHOLD = 0.5
RAS_BETA = 3.0
RDA_ETA = 0.5
RMI_WEIGHTS = (0.4, 0.35, 0.25)
METRICS = ("Rsu", "Rda", "Ras", "Rmi")


# --- crops and heat map --------------------------------------------------------------------------

def window_starts(size: int, window: int, offset: int) -> list[int]:
    starts, start = [], offset
    while start < size:
        starts.append(size - window if start + window >= size else start)
        start += window
    return starts


def crop_boxes(height: int, width: int, scales=SCALES) -> list[tuple[int, int, int, int]]:
    """Unique (r0, r1, c0, c1) over scales and both passes (offset 0 and s/2), sorted."""
    boxes = set()
    for s in scales:
        if s > height or s > width:
            continue
        for offset in (0, s // 2):
            for r in window_starts(height, s, offset):
                for c in window_starts(width, s, offset):
                    boxes.add((r, r + s, c, c + s))
    return sorted(boxes)


def jpeg_round_trip(array: np.ndarray, flags=cv2.IMREAD_UNCHANGED) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return cv2.imdecode(encoded, flags)


def crop_image(image_bgr: np.ndarray, box) -> Image.Image:
    """A crop as GeoRSCLIP feeds it to CLIP: cv2 bicubic to 256, JPEG q95 on disk, reopened by PIL."""
    r0, r1, c0, c1 = box
    crop = image_bgr[r0:r1, c0:c1]
    if crop.shape[0] != CROP_SIZE:
        crop = cv2.resize(crop, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_CUBIC)
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return Image.open(io.BytesIO(encoded.tobytes())).convert("RGB")


def heat_map(height: int, width: int, boxes, similarities) -> np.ndarray:
    total = np.zeros((height, width), np.float64)
    count = np.zeros((height, width), np.float64)
    for (r0, r1, c0, c1), sim in zip(boxes, similarities):
        total[r0:r1, c0:c1] += sim
        count[r0:r1, c0:c1] += 1
    return total / np.maximum(count, 1)


def probability_map(heat: np.ndarray) -> np.ndarray:
    """Min-max scaled heat -> uint8 (truncated) -> median blur -> JPEG round trip -> float64 [0, 1]."""
    heat = heat - heat.min()
    peak = heat.max()
    heat = heat / peak if peak > 0 else heat
    blurred = cv2.medianBlur((heat * 255).astype(np.uint8), MEDIAN_KERNEL)
    return jpeg_round_trip(blurred, cv2.IMREAD_GRAYSCALE) / 255.0


# --- metrics (SLM.py) ----------------------------------------------------------------------------

def region_mask(shape, polygons) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.asarray(p).astype(np.int32) for p in polygons], 1)
    return mask


def regions(polygons) -> list[tuple[int, int, int]]:
    """(cx, cy, r) per polygon: truncated vertex mean and 1.5x the mean vertex distance, truncated."""
    out = []
    for polygon in polygons:
        points = np.asarray(polygon, np.float64)
        cx, cy = int(points[:, 0].mean()), int(points[:, 1].mean())
        radius = int(RADIUS_EXPAND * np.mean(np.linalg.norm(points - (cx, cy), axis=1)))
        out.append((cx, cy, radius))
    return out


def attention_centres(prob: np.ndarray) -> list[tuple[int, int]]:
    """(x, y) local maxima of the smoothed map with probability >= 0.5, most probable first."""
    smooth = (prob * 255).astype(np.uint8)
    for _ in range(BOX_FILTER_REPEATS):
        smooth = cv2.boxFilter(smooth, -1, (BOX_FILTER_SIZE, BOX_FILTER_SIZE))
    peaks = (smooth == ndimage.maximum_filter(smooth, size=MAX_FILTER_SIZE)) & (smooth > 0)
    centres = [(int(p.centroid[1]), int(p.centroid[0]))
               for p in measure.regionprops(measure.label(peaks, connectivity=2))]
    centres.sort(key=lambda c: prob[c[1], c[0]], reverse=True)
    return [c for c in centres if prob[c[1], c[0]] >= CENTRE_THRESHOLD]


def rsu(prob: np.ndarray, mask: np.ndarray) -> float:
    inside, total, area = float((prob * mask).sum()), float(prob.sum()), float(mask.sum())
    ratio = inside / (total - inside + EPS)
    background = (prob.size - area) / area
    return float(1 - np.exp(-RSU_BETA * ratio * background))


def _near(centres, cx, cy, radius):
    return [c for c in centres if np.hypot(c[0] - cx, c[1] - cy) <= radius]


def ras(centres, gt_regions) -> float:
    if not centres:
        return 1.0
    offsets = []
    for cx, cy, radius in gt_regions:
        near = [np.hypot(x - cx, y - cy) for x, y in _near(centres, cx, cy, radius)]
        offsets.append((np.mean(near) if near else radius) / radius)
    return float((np.exp(RAS_BETA * np.mean(offsets)) - 1) / (np.exp(RAS_BETA) - 1))


def rda(centres, gt_regions) -> float:
    if not centres:
        return 0.0
    values = []
    for cx, cy, radius in gt_regions:
        near = np.asarray(_near(centres, cx, cy, radius), np.float64)
        if len(near) <= 1:
            values.append(float(len(near)))
            continue
        spread = np.mean(np.linalg.norm(near - near.mean(0), axis=1)) / radius
        values.append(0.5 * (1 - spread) + float(np.exp(-RDA_ETA * (len(near) + 2))))
    return float(np.mean(values))


def selo_metrics(prob: np.ndarray, polygons) -> dict[str, float]:
    gt = regions(polygons)
    centres = attention_centres(prob)
    out = {"Rsu": rsu(prob, region_mask(prob.shape, polygons)), "Ras": ras(centres, gt), "Rda": rda(centres, gt)}
    w_su, w_as, w_da = RMI_WEIGHTS
    out["Rmi"] = w_su * out["Rsu"] + w_as * (1 - out["Ras"]) + w_da * out["Rda"]
    return out


# --- the task ------------------------------------------------------------------------------------

def save_overlay(path: str, image_bgr: np.ndarray, prob: np.ndarray, polygons, caption: str, metrics: dict,
                 max_side: int = 1024) -> None:
    """The scene with the probability map over it (JET, 30 %) and a colour bar, the ground-truth
    polygons in white, the query as title and the sample's Rsu / Ras / Rda / Rmi beneath it."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    scale = min(1.0, max_side / max(image_bgr.shape[:2]))
    small = lambda a: cv2.resize(a, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else a
    figure = Figure(figsize=(7, 6.4), layout="constrained")
    axes = figure.subplots()
    axes.imshow(small(image_bgr)[..., ::-1])
    axes.imshow(small(prob), cmap="jet", alpha=0.3, vmin=0, vmax=1)
    for polygon in polygons:
        points = np.asarray(polygon, np.float64) * scale
        axes.fill(points[:, 0], points[:, 1], fill=False, edgecolor="white", linewidth=2)
    figure.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=axes, shrink=0.8, label="probability")
    axes.set_title(f"query: {caption}", fontsize=10, wrap=True)
    axes.set_xlabel("   ".join(f"{name} {metrics[name]:.3f}" for name in METRICS))
    axes.set_xticks([])
    axes.set_yticks([])
    figure.savefig(path, dpi=100)


def write_index(out_dir: str, samples: list[dict]) -> None:
    """index.html: every sample's query, metrics and overlay."""
    from html import escape

    rows = "\n".join(
        f"<tr><td>{i}</td><td>{escape(s['jpg_name'])}</td><td>{escape(s['caption'])}</td>"
        + "".join(f"<td>{s[name]:.4f}</td>" for name in METRICS)
        + f'<td><a href="selo_{i:03d}.png"><img src="selo_{i:03d}.png" width="320"></a></td></tr>'
        for i, s in enumerate(samples))
    header = "".join(f"<th>{name}</th>" for name in METRICS)
    with open(os.path.join(out_dir, "index.html"), "w") as f:
        f.write(f"<!doctype html><meta charset='utf-8'><title>SeLo on AIR-SLT</title>\n<table border=1>"
                f"<tr><th>#</th><th>image</th><th>query</th>{header}<th>overlay</th></tr>\n{rows}\n</table>\n")


def read_annotations(root: str) -> list[dict]:
    """AIR-SLT's `annotations/anno.json`: a list of {"caption", "jpg_name", "points": [polygon, ...]},
    each polygon a list of [x, y]; one line naming the file (and the sample) when it is not that."""
    anno_path = os.path.join(root, "annotations", "anno.json")
    if not os.path.isfile(anno_path):
        raise FileNotFoundError(f"AIR-SLT annotations not found: {anno_path}")
    expected = "expected AIR-SLT's query / polygon annotations"
    with open(anno_path, "rb") as f:
        text = f.read()
    try:
        samples = json.loads(text)
    except ValueError as e:
        what = "is empty (0 bytes)" if not text.strip() else f"is not JSON ({e})"
        raise ValueError(f"{anno_path} {what}; {expected}") from None
    if not isinstance(samples, list):
        raise ValueError(f"{anno_path} holds a {type(samples).__name__}, not a list of samples; {expected}")
    if not samples:
        raise ValueError(f"{anno_path} lists no samples ({expected})")
    for index, sample in enumerate(samples):
        problem = sample_problem(sample)
        if problem:
            raise ValueError(f"{anno_path}: sample {index}: {problem}; {expected}")
    return samples


def sample_problem(sample) -> str | None:
    """What is malformed in one annotation, or None."""
    if not isinstance(sample, dict) or not all(k in sample for k in ("caption", "jpg_name", "points")):
        return 'not an object with "caption", "jpg_name" and "points"'
    polygons = sample["points"]
    valid_point = lambda p: (isinstance(p, (list, tuple)) and len(p) == 2
                             and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p))
    if not isinstance(polygons, list) or not all(isinstance(poly, list) and poly and all(map(valid_point, poly))
                                                 for poly in polygons):
        return '"points" is not a list of polygons of [x, y] points'
    return None


def unscorable(sample: dict, shape) -> str | None:
    """Why a well-formed sample cannot be scored (its metrics divide by the ground-truth area)."""
    if not sample["points"]:
        return "it has no polygons"
    if not region_mask(shape, sample["points"]).any():
        return "its polygons cover no pixel of the image"
    return None


def evaluate_selo(encoders: Encoders, root: str, params=None, out_dir: str | None = None) -> dict:
    """Per-sample and mean Rsu/Rda/Ras/Rmi over AIR-SLT (`annotations/anno.json`, `imgs/`)."""
    samples = read_annotations(root)
    per_sample, skipped, cache = [], [], {}
    for index, sample in enumerate(samples):
        path = os.path.join(root, "imgs", sample["jpg_name"])
        if path not in cache:  # crop embeddings are shared by the captions of one image
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"AIR-SLT image missing or unreadable: {path}")
            boxes = crop_boxes(*image.shape[:2])
            loaders = [lambda b=b: crop_image(image, b) for b in boxes]
            cache = {path: (image, boxes, encoders.images(loaders, params, desc=f"SeLo {sample['jpg_name']} crops"))}
        image, boxes, crops = cache[path]
        reason = unscorable(sample, image.shape[:2])
        if reason:
            skipped.append(f"sample {index} ({sample['jpg_name']}, {sample['caption']!r}): {reason}")
            log.warning("selo: skipped %s", skipped[-1])
            continue
        text = encoders.texts([sample["caption"]], params)[0]
        prob = probability_map(heat_map(*image.shape[:2], boxes, crops @ text))
        metrics = selo_metrics(prob, sample["points"])
        per_sample.append({"caption": sample["caption"], "jpg_name": sample["jpg_name"], **metrics})
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            save_overlay(os.path.join(out_dir, f"selo_{index:03d}.png"), image, prob, sample["points"],
                         sample["caption"], metrics)
    if out_dir:
        write_index(out_dir, per_sample)
    if not per_sample:
        raise ValueError(f"{os.path.join(root, 'annotations', 'anno.json')}: no sample can be scored "
                         f"({'; '.join(skipped)})")
    means = {name: float(np.mean([s[name] for s in per_sample])) for name in METRICS}
    return {"mean": means, "samples": per_sample, "skipped": skipped}

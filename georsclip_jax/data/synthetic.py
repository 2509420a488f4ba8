"""Synthetic remote-sensing data: procedurally drawn overhead scenes with templated captions.

Nothing can be downloaded here, yet the demo, the tests and the benchmarks need RS-like data in the
real formats. Each of the `CLASSES` is drawn from randomised primitives (colours, angles, textures,
layouts) so that no two images are alike, but classes stay visually distinct even at 32 px: a small
CLIP learns to separate them. Everything is a pure function of (seed, index).

Writers produce RS5M's own tar shards (`img_content` / `img_name` / `caption`) and an
`rs5m_test_data` tree as GeoRSCLIP's evaluation reads it (class folders, retrieval CSVs and
Karpathy JSON, AIR-SLT annotations).

    python -m georsclip_jax.data.synthetic --out DIR --train-samples 4096 --eval-per-class 20
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import tarfile

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

CLASSES = ("sea", "forest", "farmland", "residential", "highway", "river", "desert", "parking lot",
           "beach", "industrial")

DESCRIPTIONS = {
    "sea": ("the sea", "open sea water", "a calm sea", "deep blue sea water"),
    "forest": ("a forest", "a dense forest", "forest with many green trees", "a forest canopy"),
    "farmland": ("farmland", "farmland with crop strips", "striped farmland fields", "cultivated farmland"),
    "residential": ("a residential area", "residential blocks of houses", "a dense residential area",
                    "residential buildings and streets"),
    "highway": ("a highway", "a highway crossing the fields", "a straight highway with lanes", "a busy highway"),
    "river": ("a river", "a winding river", "a river through green land", "a meandering river"),
    "desert": ("a desert", "sand dunes in a desert", "a dry desert", "a desert with dunes"),
    "parking lot": ("a parking lot", "a parking lot with many cars", "cars parked in a parking lot",
                    "a large parking lot"),
    "beach": ("a beach", "a sandy beach by the sea", "a beach and the shoreline", "a long beach"),
    "industrial": ("an industrial area", "industrial buildings and storage tanks", "an industrial zone",
                   "factories in an industrial area"),
}
TEMPLATES = ("an aerial view of {}.", "a satellite image of {}.", "{} seen from above.",
             "a remote sensing image showing {}.", "overhead imagery of {}.", "a top-down photo of {}.",
             "high resolution satellite view of {}.", "this aerial photograph shows {}.")


def _jitter(rng, color, amount=18):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def _noise(rng, img: Image.Image, strength: float) -> Image.Image:
    arr = np.asarray(img, np.float32)
    arr += rng.normal(0.0, strength, arr.shape[:2] + (1,)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _rotated_stripes(rng, size, colors, period, angle) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    coord = xx * math.cos(angle) + yy * math.sin(angle)
    band = ((coord // period).astype(np.int64) % len(colors))
    palette = np.asarray(colors, np.uint8)
    return Image.fromarray(palette[band])


def draw_sea(rng, size):
    img = Image.new("RGB", (size, size), _jitter(rng, (25, 70, 130)))
    waves = _rotated_stripes(rng, size, [_jitter(rng, (30, 80, 140), 8), _jitter(rng, (22, 64, 122), 8)],
                             max(3, size // 20), rng.uniform(0, math.pi))
    return _noise(rng, Image.blend(img, waves, 0.4), 4)


def draw_forest(rng, size):
    img = Image.new("RGB", (size, size), _jitter(rng, (30, 70, 30)))
    d = ImageDraw.Draw(img)
    for _ in range(int(size * size / 60)):
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 60, size / 25)
        d.ellipse((x - r, y - r, x + r, y + r), fill=_jitter(rng, (40, 95, 40), 20))
    return _noise(rng, img.filter(ImageFilter.SMOOTH), 6)


def draw_farmland(rng, size):
    colors = [_jitter(rng, c, 20) for c in ((110, 150, 60), (190, 170, 90), (140, 110, 70), (90, 140, 50))]
    rng.shuffle(colors)
    return _noise(rng, _rotated_stripes(rng, size, colors, rng.uniform(size / 14, size / 6),
                                        rng.uniform(0, math.pi)), 5)


def draw_residential(rng, out_size):
    size = int(out_size * 1.45)
    img = Image.new("RGB", (size, size), _jitter(rng, (150, 150, 145)))
    d = ImageDraw.Draw(img)
    block = rng.uniform(size / 8, size / 5)
    roof = [(170, 70, 60), (120, 120, 130), (200, 190, 170)]
    for by in np.arange(0, size, block):
        for bx in np.arange(0, size, block):
            w = block * rng.uniform(0.5, 0.75)
            color = _jitter(rng, roof[rng.integers(len(roof))], 20)
            d.rectangle((bx + block * 0.12, by + block * 0.12, bx + block * 0.12 + w, by + block * 0.12 + w), fill=color)
    return _noise(rng, _rotate_crop(img, rng.uniform(0, 90), out_size), 5)


def _rotate_crop(img: Image.Image, angle: float, size: int) -> Image.Image:
    """Rotates a canvas drawn ~1.45x larger and keeps the centre, so no fill corners show."""
    big = img.rotate(angle, resample=Image.BILINEAR)
    offset = (big.width - size) // 2
    return big.crop((offset, offset, offset + size, offset + size))


def _field_background(rng, size):
    return Image.new("RGB", (size, size), _jitter(rng, (100, 140, 70), 25))


def draw_highway(rng, out_size):
    size = int(out_size * 1.45)
    img = _field_background(rng, size)
    d = ImageDraw.Draw(img)
    width = size * rng.uniform(0.18, 0.28)
    c = size / 2
    d.rectangle((c - width / 2, -size, c + width / 2, 2 * size), fill=_jitter(rng, (90, 90, 95), 10))
    for lane in (-0.25, 0.0, 0.25):
        x = c + lane * width
        for y in np.arange(0, size, size / 10):
            d.line((x, y, x, y + size / 20), fill=(235, 235, 235), width=max(1, size // 100))
    return _noise(rng, _rotate_crop(img, rng.uniform(0, 180), out_size), 5)


def draw_river(rng, out_size):
    size = int(out_size * 1.45)
    img = _field_background(rng, size)
    d = ImageDraw.Draw(img)
    amplitude, phase, width = size * rng.uniform(0.1, 0.25), rng.uniform(0, 2 * math.pi), size * rng.uniform(0.1, 0.18)
    points = [(size / 2 + amplitude * math.sin(phase + 2 * math.pi * t / size * 1.5), t) for t in range(-10, size + 10, 4)]
    d.line(points, fill=_jitter(rng, (40, 90, 150), 15), width=int(width), joint="curve")
    return _noise(rng, _rotate_crop(img, rng.uniform(0, 180), out_size), 5)


def draw_desert(rng, size):
    sand = _jitter(rng, (215, 185, 130), 15)
    shade = tuple(int(c * 0.85) for c in sand)
    dunes = _rotated_stripes(rng, size, [sand, sand, shade], rng.uniform(size / 12, size / 6), rng.uniform(0, math.pi))
    return _noise(rng, dunes.filter(ImageFilter.GaussianBlur(size / 80)), 4)


def draw_parking_lot(rng, size):
    img = Image.new("RGB", (size, size), _jitter(rng, (70, 70, 75), 10))
    d = ImageDraw.Draw(img)
    slot = size / rng.uniform(10, 16)
    for row, y in enumerate(np.arange(slot, size - slot, 2.5 * slot)):
        for x in np.arange(0, size, slot):
            d.line((x, y, x, y + slot * 1.6), fill=(230, 230, 230), width=max(1, size // 150))
            if rng.uniform() < 0.7:
                car = tuple(int(v) for v in rng.integers(30, 240, 3))
                d.rectangle((x + slot * 0.2, y + slot * 0.2, x + slot * 0.8, y + slot * 1.4), fill=car)
    return _noise(rng, img.rotate(rng.choice([0, 90, 180, 270]), fillcolor=(70, 70, 75)), 4)


def draw_beach(rng, out_size):
    size = int(out_size * 1.45)
    img = Image.new("RGB", (size, size), _jitter(rng, (220, 200, 150), 12))
    d = ImageDraw.Draw(img)
    shore = size * rng.uniform(0.35, 0.6)
    d.rectangle((shore, 0, size, size), fill=_jitter(rng, (30, 90, 150), 12))
    d.rectangle((shore - size * 0.03, 0, shore + size * 0.02, size), fill=(235, 235, 225))
    return _noise(rng, _rotate_crop(img, rng.uniform(0, 360), out_size), 4)


def draw_industrial(rng, size):
    img = Image.new("RGB", (size, size), _jitter(rng, (120, 115, 105), 10))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x, y = rng.uniform(0, size * 0.7), rng.uniform(0, size * 0.7)
        w, h = rng.uniform(size * 0.15, size * 0.4), rng.uniform(size * 0.1, size * 0.3)
        d.rectangle((x, y, x + w, y + h), fill=_jitter(rng, (200, 200, 205), 15))
    for _ in range(int(rng.integers(2, 6))):
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), size * rng.uniform(0.04, 0.08)
        d.ellipse((x - r, y - r, x + r, y + r), fill=(235, 235, 235), outline=(90, 90, 90), width=max(1, size // 120))
    return _noise(rng, img, 4)


DRAW = {"sea": draw_sea, "forest": draw_forest, "farmland": draw_farmland, "residential": draw_residential,
        "highway": draw_highway, "river": draw_river, "desert": draw_desert, "parking lot": draw_parking_lot,
        "beach": draw_beach, "industrial": draw_industrial}


def sample_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def draw_scene(label: int, size: int, rng: np.random.Generator) -> Image.Image:
    return DRAW[CLASSES[label]](rng, size)


def make_caption(label: int, rng: np.random.Generator) -> str:
    desc = DESCRIPTIONS[CLASSES[label]]
    return TEMPLATES[rng.integers(len(TEMPLATES))].format(desc[rng.integers(len(desc))])


def make_sample(seed: int, index: int, size_range=(64, 64), stream: int = 0) -> tuple[Image.Image, str, int]:
    """(image, caption, label) of sample `index`; sizes drawn uniformly from `size_range`."""
    rng = sample_rng(seed, index, stream)
    label = int(rng.integers(len(CLASSES)))
    size = int(rng.integers(size_range[0], size_range[1] + 1))
    return draw_scene(label, size, rng), make_caption(label, rng), label


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_rs5m_shard(path: str, samples) -> None:
    """One RS5M-format shard from (key, image bytes, image name, caption) tuples; atomic."""
    with tarfile.open(path + ".tmp", "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, image, name, caption in samples:
            add_member(tar, f"{key}.img_content", image)
            add_member(tar, f"{key}.img_name", name.encode("utf-8"))
            add_member(tar, f"{key}.caption", caption.encode("utf-8"))
    os.replace(path + ".tmp", path)


def write_rs5m_shards(out_dir: str, num_samples: int, samples_per_shard: int = 256, seed: int = 0,
                      size_range=(64, 64), split: str = "train", stream: int = 0) -> list[str]:
    """`{pub11,rs3}-<split>-NNNN.tar` shards (alternating subsets) holding `num_samples` samples."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    num_shards = -(-num_samples // samples_per_shard)
    for shard in range(num_shards):
        subset = ("pub11", "rs3")[shard % 2]
        path = os.path.join(out_dir, f"{subset}-{split}-{shard // 2:04d}.tar")
        indices = range(shard * samples_per_shard, min(num_samples, (shard + 1) * samples_per_shard))
        write_rs5m_shard(path, (_rs5m_record(seed, i, size_range, subset, stream) for i in indices))
        paths.append(path)
    return paths


def _rs5m_record(seed, index, size_range, subset, stream):
    image, caption, _ = make_sample(seed, index, size_range, stream)
    name = f"{subset}_{index:08d}.jpg"
    return f"{subset}_{index:08d}", jpeg_bytes(image), name, caption


# --- evaluation sets, laid out as GeoRSCLIP's rs5m_test_data -------------------------------------

CLASSIFICATION_SETS = {  # folder, class-folder spelling, image size; streams keep sets disjoint
    "eurosat": ("eurosat-rgb/2750", lambda c: c.title().replace(" ", ""), 64, 11),
    "resisc45": ("RESISC45", lambda c: c.replace(" ", "_"), 96, 12),
    "aid": ("AID", lambda c: c.title(), 128, 13),
}
RETRIEVAL_SETS = {  # folder, csv, image folder, csv encoding, karpathy json, stream
    "rsitmd": ("rsitmd", "rsitmd_test.csv", "images", "utf-8", "dataset_RSITMD.json", 21),
    "rsicd": ("rsicd", "rsicd_test.csv", "RSICD_images", "gb18030", "dataset_rsicd.json", 22),
}
CAPTIONS_PER_IMAGE = 5


def write_classification_set(root: str, name: str, per_class: int, seed: int) -> str:
    folder, spell, size, stream = CLASSIFICATION_SETS[name]
    base = os.path.join(root, folder)
    for label, cls in enumerate(CLASSES):
        os.makedirs(os.path.join(base, spell(cls)), exist_ok=True)
        for k in range(per_class):
            rng = sample_rng(seed, label * 100_000 + k, stream)
            draw_scene(label, size, rng).save(os.path.join(base, spell(cls), f"{spell(cls)}_{k}.jpg"), quality=90)
    return base


def write_retrieval_set(root: str, name: str, num_test: int, num_train: int, seed: int) -> str:
    """Images with 5 captions each: the GeoRSCLIP test CSV and a Karpathy JSON with all splits."""
    folder, csv_name, image_dir, encoding, json_name, stream = RETRIEVAL_SETS[name]
    base = os.path.join(root, folder)
    os.makedirs(os.path.join(base, image_dir), exist_ok=True)
    images, rows = [], []
    for i in range(num_test + num_train):
        rng = sample_rng(seed, i, stream)
        label = int(rng.integers(len(CLASSES)))
        filename = f"{name}_{i:05d}.jpg"
        draw_scene(label, 96, rng).save(os.path.join(base, image_dir, filename), quality=90)
        captions = [make_caption(label, rng) for _ in range(CAPTIONS_PER_IMAGE)]
        split = "test" if i < num_test else "train"
        images.append({"filename": filename, "imgid": i, "split": split, "label": CLASSES[label],
                       "sentids": list(range(5 * i, 5 * i + 5)),
                       "sentences": [{"raw": c, "tokens": c.rstrip(".").split(), "imgid": i, "sentid": 5 * i + j}
                                     for j, c in enumerate(captions)]})
        if split == "test":
            rows.extend((filename, c) for c in captions)
    with open(os.path.join(base, csv_name), "w", newline="", encoding=encoding) as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "title"])
        writer.writerows(rows)
    with open(os.path.join(base, json_name), "w") as f:
        json.dump({"images": images, "dataset": name}, f)
    return base


def write_selo_set(root: str, num_images: int, seed: int, size: int = 768) -> str:
    """AIR-SLT-like: large scenes of one class with 1-2 polygons of another, captioned by target."""
    base = os.path.join(root, "AIR-SLT")
    os.makedirs(os.path.join(base, "imgs"), exist_ok=True)
    os.makedirs(os.path.join(base, "annotations"), exist_ok=True)
    annotations = []
    for i in range(num_images):
        rng = sample_rng(seed, i, 31)
        background, target = (int(x) for x in rng.choice(len(CLASSES), 2, replace=False))
        height = int(size * rng.uniform(0.7, 1.0))
        canvas = draw_scene(background, size, rng).crop((0, 0, size, height))
        polygons = []
        for _ in range(int(rng.integers(1, 3))):
            polygon = _random_quad(rng, size, height)
            region = draw_scene(target, size, rng).crop((0, 0, size, height))
            mask = Image.new("L", (size, height))
            ImageDraw.Draw(mask).polygon([tuple(p) for p in polygon], fill=255)
            canvas.paste(region, (0, 0), mask)
            polygons.append(polygon)
        canvas.save(os.path.join(base, "imgs", f"{i}.jpg"), quality=95)
        annotations.append({"caption": make_caption(target, rng), "jpg_name": f"{i}.jpg", "points": polygons})
    with open(os.path.join(base, "annotations", "anno.json"), "w") as f:
        json.dump(annotations, f)
    return base


def _random_quad(rng, width, height) -> list[list[float]]:
    cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
    rx, ry = rng.uniform(0.1, 0.2) * width, rng.uniform(0.1, 0.2) * height
    angles = np.sort(rng.uniform(0, 2 * math.pi, 4))
    return [[float(cx + rx * math.cos(a)), float(cy + ry * math.sin(a))] for a in angles]


NEAR_DUPLICATE_EDITS = ("reencode", "resize", "crop", "jitter")


def near_duplicate(img: Image.Image, edit: str) -> Image.Image:
    """What copies of one image across datasets look like: re-encoded, resized, cropped by a few
    percent, or colour-jittered."""
    if edit == "reencode":
        return Image.open(io.BytesIO(jpeg_bytes(img, quality=60))).convert("RGB")
    if edit == "resize":
        return img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.BICUBIC)
    if edit == "crop":
        dx, dy = max(1, img.width // 50), max(1, img.height // 50)
        return img.crop((dx, dy, img.width - dx, img.height - dy))
    if edit == "jitter":
        return ImageEnhance.Color(ImageEnhance.Brightness(img).enhance(1.08)).enhance(0.9)
    raise ValueError(f"unknown edit {edit!r}; use one of {NEAR_DUPLICATE_EDITS}")


def plant_near_duplicates(root: str, count: int, num_test: int) -> list[tuple[str, str]]:
    """Overwrites `count` train images of each retrieval set with near-copies of the other set's test
    images (cycling through the edits), as RSICD and RSITMD share images; returns the (test file,
    planted train file) pairs."""
    planted = []
    for source, target in (("rsicd", "rsitmd"), ("rsitmd", "rsicd")):
        source_dir = os.path.join(root, RETRIEVAL_SETS[source][0], RETRIEVAL_SETS[source][2])
        target_dir = os.path.join(root, RETRIEVAL_SETS[target][0], RETRIEVAL_SETS[target][2])
        for i in range(count):
            original, copy = f"{source}_{i:05d}.jpg", f"{target}_{num_test + i:05d}.jpg"
            with Image.open(os.path.join(source_dir, original)) as img:
                edited = near_duplicate(img.convert("RGB"), NEAR_DUPLICATE_EDITS[i % len(NEAR_DUPLICATE_EDITS)])
            edited.save(os.path.join(target_dir, copy), quality=90)
            planted.append((f"{source}/{original}", f"{target}/{copy}"))
    return planted


def write_test_data(root: str, per_class: int = 10, retrieval_images: int = 40, selo_images: int = 3,
                    seed: int = 0, near_duplicates: int = 4) -> str:
    """A complete `rs5m_test_data` tree: three zero-shot sets, two retrieval sets (with
    `near_duplicates` planted each way between their test and train splits), AIR-SLT."""
    for name in CLASSIFICATION_SETS:
        write_classification_set(root, name, per_class, seed)
    for name in RETRIEVAL_SETS:
        write_retrieval_set(root, name, retrieval_images, retrieval_images, seed)
    plant_near_duplicates(root, min(near_duplicates, retrieval_images), retrieval_images)
    write_selo_set(root, selo_images, seed)
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="writes OUT/rs5m/{train,val}/*.tar and OUT/rs5m_test_data/")
    parser.add_argument("--train-samples", type=int, default=4096)
    parser.add_argument("--val-samples", type=int, default=512)
    parser.add_argument("--samples-per-shard", type=int, default=512)
    parser.add_argument("--min-size", type=int, default=64, help="training image side, drawn uniformly")
    parser.add_argument("--max-size", type=int, default=64)
    parser.add_argument("--eval-per-class", type=int, default=20)
    parser.add_argument("--retrieval-images", type=int, default=60)
    parser.add_argument("--selo-images", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = (args.min_size, args.max_size)
    for split, count, stream in (("train", args.train_samples, 0), ("val", args.val_samples, 1)):
        write_rs5m_shards(os.path.join(args.out, "rs5m", split), count, args.samples_per_shard, args.seed,
                          sizes, split, stream)
    write_test_data(os.path.join(args.out, "rs5m_test_data"), args.eval_per_class, args.retrieval_images,
                    args.selo_images, args.seed)
    print(f"wrote {args.train_samples} train and {args.val_samples} val samples, and rs5m_test_data, under {args.out}")


if __name__ == "__main__":
    main()

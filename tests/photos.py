"""Real-photo scenes at RS5M's sizes, for measuring the training augmentation's speed and quality.

Synthetic scenes are smooth and cheap to decode, so a benchmark on them flatters any fast path.
These are mosaics of scikit-image's bundled photographs (natural detail at native resolution, nothing
upscaled), cut to a drawn size and JPEG-encoded (q90): what an aerial tile costs to decode and resize.
Sides are log-uniform over `side_range` (RS5M: mostly 256-1024 px, a tail to 2048), aspects in
[3/4, 4/3]. A pure function of (seed, index), like `synthetic.make_sample`.
"""

from __future__ import annotations

import functools
import io
import os

import numpy as np
from PIL import Image

from georsclip_jax.data.synthetic import jpeg_bytes, sample_rng, write_rs5m_shard

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
CAPTIONS = ("a photograph of everyday things seen up close.", "a detailed colour photograph.",
            "a mosaic of several photographs.", "an image full of fine detail and texture.")


@functools.cache
def _photos() -> tuple[Image.Image, ...]:
    import skimage.data

    return tuple(Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS)


def photo_scene(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A `width` x `height` mosaic of randomly placed, randomly flipped bundled photos."""
    canvas = Image.new("RGB", (width, height))
    photos = _photos()
    y = 0
    while y < height:
        x, row_height = 0, 0
        while x < width:
            photo = photos[int(rng.integers(len(photos)))]
            if rng.uniform() < 0.5:
                photo = photo.transpose(Image.FLIP_LEFT_RIGHT)
            canvas.paste(photo, (x, y))
            x, row_height = x + photo.width, max(row_height, photo.height)
        y += row_height
    return canvas


def photo_sample(seed: int, index: int, side_range=(256, 2048)) -> Image.Image:
    rng = sample_rng(seed, index, stream=31)
    side = float(np.exp(rng.uniform(np.log(side_range[0]), np.log(side_range[1]))))
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    width, height = (int(side), int(side / aspect)) if aspect >= 1 else (int(side * aspect), int(side))
    return photo_scene(width, height, rng)


def rs5m_like_sides(index: int) -> tuple[int, int]:
    """RS5M's bulk: 4 images in 5 with sides in 256-1024 px, the fifth in 1024-2048 px."""
    return (1024, 2048) if index % 5 == 4 else (256, 1024)


def sides(index: int, side_range) -> tuple[int, int]:
    return side_range(index) if callable(side_range) else side_range


def write_photo_shards(out_dir: str, num_samples: int, samples_per_shard: int = 256, seed: int = 0,
                       side_range=(256, 2048)) -> list[str]:
    """RS5M-format tar shards (`photos-NNNN.tar`) of photo scenes with short captions. `side_range`:
    (low, high) for every image, or a function of the image's index (rs5m_like_sides)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for shard, start in enumerate(range(0, num_samples, samples_per_shard)):
        path = os.path.join(out_dir, f"photos-{shard:04d}.tar")
        records = ((f"photo_{i:08d}", jpeg_bytes(photo_sample(seed, i, sides(i, side_range))), f"photo_{i:08d}.jpg",
                    CAPTIONS[i % len(CAPTIONS)]) for i in range(start, min(num_samples, start + samples_per_shard)))
        write_rs5m_shard(path, records)
        paths.append(path)
    return paths


def fast_path_quality(jpegs: list[bytes], size: int = 224, seed: int = 0) -> dict:
    """The fast path (jpeg_draft) against the exact one on the same draw (crop, flip, angle) of each
    image, in 8-bit levels: mean |difference|, PSNR over all pixels, the worst image's PSNR, and how
    many images were decoded at a reduced DCT scale."""
    from georsclip_jax.transforms import apply_augmentation, draw_augmentation, jpeg_draft_factor

    abs_sum, sq_sums, drafted, pixels = 0.0, [], 0, size * size * 3
    for i, data in enumerate(jpegs):
        img = Image.open(io.BytesIO(data))
        draw = draw_augmentation(np.random.default_rng([seed, i]), img.width, img.height, hflip=True, rotate=True)
        drafted += jpeg_draft_factor(img, draw, size) > 1
        exact = np.asarray(apply_augmentation(Image.open(io.BytesIO(data)), draw, size), np.float64)
        fast = np.asarray(apply_augmentation(img, draw, size, jpeg_draft=True), np.float64)
        abs_sum += np.abs(exact - fast).sum()
        sq_sums.append(np.square(exact - fast).sum())
    return {"images": len(jpegs), "drafted": int(drafted), "mean_abs_diff": float(abs_sum / (pixels * len(jpegs))),
            "psnr_db": _psnr(sum(sq_sums) / (pixels * len(jpegs))), "worst_psnr_db": _psnr(max(sq_sums) / pixels)}


def _psnr(mean_square_error: float) -> float:
    return float(10 * np.log10(255.0 ** 2 / max(mean_square_error, 1e-12)))

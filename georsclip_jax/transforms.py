"""Host-side image preprocessing with PIL, identical to open_clip's torchvision pipeline.

Eval: bicubic shortest-side resize (long side truncated), round-half-even centre crop, RGB *after*
the crop, /255, mean/std. Train: RandomResizedCrop(scale (0.9, 1.0), torchvision's sampling), and
GeoRSCLIP's optional horizontal flip and 0-360 degree rotation; or SkyScript's timm augmentation
(AUGMENTATIONS). Output is float32 HWC (NHWC batches).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance

from georsclip_jax.models.configs import PreprocessConfig

INTERPOLATIONS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def resize_shortest(img: Image.Image, size: int, resample=Image.BICUBIC) -> Image.Image:
    """torchvision Resize(int): short side -> size, long side -> int(size * long / short)."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resample)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision CenterCrop: offsets rounded half to even, zero padding if the image is smaller."""
    w, h = img.size
    if w < size or h < size:
        padded = Image.new(img.mode, (max(w, size), max(h, size)))
        padded.paste(img, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        img, (w, h) = padded, padded.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(img: Image.Image) -> Image.Image:
    """open_clip's convert("RGB"), except 16-bit images are scaled to 8 bits rather than clipped."""
    if img.mode == "RGB":
        return img
    if img.mode in SIXTEEN_BIT_MODES:
        scaled = (np.asarray(img, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return Image.fromarray(scaled, "L").convert("RGB")
    return img.convert("RGB")


def to_uint8_array(img: Image.Image) -> np.ndarray:
    """RGB pixels, uint8 [H, W, 3]: what the pipeline ships when normalization runs on device."""
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def normalization_table(mean, std) -> np.ndarray:
    """float32 [256, 3]: each uint8 level normalized per channel (torchvision's ToTensor+Normalize)."""
    levels = np.arange(256, dtype=np.float32)[:, None] / np.float32(255.0)
    return (levels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def normalize_pixels(pixels, mean, std):
    """uint8 [..., 3] -> float32 by table lookup: bit-identical on host (NumPy) and on device (jax
    arrays), where compiled arithmetic would round differently (XLA turns /c into *(1/c))."""
    table = normalization_table(mean, std)
    if not isinstance(pixels, np.ndarray):
        import jax.numpy as jnp

        return jnp.asarray(table)[pixels.astype(jnp.int32), jnp.arange(3)]
    out = np.empty(pixels.shape, np.float32)
    for channel in range(3):  # one contiguous lookup per channel: ~4x faster than fancy indexing
        out[..., channel] = np.take(table[:, channel], pixels[..., channel])
    return out


def to_normalized_array(img: Image.Image, mean, std) -> np.ndarray:
    """RGB conversion, /255, per-channel normalization; float32 [H, W, 3]."""
    return normalize_pixels(to_uint8_array(img), mean, std)


def eval_geometry(cfg: PreprocessConfig) -> Callable[[Image.Image], Image.Image]:
    """The eval resize + crop alone (PIL in, PIL out), before any pixel conversion."""
    resample = INTERPOLATIONS[cfg.interpolation]
    size = cfg.image_size
    if cfg.resize_mode not in ("shortest", "squash"):
        raise ValueError(f"unsupported resize_mode {cfg.resize_mode!r} (use 'shortest' or 'squash')")

    def apply(img: Image.Image) -> Image.Image:
        if cfg.resize_mode == "squash":
            return img.resize((size, size), resample)
        return center_crop(resize_shortest(img, size, resample), size)

    return apply


def eval_transform(cfg: PreprocessConfig) -> Callable[[Image.Image], np.ndarray]:
    geometry = eval_geometry(cfg)
    return lambda img: to_normalized_array(geometry(img), cfg.mean, cfg.std)


def random_resized_crop_params(rng: np.random.Generator, width: int, height: int, scale=(0.9, 1.0),
                               ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params with a NumPy generator: (top, left, h, w)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # Fallback: central crop at the nearest allowed ratio.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(img: Image.Image, top: int, left: int, h: int, w: int, size: int,
                 resample: int = Image.BICUBIC) -> Image.Image:
    """torchvision F.resized_crop on a PIL image (crop, then a resize to size x size, bicubic by default)."""
    return img.crop((left, top, left + w, top + h)).resize((size, size), resample)


JITTER_OPS = ("brightness", "contrast", "saturation")  # torchvision ColorJitter's first three, as PIL enhancers
_ENHANCERS = {"brightness": ImageEnhance.Brightness, "contrast": ImageEnhance.Contrast,
              "saturation": ImageEnhance.Color}


@dataclasses.dataclass(frozen=True)
class AugmentDraw:
    """One draw of the train augmentation: crop box (torchvision's (top, left, h, w)), resize filter, flip,
    angle; SkyScript's colour jitter ((op, factor) in the order applied) and quarter turns."""
    top: int
    left: int
    height: int
    width: int
    flip: bool = False
    angle: float = 0.0
    interpolation: int = Image.BICUBIC
    jitter: tuple[tuple[str, float], ...] = ()
    quarter_turns: int = 0


def draw_color_jitter(rng: np.random.Generator, strength: float) -> tuple[tuple[str, float], ...]:
    """torchvision ColorJitter(b=c=s=strength, hue=0): a random order of the four ops (hue skipped), each
    factor uniform in [max(0, 1 - strength), 1 + strength]."""
    factors = {op: float(rng.uniform(max(0.0, 1 - strength), 1 + strength)) for op in JITTER_OPS}
    order = rng.permutation(len(JITTER_OPS) + 1)  # index 3 is hue, which strength 0 leaves out
    return tuple((JITTER_OPS[i], factors[JITTER_OPS[i]]) for i in order if i < len(JITTER_OPS))


def draw_augmentation(rng: np.random.Generator, width: int, height: int, scale=(0.9, 1.0), hflip: bool = False,
                      rotate: bool = False, ratio=(3 / 4, 4 / 3), random_interpolation: bool = False,
                      color_jitter: float = 0.0, quarter_turns: bool = False) -> AugmentDraw:
    """RandomResizedCrop's box, then (GeoRSCLIP) flip with p=0.5 and an angle uniform in [0, 360); or
    (SkyScript, through timm) a bilinear or bicubic resize at random, colour jitter, and a rotation by a
    multiple of 90 degrees drawn uniformly."""
    top, left, h, w = random_resized_crop_params(rng, width, height, scale, ratio)
    flip = bool(hflip and rng.uniform() < 0.5)
    angle = float(rng.uniform(0.0, 360.0)) if rotate else 0.0
    interpolation = (Image.BILINEAR, Image.BICUBIC)[int(rng.integers(2))] if random_interpolation else Image.BICUBIC
    jitter = draw_color_jitter(rng, color_jitter) if color_jitter else ()
    turns = int(rng.integers(4)) if quarter_turns else 0
    return AugmentDraw(top, left, h, w, flip, angle, interpolation, jitter, turns)


def jpeg_draft_factor(img: Image.Image, draw: AugmentDraw, size: int) -> int:
    """The largest DCT scale (8, 4, 2) at which the crop still spans >= `size` pixels; 1 if none or
    not a JPEG. libjpeg then decodes at 1/k scale: each 8x8 block's k-th harmonics, an exact box
    filter's worth of antialiasing, for a fraction of the decode and resize cost."""
    if img.format != "JPEG":
        return 1
    return next((k for k in (8, 4, 2) if min(draw.height, draw.width) / k >= size), 1)


def decode_drafted(img: Image.Image, factor: int, load: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """Decodes a lazy JPEG at 1/`factor` scale. PIL's draft picks the largest scale s with
    side // requested >= s, so ask for side // k (which is >= size > k, making that quotient exactly k):
    asking for ceil(side / k), as PIL's thumbnail does, silently falls back to a smaller k."""
    if factor > 1:
        img.draft("RGB", (img.width // factor, img.height // factor))
    return load(img)


def apply_augmentation(img: Image.Image, draw: AugmentDraw, size: int, jpeg_draft: bool = False,
                       load: Callable[[Image.Image], Image.Image] = to_rgb) -> Image.Image:
    """Crop + bicubic resize to size x size, flip, nearest-neighbour rotation with black fill.

    `img` may be lazy (opened, not decoded); `load` decodes it to RGB. Exact (torchvision's
    resized_crop, hflip and RandomRotation on PIL) unless `jpeg_draft`: then a large JPEG is decoded
    at DCT scale 1/k (jpeg_draft_factor) and the crop box, divided by k, is resampled from it —
    sub-pixel exact, since a scaled pixel i covers the original pixels [k*i, k*(i+1))."""
    box = (draw.left, draw.top, draw.left + draw.width, draw.top + draw.height)
    factor = jpeg_draft_factor(img, draw, size) if jpeg_draft else 1
    img = decode_drafted(img, factor, load)
    if factor == 1:
        img = resized_crop(img, draw.top, draw.left, draw.height, draw.width, size, draw.interpolation)
    else:
        img = img.resize((size, size), draw.interpolation, box=tuple(v / factor for v in box))
    if draw.flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if draw.angle:
        img = img.rotate(draw.angle, resample=Image.NEAREST, fillcolor=(0, 0, 0))
    for op, strength in draw.jitter:  # torchvision's adjust_* on PIL images are these enhancers
        img = _ENHANCERS[op](img).enhance(strength)
    if draw.quarter_turns:
        img = img.rotate(90 * draw.quarter_turns)  # square: an exact transpose, as torchvision's rotate is
    return img


# The train augmentations by name: draw_augmentation's options. open_clip: RandomResizedCrop(0.9-1);
# georsclip: that, flip and 0-360 degree rotation; skyscript: SkyScript's README (timm's RRC 0.67-1, ratio
# 0.5-2, random bilinear/bicubic, colour jitter 0.4, no flip; its RandomRotationNew by 0/90/180/270).
AUGMENTATIONS = {
    "open_clip": {},
    "georsclip": {"hflip": True, "rotate": True},
    "skyscript": {"scale": (0.67, 1.0), "ratio": (0.5, 2.0), "random_interpolation": True, "color_jitter": 0.4,
                  "quarter_turns": True},
}


def train_geometry(cfg: PreprocessConfig, scale=(0.9, 1.0), hflip: bool = False, rotate: bool = False,
                   jpeg_draft: bool = False, load: Callable[[Image.Image], Image.Image] = to_rgb, **options):
    """The train augmentation alone: apply(img, rng) -> RGB PIL image of cfg.image_size. `options`: the
    rest of draw_augmentation's (AUGMENTATIONS["skyscript"]).

    `img` may be lazy: the draw needs only its size (see draw_augmentation, apply_augmentation)."""

    def apply(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        draw = draw_augmentation(rng, img.width, img.height, scale, hflip, rotate, **options)
        return apply_augmentation(img, draw, cfg.image_size, jpeg_draft, load)

    return apply


def train_transform(cfg: PreprocessConfig, scale=(0.9, 1.0), hflip: bool = False, rotate: bool = False):
    """Returns apply(img, rng) -> float32 [S, S, 3]. Defaults are open_clip's train transform;
    `hflip=True, rotate=True` gives GeoRSCLIP's (flip p=0.5, rotation uniform in [0, 360))."""
    geometry = train_geometry(cfg, scale, hflip, rotate)
    return lambda img, rng: to_normalized_array(geometry(img, rng), cfg.mean, cfg.std)


def image_transform(image_size: int = 224, train: bool = False, mean=None, std=None,
                    interpolation: str = "bicubic", resize_mode: str = "shortest", **train_kwargs):
    """open_clip-style factory: eval returns f(img); train returns f(img, rng)."""
    cfg = PreprocessConfig(image_size=image_size, interpolation=interpolation, resize_mode=resize_mode,
                           **({"mean": tuple(mean)} if mean else {}), **({"std": tuple(std)} if std else {}))
    return train_transform(cfg, **train_kwargs) if train else eval_transform(cfg)

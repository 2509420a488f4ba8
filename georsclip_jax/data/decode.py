"""Turns a raw sample's bytes into a checked RGB image and caption, or a named reason to skip it.

Everything a web-scale corpus throws at a loader ends here as a `BadSample` with one reason from
`SKIP_REASONS`: the pipeline counts it and moves on. Valid-but-unusual images (palette, RGBA, CMYK,
grayscale, 16-bit) are converted to RGB, never dropped: open_clip's `convert("RGB")`, except that
16-bit samples are scaled to 8 bits instead of being clipped.
"""

from __future__ import annotations

import io
import json
import warnings

from PIL import Image

from georsclip_jax.transforms import to_rgb

# Every reason a sample can be skipped for; the order is the layout of the pipeline's counters.
SKIP_REASONS = (
    "truncated_member",  # the tar ends inside one of the sample's members
    "missing_image",     # no image member / file
    "missing_caption",   # no caption member / column value
    "empty_image",       # zero-byte image
    "corrupt_image",     # undecodable, truncated or unsupported image data
    "image_too_large",   # more pixels than `max_pixels` (decompression-bomb guard)
    "bad_utf8",          # caption bytes are not UTF-8
    "empty_caption",     # caption is empty or whitespace
)
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # PIL's own bomb threshold, ~89.5 MPixel


class BadSample(Exception):
    """A sample that cannot be used; `reason` is one of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in SKIP_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def open_image(data: bytes | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Sniffs the codec and reads only the header: a lazy image whose size is known and safe."""
    if data is None:
        raise BadSample("missing_image")
    if len(data) == 0:
        raise BadSample("empty_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as e:
        raise BadSample("image_too_large", str(e)) from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... on unknown data
        raise BadSample("corrupt_image", f"{type(e).__name__}: {e}") from None
    if img.width * img.height > max_pixels:
        raise BadSample("image_too_large", f"{img.width}x{img.height} > {max_pixels} pixels")
    return img


def load_rgb(img: Image.Image) -> Image.Image:
    """Decodes a lazy image (after any `draft`) to RGB; undecodable data becomes corrupt_image."""
    try:
        img.load()
        return to_rgb(img)
    except Exception as e:  # truncated or corrupt payloads surface only here
        raise BadSample("corrupt_image", f"{type(e).__name__}: {e}") from None


def decode_image(data: bytes | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Checked, fully decoded RGB image (see open_image and load_rgb)."""
    return load_rgb(open_image(data, max_pixels))


def decode_caption(data: bytes | str | None, json_keys: tuple[str, ...] = ("caption", "text"),
                   is_json: bool = False) -> str:
    """UTF-8 (strict) caption; from a JSON object when `is_json` (first of `json_keys` present)."""
    if data is None:
        raise BadSample("missing_caption")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadSample("bad_utf8", str(e)) from None
    if is_json:
        data = caption_from_json(data, json_keys)
    text = data.strip()
    if not text:
        raise BadSample("empty_caption")
    return text


def caption_from_json(text: str, json_keys: tuple[str, ...]) -> str:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadSample("missing_caption", f"invalid JSON: {e}") from None
    for key in json_keys if isinstance(obj, dict) else ():
        value = obj.get(key)
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str):
            return value
    raise BadSample("missing_caption", f"JSON has none of the keys {list(json_keys)}")

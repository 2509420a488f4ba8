"""RS5M-format tar shards seeded with every kind of bad sample the pipeline must survive.

Sample keys say what each sample is (`good-...` or `bad-<reason>-...`), so tests can derive the
expected valid set and skip counts from the shards themselves."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zlib

import numpy as np
from PIL import Image

from georsclip_jax.data.synthetic import add_member, jpeg_bytes, make_sample


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid PNG signature + IHDR that claims 1.6 GPixel; decoding it would be a bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def unusual_images(base: Image.Image) -> dict[str, bytes]:
    """Valid images in modes a web corpus holds; each must decode to RGB, not be skipped."""
    gray16 = (np.asarray(base.convert("L"), np.uint16) * 257)
    return {"palette": encode(base.convert("P"), "PNG"), "rgba": encode(base.convert("RGBA"), "PNG"),
            "cmyk": encode(base.convert("CMYK"), "JPEG"), "gray": encode(base.convert("L"), "JPEG"),
            "gray16": encode(Image.fromarray(gray16), "PNG"), "webp": encode(base, "WEBP"),
            "bmp": encode(base, "BMP")}


def good(index: int) -> tuple[bytes, str]:
    image, caption, _ = make_sample(7, index, (48, 80))
    return jpeg_bytes(image), caption


def write_messy_shards(out_dir: str, good_per_shard: int = 9) -> list[str]:
    """Three shards: one with bad samples mixed in, one clean, one cut inside its last member."""
    os.makedirs(out_dir, exist_ok=True)
    image, caption = good(1000)
    samples_a = []
    for i in range(good_per_shard):
        samples_a.append((f"good-{i:03d}", *good(i)))
    samples_a += [(f"good-{kind}", data, f"an image stored as {kind}")
                  for kind, data in unusual_images(Image.open(io.BytesIO(image))).items()]
    samples_a += [
        ("bad-corrupt_image-random", os.urandom(3000), caption),
        ("bad-corrupt_image-cut", image[: len(image) // 2], caption),
        ("bad-empty_image-0", b"", caption),
        ("bad-image_too_large-bomb", png_bomb(), caption),
        ("bad-bad_utf8-latin1", image, "caf\xe9 on a roof".encode("latin-1")),
        ("bad-empty_caption-0", image, b""),
        ("bad-empty_caption-space", image, b"  \n "),
        ("bad-missing_caption-0", image, None),
        ("bad-missing_image-0", None, caption),
    ]
    order = np.random.default_rng(0).permutation(len(samples_a))
    paths = [os.path.join(out_dir, "pub11-train-0000.tar"), os.path.join(out_dir, "rs3-train-0000.tar"),
             os.path.join(out_dir, "pub11-train-0001.tar")]
    write_tar(paths[0], [samples_a[i] for i in order])
    write_tar(paths[1], [(f"good-b{i:03d}", *good(100 + i)) for i in range(good_per_shard)])
    last = [(f"good-c{i:03d}", *good(200 + i)) for i in range(good_per_shard)] + [("bad-truncated_member-0", *good(299))]
    write_tar(paths[2], last)
    cut_inside_last_image(paths[2])
    return paths


def write_tar(path: str, samples) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, image, caption in samples:
            if image is not None:
                add_member(tar, f"{key}.img_content", image)
            add_member(tar, f"{key}.img_name", f"{key}.jpg".encode())
            if caption is not None:
                add_member(tar, f"{key}.caption", caption.encode("utf-8") if isinstance(caption, str) else caption)


def cut_inside_last_image(path: str) -> None:
    """Truncates the shard in the middle of its last sample's image member (a partial download)."""
    with tarfile.open(path) as tar:
        last_image = [m for m in tar.getmembers() if m.name.endswith(".img_content")][-1]
    os.truncate(path, last_image.offset_data + last_image.size // 2)


def expected(source) -> tuple[set[int], dict[str, int]]:
    """Valid source indices and per-reason skip counts, read off the sample keys."""
    valid, skips = set(), {}
    for i in range(len(source)):
        key = source.origin(i).rsplit(":", 1)[1]
        if key.startswith("good-"):
            valid.add(i)
        else:
            reason = key.split("-")[1]
            skips[reason] = skips.get(reason, 0) + 1
    return valid, skips

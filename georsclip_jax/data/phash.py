"""Perceptual hashes and their Hamming-distance search: the kernel of the de-duplication tool.

pHash (imagehash's `phash`, hackerfactor's recipe): grayscale, Lanczos resize to 32x32, 2-D DCT-II,
the 8x8 lowest frequencies, each bit = coefficient > their median. Near-copies (re-encoded, resized,
slightly cropped, colour-jittered) land within a few bits; unrelated images near 32 of 64.
Hashes are packed into two uint32 words; `hamming_neighbours` finds each hash's nearest others in a
jitted, chunked kernel (XOR + population count, top-k), so a million images never form the N x N
distance matrix. Distances count differing bits, or differing hex digits of the hash's string (4-bit
blocks): RemoteCLIP's rule is "fewer than 2 different digits".
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft
from PIL import Image

HASH_BITS = 64
UNITS = ("bit", "hex_digit")


def phash_bits(img: Image.Image, hash_size: int = 8, highfreq_factor: int = 4) -> np.ndarray:
    """bool [hash_size * hash_size], row-major: imagehash.phash(img).hash.flatten()."""
    side = hash_size * highfreq_factor
    pixels = np.asarray(img.convert("L").resize((side, side), Image.LANCZOS), np.float64)
    dct = scipy.fft.dct(scipy.fft.dct(pixels, axis=0), axis=1)
    low = dct[:hash_size, :hash_size]
    return (low > np.median(low)).flatten()


def pack(bits: np.ndarray) -> np.ndarray:
    """bool [N, 64] -> uint32 [N, 2] (bit i of the hash is bit i % 32 of word i // 32)."""
    weights = (1 << np.arange(32, dtype=np.uint64)).astype(np.uint64)
    words = bits.reshape(len(bits), 2, 32).astype(np.uint64) @ weights
    return words.astype(np.uint32)


@functools.partial(jax.jit, static_argnames=("k", "unit"))
def _chunk_neighbours(queries, keys, query_ids, key_ids, *, k: int, unit: str):
    differ = queries[:, None, :] ^ keys[None, :, :]
    if unit == "hex_digit":  # one bit per 4-bit block that differs anywhere
        differ = (differ | (differ >> 1) | (differ >> 2) | (differ >> 3)) & jnp.uint32(0x11111111)
    distance = jax.lax.population_count(differ).astype(jnp.int32).sum(-1)
    distance = jnp.where((key_ids[None, :] < 0) | (key_ids[None, :] == query_ids[:, None]), HASH_BITS + 1, distance)
    negative, index = jax.lax.top_k(-distance, k)  # ties keep the lower index
    return -negative, index


def hamming_neighbours(hashes: np.ndarray, k: int = 8, chunk: int = 1024,
                       unit: str = "bit") -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) [N, k]: each packed hash's k nearest other hashes, nearest first, in
    differing bits or hex digits (`unit`). Queries go in fixed-size chunks against all keys (padding
    keys masked), so it compiles once."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    n = len(hashes)
    k = min(k, max(n - 1, 1))
    padded = -(-n // chunk) * chunk
    keys = np.zeros((padded, 2), np.uint32)
    keys[:n] = hashes
    ids = np.where(np.arange(padded) < n, np.arange(padded), -1).astype(np.int32)
    keys_dev, ids_dev = jnp.asarray(keys), jnp.asarray(ids)
    distances, indices = [], []
    for start in range(0, n, chunk):
        d, i = _chunk_neighbours(keys_dev[start:start + chunk], keys_dev, ids_dev[start:start + chunk], ids_dev, k=k,
                                 unit=unit)
        distances.append(np.asarray(d))
        indices.append(np.asarray(i))
    return np.concatenate(distances)[:n], np.concatenate(indices)[:n]

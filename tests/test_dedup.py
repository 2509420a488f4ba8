"""The de-duplication tool: pHash equals imagehash's on real photos, the Hamming kernel equals a NumPy
oracle, planted near-copies are found and distinct images are not, and the CLI's lists and JSON are
what the RET-2 recipe reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import imagehash
import numpy as np
import pytest
import skimage.data
from PIL import Image

from georsclip_jax.data import phash
from photos import photo_sample
from georsclip_jax.data.synthetic import NEAR_DUPLICATE_EDITS, near_duplicate, write_test_data

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "hubble_deep_field")


@pytest.fixture(scope="module")
def photos():
    images = [Image.fromarray(getattr(skimage.data, name)()) for name in PHOTOS]
    return images + [photo_sample(0, i, side_range=(256, 700)) for i in (1, 2)]


def test_phash_equals_imagehash_on_real_photos(photos):
    for img in photos:
        np.testing.assert_array_equal(phash.phash_bits(img), imagehash.phash(img).hash.flatten())


def test_hamming_neighbours_equal_the_numpy_oracle():
    rng = np.random.default_rng(0)
    bits = rng.random((2500, 64)) < 0.5
    bits[100] = bits[7]  # a duplicate, and a near one
    bits[2000] = bits[7] ^ (np.arange(64) < 3)
    distances, indices = phash.hamming_neighbours(phash.pack(bits), k=5, chunk=1024)  # 3 chunks, padded keys
    full = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    np.fill_diagonal(full, 65)
    oracle_index = np.argsort(full, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(indices, oracle_index)
    np.testing.assert_array_equal(distances, np.take_along_axis(full, oracle_index, 1))
    assert indices[7, 0] == 100 and distances[7, 0] == 0 and distances[7, 1] == 3


def test_hex_digit_distance_counts_differing_digits_of_imagehash_strings(photos):
    """RemoteCLIP's rule counts differing hex digits of the hash string (str(imagehash.phash(img)))."""
    variants = [img.convert("RGB") for img in photos[:4]] + [near_duplicate(photos[0].convert("RGB"), e)
                                                             for e in NEAR_DUPLICATE_EDITS]
    strings = [str(imagehash.phash(img)) for img in variants]
    hashes = phash.pack(np.stack([phash.phash_bits(img) for img in variants]))
    distances, indices = phash.hamming_neighbours(hashes, k=len(variants) - 1, chunk=4, unit="hex_digit")
    for i, (row_d, row_i) in enumerate(zip(distances, indices)):
        for d, j in zip(row_d, row_i):
            assert d == sum(a != b for a, b in zip(strings[i], strings[j])), (i, j)


@pytest.mark.parametrize("edit", NEAR_DUPLICATE_EDITS)
def test_near_copies_are_within_the_threshold_and_distinct_photos_are_not(photos, edit):
    originals = np.stack([phash.phash_bits(img.convert("RGB")) for img in photos])
    copies = np.stack([phash.phash_bits(near_duplicate(img.convert("RGB"), edit)) for img in photos])
    distance = (originals[:, None] != copies[None]).sum(-1)
    assert distance.diagonal().max() <= 8, distance.diagonal()
    assert distance[~np.eye(len(photos), dtype=bool)].min() > 8


def test_cli_removes_the_planted_copies_and_its_output_is_what_ret2_reads(tmp_path):
    from georsclip_jax.data.metafile import KarpathyJsonSource

    root = write_test_data(str(tmp_path / "rs5m_test_data"), per_class=1, retrieval_images=20, selo_images=0,
                           near_duplicates=4)
    rsicd, rsitmd = os.path.join(root, "rsicd"), os.path.join(root, "rsitmd")
    out = tmp_path / "lists"
    result = subprocess.run([sys.executable, "-m", "georsclip_jax.dedup",
                             "--sets", f"rsicd={rsicd}/dataset_rsicd.json,{rsicd}/RSICD_images",
                             "--sets", f"rsitmd={rsitmd}/dataset_RSITMD.json,{rsitmd}/images", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # the planted copies are train images 20..23 of each set, of the other set's test images 0..3
    assert (out / "rsicd_duplicate.txt").read_text().split() == [f"rsicd_{i:05d}.jpg" for i in range(20, 24)]
    assert (out / "rsitmd_duplicate.txt").read_text().split() == [f"rsitmd_{i:05d}.jpg" for i in range(20, 24)]
    summary = json.loads((out / "pairs.json").read_text())
    assert len(summary["pairs"]) == 8 and len(summary["groups"]) == 8
    assert all({p["a"]["split"], p["b"]["split"]} == {"train", "test"} for p in summary["pairs"])
    sheet = Image.open(out / "closest_pairs.png")
    assert sheet.height == 8 * (128 + 8) and len(sheet.getcolors(2**24)) > 1000
    deduped = KarpathyJsonSource([str(out / "dataset_rsicd_dedup.json"), str(out / "dataset_rsitmd_dedup.json")],
                                 [f"{rsicd}/RSICD_images", f"{rsitmd}/images"])
    excluded = KarpathyJsonSource([f"{rsicd}/dataset_rsicd.json", f"{rsitmd}/dataset_RSITMD.json"],
                                  [f"{rsicd}/RSICD_images", f"{rsitmd}/images"], exclude_files=[
                                      str(out / "rsicd_duplicate.txt"), str(out / "rsitmd_duplicate.txt")])
    assert len(deduped) == len(excluded) == 2 * 20 - 8
    assert [path for path, _ in deduped.items] == [path for path, _ in excluded.items]

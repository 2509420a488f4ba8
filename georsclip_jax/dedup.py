"""Cross-dataset de-duplication of retrieval sets (RSICD, RSITMD, UCM...), as RemoteCLIP did for RET-2.

    python -m georsclip_jax.dedup --sets rsicd=rsicd/dataset_rsicd.json,rsicd/RSICD_images \\
        --sets rsitmd=rsitmd/dataset_RSITMD.json,rsitmd/images --sets ucm=UCM/images --out lists/

Every image gets a pHash (data/phash.py); each one's nearest hashes come from a jitted, chunked
Hamming kernel, and pairs from different sets within `--threshold` bits are duplicates (grouped
transitively). `--unit hex_digit --threshold 1` is RemoteCLIP's published rule (fewer than 2 differing
hex digits of the hash string). A duplicate in a train split is removed when its partner is in another set's test
split (test data would leak into training) or, when both are train images, from the later set (one
copy stays). Written to --out:
- `<set>_duplicate.txt`: the set's removed filenames, one per line (RemoteCLIP's lists; the RET-2
  recipe reads them as `data.exclude`);
- `dataset_<set>_dedup.json`: the Karpathy JSON without them (usable as `data.train` directly);
- `pairs.json`: every cross-set pair (distance, splits), the groups and the counts;
- `closest_pairs.png`: a contact sheet of the closest pairs, for checking by hand.
A set given as a plain folder (`ucm=DIR`) counts as test data for every other set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from georsclip_jax.data.phash import UNITS, hamming_neighbours, pack, phash_bits

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Entry:
    dataset: str
    filename: str
    path: str
    split: str  # "train", "val", "test" (Karpathy), or "test" for plain folders


def read_entries(name: str, spec: str) -> tuple[list[Entry], dict | None]:
    """`JSON,IMAGES` (a Karpathy dataset_*.json and its image folder) or `DIR` (every image in it)."""
    json_path, _, image_dir = spec.partition(",")
    if image_dir:
        with open(json_path) as f:
            karpathy = json.load(f)
        return [Entry(name, im["filename"], os.path.join(image_dir, im["filename"]), im["split"])
                for im in karpathy["images"]], karpathy
    if not os.path.isdir(json_path):
        raise FileNotFoundError(f"--sets {name}={spec}: not a folder, and not JSON,IMAGES")
    files = sorted(f for f in os.listdir(json_path) if f.lower().endswith(IMAGE_SUFFIXES))
    return [Entry(name, f, os.path.join(json_path, f), "test") for f in files], None


def hash_images(entries: list[Entry]) -> tuple[np.ndarray, np.ndarray]:
    """(packed hashes [N, 2], readable [N]); an unreadable image is logged and left out of every pair."""
    bits = np.zeros((len(entries), 64), bool)
    readable = np.ones(len(entries), bool)
    for i, entry in enumerate(tqdm(entries, desc="pHash", leave=False)):
        try:
            with Image.open(entry.path) as img:
                bits[i] = phash_bits(img)
        except (OSError, SyntaxError, ValueError) as e:
            log.warning("dedup: cannot read %s: %s", entry.path, e)
            readable[i] = False
    return pack(bits), readable


def cross_set_pairs(entries, readable, distances, indices, threshold: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) with i < j, different sets, both readable, distance <= threshold; closest first."""
    pairs = set()
    for i, (row_d, row_i) in enumerate(zip(distances, indices)):
        for d, j in zip(row_d, row_i):
            if d <= threshold and readable[i] and readable[j] and entries[i].dataset != entries[j].dataset:
                pairs.add((min(i, int(j)), max(i, int(j)), int(d)))
    return sorted(pairs, key=lambda p: (p[2], p[0], p[1]))


def groups(pairs, n: int) -> list[list[int]]:
    """Connected components (union-find) of the duplicate pairs, each sorted; singletons left out."""
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    for i in sorted({x for p in pairs for x in p[:2]}):
        members.setdefault(root(i), []).append(i)
    return sorted(members.values())


def to_remove(entries, pairs, order: list[str]) -> set[int]:
    """The train-side image of each pair whose partner is test data, or the later set's when both train."""
    removed = set()
    for i, j, _ in pairs:
        a, b = entries[i], entries[j]
        if a.split == "test" and b.split == "test":
            continue  # test data is never removed; reported in pairs.json
        if b.split == "test" or (a.split != "test" and order.index(a.dataset) > order.index(b.dataset)):
            removed.add(i)
        else:
            removed.add(j)
    return removed


def contact_sheet(entries, pairs, path: str, rows: int = 24, thumb: int = 128):
    """The closest pairs side by side with their distance and names."""
    shown = pairs[:rows]
    sheet = Image.new("RGB", (2 * thumb + 360, max(1, len(shown)) * (thumb + 8)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (i, j, d) in enumerate(shown):
        y = row * (thumb + 8)
        for col, k in enumerate((i, j)):
            with Image.open(entries[k].path) as img:
                sheet.paste(img.convert("RGB").resize((thumb, thumb)), (col * thumb, y))
        draw.text((2 * thumb + 8, y + 8), f"Hamming distance {d}", fill="black")
        for line, k in enumerate((i, j)):
            draw.text((2 * thumb + 8, y + 28 + 16 * line),
                      f"{entries[k].dataset}/{entries[k].filename} ({entries[k].split})", fill="black")
    sheet.save(path)


def deduplicate(sets: dict[str, str], out: str, threshold: int = 8, k: int = 16, unit: str = "bit") -> dict:
    """Runs the whole tool; returns the pairs.json summary."""
    entries, karpathy = [], {}
    for name, spec in sets.items():
        set_entries, karpathy[name] = read_entries(name, spec)
        entries += set_entries
    hashes, readable = hash_images(entries)
    distances, indices = hamming_neighbours(hashes, k=k, unit=unit)
    pairs = cross_set_pairs(entries, readable, distances, indices, threshold)
    removed = to_remove(entries, pairs, list(sets))
    os.makedirs(out, exist_ok=True)
    for name in sets:
        names = sorted(entries[i].filename for i in removed if entries[i].dataset == name)
        with open(os.path.join(out, f"{name}_duplicate.txt"), "w") as f:
            f.writelines(n + "\n" for n in names)
        if karpathy[name] is not None:
            dropped = set(names)
            kept = [im for im in karpathy[name]["images"] if im["filename"] not in dropped]
            with open(os.path.join(out, f"dataset_{name}_dedup.json"), "w") as f:
                json.dump({**karpathy[name], "images": kept}, f)
    def describe(i):
        return {"dataset": entries[i].dataset, "filename": entries[i].filename, "split": entries[i].split}

    summary = {"threshold": threshold, "unit": unit, "images": len(entries), "unreadable": int((~readable).sum()),
               "pairs": [{"distance": d, "a": describe(i), "b": describe(j)} for i, j, d in pairs],
               "groups": [[describe(i) for i in g] for g in groups(pairs, len(entries))],
               "removed": {name: sum(entries[i].dataset == name for i in removed) for name in sets}}
    with open(os.path.join(out, "pairs.json"), "w") as f:
        json.dump(summary, f, indent=1)
    contact_sheet(entries, pairs, os.path.join(out, "closest_pairs.png"))
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", action="append", required=True, metavar="NAME=JSON,IMAGES|NAME=DIR",
                        help="a Karpathy JSON and its image folder, or a folder of images; repeatable, or "
                             "several separated by ';'")
    parser.add_argument("--out", required=True, help="folder for the lists, JSON, pairs.json and the sheet")
    parser.add_argument("--threshold", type=int, default=8, help="largest distance counted as a duplicate")
    parser.add_argument("--unit", default="bit", choices=UNITS, help="count differing bits (of 64) or hex digits "
                                                                      "(of 16; RemoteCLIP: --threshold 1)")
    parser.add_argument("--neighbours", type=int, default=16, help="nearest hashes examined per image")
    args = parser.parse_args(argv)
    sets = {}
    for spec in (s for arg in args.sets for s in arg.split(";") if s):
        name, _, paths = spec.partition("=")
        if not (name and paths):
            parser.error(f"--sets {spec}: expected NAME=JSON,IMAGES or NAME=DIR")
        sets[name] = paths
    try:
        summary = deduplicate(sets, args.out, args.threshold, args.neighbours, args.unit)
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{len(summary['pairs'])} cross-set pairs within {args.threshold} {args.unit}s among {summary['images']} images; "
          "removed: " + ", ".join(f"{n} {c}" for n, c in summary["removed"].items()) + f" -> {args.out}")


if __name__ == "__main__":
    main()

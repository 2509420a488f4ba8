"""A synthetic benchmark root in SkyScript's layout (data/skyscript_benchmark.py), and a SkyScript-format
training CSV: what the SkyScript protocol and SkyScript-data tests and demos read, since nothing can be
downloaded. The eight scene sets, three fine-grained tasks (two label vocabularies each) and four
retrieval CSVs exercise what the real files hold: class-name and integer labels, rows without a label,
captions shared by several images and repeated for one image.

    python -m georsclip_jax.data.synthetic_skyscript --out DIR
"""

from __future__ import annotations

import argparse
import csv
import os
from typing import Callable

import numpy as np
from PIL import Image

from georsclip_jax.data import skyscript_benchmark as layout
from georsclip_jax.data.synthetic import CLASSES, draw_scene, make_caption, sample_rng

Draw = Callable[[int, np.random.Generator], Image.Image]  # (synthetic class, rng) -> image
FINE_GRAINED_CLASSES = {  # label_v1 vocabulary, and the coarser label_v2 class of each
    "roof_shape": {"gabled": "pitched", "hipped": "pitched", "flat": "flat", "pyramidal": "pitched",
                   "skillion": "pitched", "round": "round"},
    "smoothness": {"excellent": "smooth", "good": "smooth", "intermediate": "smooth", "bad": "rough",
                   "very bad": "rough"},
    "surface": {"asphalt": "paved", "concrete": "paved", "paving stones": "paved", "gravel": "unpaved",
                "dirt": "unpaved", "grass": "unpaved"},
}
INTEGER_LABELS = ("fmow", "rsicb256")  # sets whose CSV gives class indices rather than names


def default_draw(label: int, rng: np.random.Generator) -> Image.Image:
    return draw_scene(label % len(CLASSES), 64, rng)


def _write_csv(path: str, header: list[str], rows: list) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _write_lines(path: str, lines) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _save(root: str, relative: str, image: Image.Image) -> str:
    os.makedirs(os.path.dirname(os.path.join(root, relative)), exist_ok=True)
    image.save(os.path.join(root, relative), quality=90)
    return relative


def write_scene_set(root: str, name: str, per_class: int, seed: int, draw: Draw) -> None:
    spec = layout.SCENE_SETS[name]
    stream = 40 + list(layout.SCENE_SETS).index(name)
    classes = CLASSES[:5 + stream % 6]  # 5 to 10 classes, differing between sets
    rows = []
    for label, cls in enumerate(classes):
        for k in range(per_class):
            path = _save(root, f"{spec.folder}/images/{cls.replace(' ', '_')}_{k}.jpg",
                         draw(label, sample_rng(seed, label * 1000 + k, stream)))
            rows.append((path, label if name in INTEGER_LABELS else cls))
    rows.append((rows[0][0], ""))  # a row without a label: dropped, as SkyScript drops it
    _write_lines(os.path.join(root, spec.folder, "classnames.txt"), classes)
    _write_csv(os.path.join(root, spec.folder, spec.csv), ["filepath", "label"], rows)


def write_fine_grained_task(root: str, task: str, per_class: int, seed: int, draw: Draw) -> None:
    fine = FINE_GRAINED_CLASSES[task]
    coarse = sorted(set(fine.values()))
    stream = 60 + layout.FINE_GRAINED_TASKS.index(task)
    rows = []
    for label, cls in enumerate(fine):
        for k in range(per_class):
            path = _save(root, f"{task}/images/{cls.replace(' ', '_')}_{k}.jpg",
                         draw(label, sample_rng(seed, label * 1000 + k, stream)))
            rows.append((path, cls, fine[cls]))
    for version, names in (("v1", list(fine)), ("v2", coarse)):
        _write_lines(os.path.join(root, task, f"classnames_{version}.txt"), names)
    _write_csv(os.path.join(root, task, "img_txt_pairs_test.csv"), ["filepath", "label_v1", "label_v2"], rows)


def write_retrieval_csv(root: str, name: str, num_images: int, seed: int, draw: Draw) -> None:
    """Three rows per image; captions come from a small pool per class, so some are shared by several
    images and some repeat for one image (the many-to-many links SkyScript's notebook deduplicates)."""
    spec = layout.RETRIEVAL_SETS[name]
    stream = 70 + list(layout.RETRIEVAL_SETS).index(name)
    folder = "images2" if name == "SkyScript" else f"{name}/images"
    rows = []
    for i in range(num_images):
        rng = sample_rng(seed, i, stream)
        label = int(rng.integers(len(CLASSES)))
        path = _save(root, f"{folder}/{name}_{i:05d}.jpg", draw(label, rng))
        for _ in range(3):
            caption = make_caption(label, np.random.default_rng([seed, stream, label, int(rng.integers(3))]))
            rows.append((path, caption, f"{caption} next to {CLASSES[(label + 1) % len(CLASSES)]}"))
    if name == "SkyScript":
        rows.append((rows[0][0], rows[0][1], ""))  # a row without a caption is left out
        _write_csv(os.path.join(root, spec.csv), ["filepath", "title", "title_multi_objects"], rows)
    else:
        _write_csv(os.path.join(root, spec.csv), ["filepath", "title"], [r[:2] for r in rows])


def write_training_csv(root: str, num_samples: int, seed: int = 0, missing_every: int = 0, size: int = 64,
                       name: str = "SkyScript_train_top30pct_filtered_by_CLIP_openai.csv") -> str:
    """A SkyScript training CSV (`filepath`, `title`, `title_multi_objects`, comma-separated) and its
    `images2/` under `root`; every `missing_every`-th row has no `title` (SkyScript's loader would train
    on the string "nan"; ours skips and counts it). Returns the CSV's path."""
    rows = []
    for i in range(num_samples):
        rng = sample_rng(seed, i, stream=80)
        label = int(rng.integers(len(CLASSES)))
        path = _save(root, f"images2/n{1000 + i}_US_{18 + i % 5}.jpg", draw_scene(label, size, rng))
        title = "" if missing_every and i % missing_every == missing_every - 1 else make_caption(label, rng)
        rows.append((path, title, f"{make_caption(label, rng)[:-1]}, next to {CLASSES[(label + 3) % len(CLASSES)]}."))
    _write_csv(os.path.join(root, name), ["filepath", "title", "title_multi_objects"], rows)
    return os.path.join(root, name)


def write_skyscript_benchmark(root: str, per_class: int = 3, retrieval_images: int = 12, seed: int = 0,
                              draw: Draw = default_draw) -> str:
    """Every set of SkyScript's benchmark, under `root`."""
    for name in layout.SCENE_SETS:
        write_scene_set(root, name, per_class, seed, draw)
    for task in layout.FINE_GRAINED_TASKS:
        write_fine_grained_task(root, task, per_class, seed, draw)
    for name in layout.RETRIEVAL_SETS:
        write_retrieval_csv(root, name, retrieval_images, seed, draw)
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="the benchmark root to write")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--retrieval-images", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_skyscript_benchmark(args.out, args.per_class, args.retrieval_images, args.seed)
    print(f"wrote SkyScript's benchmark layout under {args.out}")


if __name__ == "__main__":
    main()

"""Readers for the evaluation sets, in the layouts GeoRSCLIP's numbers come from.

Classification: torchvision-ImageFolder trees (EuroSAT `2750/`, RESISC45, AID): classes are the
folder names in Python `sorted` order, files walked and sorted as ImageFolder does, and the class
names fed to the prompts follow GeoRSCLIP's rule (`_` and `/` to spaces, lowercased, nothing else).
Retrieval: GeoRSCLIP's `*_test.csv` (`filename`, `title`; RSICD in gb18030) grouped by image in
`np.unique` order, or Karpathy-style `dataset_*.json` splits. `rs5m_test_data(root)` finds them all.
TFDS-prepared classification sets (`tfds_set`) are read through tensorflow-datasets' data sources.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Sequence

import numpy as np
from PIL import Image

# torchvision.datasets.folder.IMG_EXTENSIONS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True)
class ClassificationSet:
    name: str
    images: Sequence             # image file paths, or any sequence of encoded image bytes
    labels: np.ndarray           # int32, index into classnames
    classnames: tuple[str, ...]  # as fed to the prompt templates

    def __len__(self) -> int:
        return len(self.images)

    def open(self, i: int) -> Image.Image:
        item = self.images[i]
        return Image.open(io.BytesIO(item) if isinstance(item, bytes) else item).convert("RGB")


@dataclasses.dataclass(frozen=True)
class RetrievalSet:
    name: str
    image_paths: tuple[str, ...]
    captions: tuple[str, ...]    # all captions, grouped per image in image order
    caption_image: np.ndarray    # int32 [num_captions]: the image each caption belongs to


def georsclip_classname(folder: str) -> str:
    return folder.replace("_", " ").replace("/", " ").lower()


def class_folder_set(root: str, name: str | None = None) -> ClassificationSet:
    """An ImageFolder tree read exactly as torchvision does (sorted classes, sorted walk)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"class-folder dataset not found: {root}")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise ValueError(f"{root} has no class folders")
    paths, labels = [], []
    for label, cls in enumerate(classes):
        for dirpath, _, filenames in sorted(os.walk(os.path.join(root, cls), followlinks=True)):
            for filename in sorted(filenames):
                if filename.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(dirpath, filename))
                    labels.append(label)
    if not paths:
        raise ValueError(f"{root}: {len(classes)} class folders but no images ({', '.join(IMAGE_EXTENSIONS)})")
    return ClassificationSet(name or os.path.basename(root.rstrip("/")), tuple(paths),
                             np.asarray(labels, np.int32), tuple(georsclip_classname(c) for c in classes))


# The TFDS classification sets GeoRSCLIP's users evaluate on, and the names their results carry.
TFDS_SETS = {"eurosat/rgb": "EuroSAT-tfds", "resisc45": "RESISC45-tfds", "uc_merced": "UCM-tfds"}


def newest_complete_version(data_dir: str, name: str) -> str:
    """`<data_dir>/<name>/<version>/` with the highest version whose preparation finished (TFDS prepares
    into `incomplete.*` and renames; a finished version has dataset_info.json)."""
    base = os.path.join(data_dir, *name.split("/"))
    versions = []
    for entry in (os.listdir(base) if os.path.isdir(base) else []):
        parts = entry.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts) and \
                os.path.isfile(os.path.join(base, entry, "dataset_info.json")):
            versions.append(tuple(map(int, parts)))
    if not versions:
        raise FileNotFoundError(f"no prepared TFDS dataset {name!r} under {data_dir} (expected "
                                f"{base}/<version>/dataset_info.json)")
    return os.path.join(base, ".".join(map(str, max(versions))))


class _EncodedImages(Sequence):
    """The encoded `image` feature of each record of a TFDS data source, read when asked for."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):
        if not 0 <= i < len(self.source):
            raise IndexError(i)  # ends iteration, as a Sequence must
        return self.source[i]["image"]


def tfds_set(data_dir: str, name: str = "eurosat/rgb", split: str = "train") -> ClassificationSet:
    """A TFDS classification dataset prepared under `data_dir` (`eurosat/rgb`, `resisc45`, `uc_merced`),
    read through tensorflow-datasets' random-access data source (ArrayRecord; no TensorFlow needed), the
    newest complete version. Class names come from the dataset's own `label` feature, through the same
    GeoRSCLIP rule as folder names."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError("reading TFDS datasets needs tensorflow-datasets: pip install 'georsclip-jax[tfds]'") from None
    root = newest_complete_version(data_dir, name)
    builder = tfds.builder_from_directory(root)
    if split not in builder.info.splits:
        raise FileNotFoundError(f"{root}: no split {split!r}; it has {sorted(builder.info.splits)}")
    try:
        source = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    except (NotImplementedError, ValueError) as e:  # TFDS: no random access for tfrecord-prepared sets
        raise ValueError(f"{root}: cannot read {split!r} by index ({e}); prepare it with "
                         "file_format='array_record'") from None
    labels = np.asarray([source[i]["label"] for i in range(len(source))], np.int32)
    classes = builder.info.features["label"].names
    return ClassificationSet(TFDS_SETS.get(name, name), _EncodedImages(source), labels,
                             tuple(georsclip_classname(c) for c in classes))


def retrieval_csv_set(csv_path: str, image_dir: str, name: str | None = None,
                      encoding: str | None = None) -> RetrievalSet:
    """GeoRSCLIP's CsvDataset + duplicate(): one row per caption, images in np.unique order."""
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"retrieval CSV not found: {csv_path}")
    encoding = encoding or ("gb18030" if "rsicd" in csv_path else "utf-8")
    with open(csv_path, newline="", encoding=encoding) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"retrieval CSV {csv_path} has no rows (expected filename,title per caption)")
    for column in ("filename", "title"):
        if rows and column not in rows[0]:
            raise KeyError(f"retrieval CSV {csv_path} has no {column!r} column; columns are {list(rows[0])}")
    filenames = [r["filename"] for r in rows]
    images = list(np.unique(filenames))
    by_image = {f: [] for f in images}
    for r in rows:
        by_image[r["filename"]].append(r["title"])
    return _retrieval_set(name or os.path.basename(os.path.dirname(csv_path)), image_dir, images,
                          [by_image[f] for f in images])


def karpathy_json_set(json_path: str, image_dir: str, split: str = "test", name: str | None = None) -> RetrievalSet:
    """RSICD / RSITMD `dataset_*.json`: the images of `split` in file order, each sentence's `raw`."""
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"Karpathy JSON not found: {json_path}")
    with open(json_path) as f:
        images = [im for im in json.load(f)["images"] if im["split"] == split]
    if not images:
        raise ValueError(f"{json_path} has no images in split {split!r}")
    return _retrieval_set(name or os.path.basename(os.path.dirname(json_path)), image_dir,
                          [im["filename"] for im in images], [[s["raw"] for s in im["sentences"]] for im in images])


def _retrieval_set(name, image_dir, filenames, captions_per_image) -> RetrievalSet:
    missing = [f for f in filenames if not os.path.isfile(os.path.join(image_dir, f))]
    if missing:
        raise FileNotFoundError(f"{name}: {len(missing)} images missing under {image_dir}, e.g. {missing[0]}")
    caption_image = np.repeat(np.arange(len(filenames), dtype=np.int32), [len(c) for c in captions_per_image])
    return RetrievalSet(name, tuple(os.path.join(image_dir, f) for f in filenames),
                        tuple(c for caps in captions_per_image for c in caps), caption_image)


def rs5m_test_data(root: str) -> dict:
    """Every set in GeoRSCLIP's `rs5m_test_data` layout, by GeoRSCLIP's names; AIR-SLT by path."""
    return {
        "EuroSAT": lambda: class_folder_set(os.path.join(root, "eurosat-rgb", "2750"), "EuroSAT"),
        "RESISC45": lambda: class_folder_set(os.path.join(root, "RESISC45"), "RESISC45"),
        "AID": lambda: class_folder_set(os.path.join(root, "AID"), "AID"),
        "rsitmd": lambda: retrieval_csv_set(os.path.join(root, "rsitmd", "rsitmd_test.csv"),
                                            os.path.join(root, "rsitmd", "images"), "rsitmd"),
        "rsicd": lambda: retrieval_csv_set(os.path.join(root, "rsicd", "rsicd_test.csv"),
                                           os.path.join(root, "rsicd", "RSICD_images"), "rsicd"),
        "AIR-SLT": os.path.join(root, "AIR-SLT"),
    }

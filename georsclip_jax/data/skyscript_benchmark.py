"""Readers for SkyScript's benchmark layout (specs/skyscript.md §4), as its evaluation code reads it.

One root folder (`ROOT_DATA_DIR`) holds the unzipped benchmark zips; every CSV's `filepath` is joined to
that root. Scene classification: `<set>/<csv>` (`filepath,label`) + `<set>/classnames.txt`, rows with an
empty label dropped, a label that is a class name mapped to its line in classnames.txt, an integer
label used as the index. Four sets are evaluated on their "train" CSVs, as SkyScript does (its issue #4):
`SceneSet.split` says which. Fine-grained attributes: `<task>/img_txt_pairs_test.csv` with `label_v1` /
`label_v2` and `classnames_v1.txt` / `classnames_v2.txt`. Retrieval: a CSV of (filepath, caption) rows,
unique images (sorted paths) and unique caption strings (sorted) linked many-to-many by the rows.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from georsclip_jax.data.eval_sets import ClassificationSet


@dataclasses.dataclass(frozen=True)
class SceneSet:
    folder: str
    csv: str
    split: str  # the split SkyScript evaluates on: "test", "val" or "train"


# benchmark_dataset_info.py; `rsicb256` is its folder and template key (the info dict's `rsicb` key is not).
SCENE_SETS = {
    "aid": SceneSet("aid", "aid_img_txt_pairs_test.csv", "test"),
    "eurosat": SceneSet("eurosat", "eurosat_img_txt_pairs_test.csv", "test"),
    "fmow": SceneSet("fmow", "fmow_img_txt_pairs_val.csv", "val"),
    "millionaid": SceneSet("millionaid", "img_txt_pairs_train.csv", "train"),
    "patternnet": SceneSet("patternnet", "img_txt_pairs_train.csv", "train"),
    "nwpu": SceneSet("nwpu", "img_txt_pairs_train.csv", "train"),
    "rsicb256": SceneSet("rsicb256", "img_txt_pairs_train.csv", "train"),
    "SkyScript_cls": SceneSet("SkyScript_cls", "img_txt_pairs_val.csv", "val"),
}
AVERAGED_SETS = ("aid", "eurosat", "fmow", "millionaid", "patternnet", "nwpu", "rsicb256")  # README's headline
FINE_GRAINED_TASKS = ("roof_shape", "smoothness", "surface")
LABEL_VERSIONS = ("label_v1", "label_v2")


@dataclasses.dataclass(frozen=True)
class RetrievalCsv:
    csv: str
    caption_column: str
    prefix: str  # prepended to every caption (cross_modal_retrieval.ipynb)


RETRIEVAL_SETS = {
    "RSICD": RetrievalCsv("RSICD/RSICD_img_txt_pairs_test.csv", "title", "a satellite image. "),
    "RSITMD": RetrievalCsv("RSITMD/RSITMD_img_txt_pairs_test.csv", "title", "a satellite image. "),
    "ucmcaptions": RetrievalCsv("ucmcaptions/ucmcaptions_img_txt_pairs_test.csv", "title", "a satellite image. "),
    "SkyScript": RetrievalCsv("SkyScript_test_30K_filtered_by_CLIP_openai.csv", "title_multi_objects", ""),
}


@dataclasses.dataclass(frozen=True)
class LinkedRetrievalSet:
    """Unique images and unique caption strings; `links` [L, 2] (text, image) pairs, one per distinct CSV row."""
    name: str
    image_paths: tuple[str, ...]
    texts: tuple[str, ...]
    links: np.ndarray


def read_rows(path: str, columns: tuple[str, ...]) -> list[dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SkyScript benchmark CSV not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise KeyError(f"{path} has no {missing[0]!r} column; its columns are {list(rows[0])}")
    return rows


def read_classnames(path: str) -> tuple[str, ...]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class names not found: {path}")
    with open(path, encoding="utf-8") as f:
        return tuple(line.strip() for line in f)  # as SkyScript reads them: every line, stripped


def _label_indices(labels: list[str], classnames: tuple[str, ...], where: str) -> np.ndarray:
    """pandas reads an all-integer column as integers (used as indices), anything else as class names."""
    if all(label.lstrip("-").isdigit() for label in labels):
        indices = np.asarray([int(label) for label in labels], np.int32)
    else:
        index = {name: i for i, name in enumerate(classnames)}
        unknown = sorted({label for label in labels if label not in index})
        if unknown:
            raise ValueError(f"{where}: label {unknown[0]!r} is not in its classnames file")
        indices = np.asarray([index[label] for label in labels], np.int32)
    if len(indices) and not (0 <= indices.min() and indices.max() < len(classnames)):
        raise ValueError(f"{where}: label index {int(indices.max())} is outside the {len(classnames)} class names")
    return indices


def classification_csv_set(root: str, csv_path: str, classnames_path: str, label_column: str = "label",
                           name: str | None = None) -> ClassificationSet:
    """CsvDatasetForClassification: rows with an empty label dropped, `filepath` joined to `root`."""
    rows = [r for r in read_rows(csv_path, ("filepath", label_column)) if (r[label_column] or "").strip()]
    classnames = read_classnames(classnames_path)
    labels = _label_indices([r[label_column].strip() for r in rows], classnames, f"{csv_path} column {label_column}")
    paths = tuple(os.path.join(root, r["filepath"]) for r in rows)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{csv_path}: {len(missing)} images missing, e.g. {missing[0]}")
    return ClassificationSet(name or os.path.basename(os.path.dirname(csv_path)), paths, labels, classnames)


def scene_set(root: str, name: str) -> ClassificationSet:
    spec = SCENE_SETS[name]
    folder = os.path.join(root, spec.folder)
    return classification_csv_set(root, os.path.join(folder, spec.csv), os.path.join(folder, "classnames.txt"),
                                  name=name)


def fine_grained_set(root: str, task: str, label_column: str) -> ClassificationSet:
    folder = os.path.join(root, task)
    version = label_column.removeprefix("label_")
    return classification_csv_set(root, os.path.join(folder, "img_txt_pairs_test.csv"),
                                  os.path.join(folder, f"classnames_{version}.txt"), label_column,
                                  name=f"{task}-{label_column}")


def linked_retrieval_set(root: str, name: str) -> LinkedRetrievalSet:
    """As cross_modal_retrieval.ipynb: `groupby` order (sorted) for images and for caption strings, so a
    caption shared by several images is one query whose every image counts as a hit."""
    spec = RETRIEVAL_SETS[name]
    path = os.path.join(root, spec.csv)
    rows = [r for r in read_rows(path, ("filepath", spec.caption_column)) if r[spec.caption_column]]
    pairs = [(spec.prefix + r[spec.caption_column], os.path.join(root, r["filepath"])) for r in rows]
    texts, images = sorted({t for t, _ in pairs}), sorted({p for _, p in pairs})
    missing = [p for p in images if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{path}: {len(missing)} images missing, e.g. {missing[0]}")
    text_id, image_id = {t: i for i, t in enumerate(texts)}, {p: i for i, p in enumerate(images)}
    links = np.unique(np.asarray([(text_id[t], image_id[p]) for t, p in pairs], np.int32).reshape(-1, 2), axis=0)
    return LinkedRetrievalSet(name, tuple(images), tuple(texts), links)

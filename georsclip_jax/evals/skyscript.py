"""SkyScript's evaluation protocol (specs/skyscript.md §4), beside GeoRSCLIP's in the same suite.

Zero-shot: two templates per set ("a satellite photo of {c}." / "a satellite image of {c}", with
"building, " / "road, " before the class for the fine-grained tasks); each prompt embedding normalized,
averaged, normalized again (zero_shot.py's rule); plain top-1 / top-5 over all images as fractions; the
headline is the mean top-1 of the seven sets in `AVERAGED_SETS`. Retrieval (cross_modal_retrieval.ipynb):
unique images and unique caption strings linked many-to-many, a query hits at k when any linked item is
among its k best; R@1/5/10/100 both ways as fractions, no mean recall. SkyScript encodes images under
fp16 autocast; this runs float32, so near-ties may order differently than on its GPU runs.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from georsclip_jax.data import skyscript_benchmark as layout
from georsclip_jax.evals.encoders import Encoders, path_loader
from georsclip_jax.evals.topk import topk_search
from georsclip_jax.evals.zeroshot import class_vectors

TASKS = ("scene", "fine_grained", "retrieval")
KS = (1, 5, 10, 100)
PREFIX = "skyscript/"  # result keys, so that both protocols' results share one dict
FINE_GRAINED_SUBJECT = {"roof_shape": "building, ", "smoothness": "road, ", "surface": "road, "}
log = logging.getLogger(__name__)


def templates(name: str) -> tuple[str, str]:
    """prompt_templates.py's two templates for a set or fine-grained task (a `{}` for the class name)."""
    subject = FINE_GRAINED_SUBJECT.get(name.split("-")[0], "")
    return f"a satellite photo of {subject}{{}}.", f"a satellite image of {subject}{{}}"


def zeroshot(encoders: Encoders, dataset, params=None) -> dict:
    """top1 / top5 fractions (top5 when there are 5 classes or more) and each image's top-1 class."""
    weights = class_vectors(encoders, dataset.classnames, templates(dataset.name), "clip_benchmark", params)
    # open_clip's val transform converts to RGB after the crop, as GeoRSCLIP's CSV sets do
    images = encoders.images([path_loader(p, convert_rgb=False) for p in dataset.images], params,
                             desc=f"{dataset.name} images")
    _, top = topk_search(images, weights, k=min(5, len(weights)), mesh=encoders.mesh)
    out = {"top1": float((top[:, 0] == dataset.labels).mean()), "predictions": top[:, 0].tolist()}
    if top.shape[1] == 5:
        out["top5"] = float((top == dataset.labels[:, None]).any(1).mean())
    return out


def linked_recall(query_emb: np.ndarray, gallery_emb: np.ndarray, links: np.ndarray, ks=KS, mesh=None) -> dict:
    """R@k (fractions) of each query: a hit when any gallery item linked to it is among its k best.
    links: [L, 2] (query index, gallery index) pairs."""
    k = min(max(ks), len(gallery_emb))
    _, top = topk_search(query_emb, gallery_emb, k, mesh=mesh)
    linked = np.isin(np.arange(len(query_emb))[:, None] * len(gallery_emb) + top,
                     links[:, 0].astype(np.int64) * len(gallery_emb) + links[:, 1])
    return {f"R@{k}": float(linked[:, :k].any(1).mean()) for k in ks}


def retrieval(encoders: Encoders, dataset: layout.LinkedRetrievalSet, params=None) -> dict[str, float]:
    images = encoders.images([path_loader(p, convert_rgb=False) for p in dataset.image_paths], params,
                             desc=f"{dataset.name} images")
    texts = encoders.texts(dataset.texts, params, desc=f"{dataset.name} captions")
    text2image = linked_recall(texts, images, dataset.links, mesh=encoders.mesh)
    image2text = linked_recall(images, texts, dataset.links[:, ::-1], mesh=encoders.mesh)
    return {**{f"text2image-{k}": v for k, v in text2image.items()},
            **{f"image2text-{k}": v for k, v in image2text.items()}}


class SkyScriptSuite:
    """Every SkyScript benchmark present under `root`; absent ones are skipped with their reason."""

    def __init__(self, encoders: Encoders, root: str, tasks=TASKS):
        unknown = set(tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown SkyScript task(s) {sorted(unknown)}; choose from {list(TASKS)}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"SkyScript benchmark root not found: {root}")
        self.encoders, self.skipped = encoders, {}
        loaders = {}
        if "scene" in tasks:
            loaders.update({name: (layout.scene_set, root, name) for name in layout.SCENE_SETS})
        if "fine_grained" in tasks:
            loaders.update({f"{task}-{column}": (layout.fine_grained_set, root, task, column)
                            for task in layout.FINE_GRAINED_TASKS for column in layout.LABEL_VERSIONS})
        self.classification = self._load(loaders)
        self.retrieval = self._load({name: (layout.linked_retrieval_set, root, name)
                                     for name in layout.RETRIEVAL_SETS}) if "retrieval" in tasks else {}
        if not (self.classification or self.retrieval):
            raise ValueError(f"{root}: no SkyScript benchmark found: " + "; ".join(self.skipped.values()))
        self.details: dict = {"skipped": self.skipped} if self.skipped else {}

    def _load(self, loaders: dict) -> dict:
        loaded = {}
        for name, (load, *args) in loaders.items():
            try:
                loaded[name] = load(*args)
            except (FileNotFoundError, ValueError, KeyError) as e:
                self.skipped[name] = str(e).strip("'\"")
                log.warning("skyscript: skipped %s: %s", name, self.skipped[name])
        return loaded

    def __call__(self, params=None) -> dict[str, float]:
        results = {}
        for name, dataset in self.classification.items():
            metrics = zeroshot(self.encoders, dataset, params)
            self.details[f"{name}-predictions"] = metrics.pop("predictions")
            results.update({f"{PREFIX}{name}-{key}": value for key, value in metrics.items()})
        averaged = [results.get(f"{PREFIX}{name}-top1") for name in layout.AVERAGED_SETS]
        if all(a is not None for a in averaged):
            results[f"{PREFIX}average-top1"] = float(np.mean(averaged))
        for name, dataset in self.retrieval.items():
            results.update({f"{PREFIX}retrieval-{key}-{name}": value
                            for key, value in retrieval(self.encoders, dataset, params).items()})
        return results


def markdown_tables(results: dict, model_name: str) -> str:
    """SkyScript's numbers in % (its README's unit for the headline); sets read from a "train" CSV are
    marked †, as SkyScript evaluates them."""
    def table(columns):
        return "\n".join(["| Model | " + " | ".join(h for h, _ in columns) + " |", "|---|" + "---|" * len(columns),
                          f"| {model_name} | " + " | ".join(f"{100 * results[k]:.2f}" for _, k in columns) + " |"])

    scene = [(f"{n}{'†' if layout.SCENE_SETS[n].split == 'train' else ''} top-1", f"{PREFIX}{n}-top1")
             for n in layout.SCENE_SETS]
    scene.append(("avg of 7 top-1", f"{PREFIX}average-top1"))
    fine = [(f"{task} {column.removeprefix('label_')} top-{k}", f"{PREFIX}{task}-{column}-top{k}")
            for task in layout.FINE_GRAINED_TASKS for column in layout.LABEL_VERSIONS for k in (1, 5)]
    retrieval_columns = [(f"{name} {d} R@{k}", f"{PREFIX}retrieval-{key}-R@{k}-{name}")
                         for name in layout.RETRIEVAL_SETS for d, key in (("T2I", "text2image"), ("I2T", "image2text"))
                         for k in KS]
    blocks = []
    for title, columns in (("SkyScript protocol: scene classification (%)", scene),
                           ("SkyScript protocol: fine-grained attributes (%)", fine),
                           ("SkyScript protocol: retrieval (%)", retrieval_columns)):
        present = [(h, k) for h, k in columns if k in results]
        if present:
            blocks.append(f"{title}\n\n{table(present)}")
    if any(layout.SCENE_SETS[n].split == "train" and f"{PREFIX}{n}-top1" in results for n in layout.SCENE_SETS):
        blocks.append("† evaluated on the set's train CSV, as SkyScript's benchmark_dataset_info.py does")
    return "\n\n".join(blocks)


# The same public dataset under both protocols: (GeoRSCLIP's result key, SkyScript's), both shown in %.
SHARED = [(f"{ours} top-1", f"{ours}-zeroshot-acc", f"{PREFIX}{theirs}-top1")
          for ours, theirs in (("AID", "aid"), ("EuroSAT", "eurosat"), ("RESISC45", "nwpu"))]
SHARED += [(f"{ours} {d} R@{k}", f"retrieval-{key}-R@{k}-{ours}", f"{PREFIX}retrieval-{key}-R@{k}-{theirs}")
           for ours, theirs in (("rsicd", "RSICD"), ("rsitmd", "RSITMD"))
           for d, key in (("T2I", "text2image"), ("I2T", "image2text")) for k in (1, 5, 10)]


def side_by_side(results: dict) -> str:
    """The datasets both protocols evaluate, one row each: GeoRSCLIP's number beside SkyScript's. They
    differ by design (splits, templates, class vectors, caption deduplication: specs/skyscript.md §6)."""
    rows = [f"| {label} | {results[ours]:.2f} | {100 * results[theirs]:.2f} |"
            for label, ours, theirs in SHARED if ours in results and theirs in results]
    if not rows:
        return ""
    return "\n".join(["Both protocols on the datasets they share (%; splits and prompts differ by design)", "",
                      "| dataset | GeoRSCLIP protocol | SkyScript protocol |", "|---|---:|---:|", *rows])

"""Zero-shot scene classification in GeoRSCLIP's protocol (or CLIP_benchmark's).

GeoRSCLIP: each class vector is the mean of the *unnormalized* embeddings of its 105 prompts, then
L2-normalized; CLIP_benchmark normalizes every prompt embedding before averaging. Images are scored
by cosine with the class vectors (GeoRSCLIP's x100 does not change the ranking); reported in percent:
top-1 over all images (GeoRSCLIP's number), top-5 and mean per-class recall.
"""

from __future__ import annotations

import numpy as np

from georsclip_jax.data.eval_sets import ClassificationSet
from georsclip_jax.evals.encoders import Encoders, path_loader
from georsclip_jax.evals.prompts import GEORSCLIP_TEMPLATES, fill
from georsclip_jax.evals.topk import topk_search

PROTOCOLS = ("georsclip", "clip_benchmark")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """torch.nn.functional.normalize: x / max(||x||, 1e-12)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_vectors(encoders: Encoders, classnames, templates=GEORSCLIP_TEMPLATES, protocol: str = "georsclip",
                  params=None) -> np.ndarray:
    """[num_classes, D] L2-normalized class embeddings."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown zero-shot protocol {protocol!r}; use one of {PROTOCOLS}")
    prompts = [fill(t, c) for c in classnames for t in templates]
    embeddings = encoders.texts(prompts, params, normalize=protocol == "clip_benchmark")
    return l2_normalize(embeddings.reshape(len(classnames), len(templates), -1).mean(axis=1))


def classification_metrics(top_classes: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Percentages from each image's classes in descending score order ([N, k])."""
    hit1 = top_classes[:, 0] == labels
    out = {"acc": 100 * float(hit1.mean())}
    if top_classes.shape[1] >= 5:
        out["acc5"] = 100 * float((top_classes[:, :5] == labels[:, None]).any(1).mean())
    recalls = [hit1[labels == c].mean() for c in range(num_classes) if (labels == c).any()]
    out["mean_per_class_recall"] = 100 * float(np.mean(recalls))
    return out


def image_embeddings(encoders: Encoders, dataset: ClassificationSet, params=None) -> np.ndarray:
    """[N, D] L2-normalized embeddings of the set's images (eval preprocessing)."""
    loaders = [path_loader(x) if isinstance(x, str) else (lambda i=i: dataset.open(i))
               for i, x in enumerate(dataset.images)]
    return encoders.images(loaders, params, desc=f"{dataset.name} images")


def evaluate_zeroshot(encoders: Encoders, dataset: ClassificationSet, params=None, protocol: str = "georsclip",
                      templates=GEORSCLIP_TEMPLATES, images: np.ndarray | None = None) -> dict[str, float]:
    """`images`: the set's embeddings, when already computed (image_embeddings)."""
    weights = class_vectors(encoders, dataset.classnames, templates, protocol, params)
    if images is None:
        images = image_embeddings(encoders, dataset, params)
    _, top = topk_search(images, weights, k=min(5, len(weights)), mesh=encoders.mesh)
    return classification_metrics(top, dataset.labels, len(dataset.classnames))

"""Cross-modal retrieval (RSICD, RSITMD) as GeoRSCLIP computes it with clip_benchmark's functions.

text->image R@k: a caption hits when its own image is among its k best images. image->text R@k: an
image hits when at least one of its captions is among its k best captions. Percentages, and mR,
the mean of the six. Top-k comes from the chunked, sharded kernel in `topk.py`, so galleries of
100k images x 500k captions are searched without ever forming the score matrix.
"""

from __future__ import annotations

import numpy as np

from georsclip_jax.data.eval_sets import RetrievalSet
from georsclip_jax.evals.encoders import Encoders, path_loader
from georsclip_jax.evals.topk import topk_search

KS = (1, 5, 10)


def retrieval_metrics(text_emb: np.ndarray, image_emb: np.ndarray, caption_image: np.ndarray, ks=KS,
                      chunk: int = 1024, mesh=None) -> dict[str, float]:
    k = max(ks)
    _, text_top = topk_search(text_emb, image_emb, min(k, len(image_emb)), chunk, mesh)
    _, image_top = topk_search(image_emb, text_emb, min(k, len(text_emb)), chunk, mesh)
    own_image = text_top == caption_image[:, None]                       # [texts, k]
    own_caption = caption_image[image_top] == np.arange(len(image_emb))[:, None]  # [images, k]
    out = {}
    for k in ks:
        out[f"image2text-R@{k}"] = 100 * float(own_caption[:, :k].any(1).mean())
        out[f"text2image-R@{k}"] = 100 * float(own_image[:, :k].any(1).mean())
    out["mean-recall"] = float(np.mean([out[f"{d}-R@{k}"] for d in ("image2text", "text2image") for k in ks]))
    return out


def evaluate_retrieval(encoders: Encoders, dataset: RetrievalSet, params=None, ks=KS) -> dict[str, float]:
    images = encoders.images([path_loader(p, convert_rgb=False) for p in dataset.image_paths], params,
                             desc=f"{dataset.name} images")
    texts = encoders.texts(dataset.captions, params, desc=f"{dataset.name} captions")
    return retrieval_metrics(texts, images, dataset.caption_image, ks, mesh=encoders.mesh)

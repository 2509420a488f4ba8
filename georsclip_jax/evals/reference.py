"""NumPy oracles for the metrics: the obvious full-matrix computations, kept slow and simple so the
jitted kernels have an independent reference."""

from __future__ import annotations

import numpy as np


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean([label in row for row, label in zip(order, labels)]))


def mean_per_class_recall(logits: np.ndarray, labels: np.ndarray) -> float:
    predictions = logits.argmax(1)
    return float(np.mean([np.mean(predictions[labels == c] == c) for c in np.unique(labels)]))


def retrieval_recalls(text_emb: np.ndarray, image_emb: np.ndarray, caption_image: np.ndarray,
                      ks=(1, 5, 10)) -> dict[str, float]:
    """Fractions: text->image (a caption's own image in its top k) and image->text (any own caption)."""
    scores = text_emb @ image_emb.T
    text_rank = np.argsort(-scores, axis=1, kind="stable")
    image_rank = np.argsort(-scores.T, axis=1, kind="stable")
    out = {}
    for k in ks:
        out[f"text2image_R@{k}"] = float(np.mean([caption_image[t] in text_rank[t, :k] for t in range(len(text_emb))]))
        out[f"image2text_R@{k}"] = float(np.mean([np.any(caption_image[image_rank[i, :k]] == i)
                                                  for i in range(len(image_emb))]))
    return out

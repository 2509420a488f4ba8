"""Metric kernels (8 simulated devices) against NumPy oracles with planted answers and against
clip_benchmark's own metric functions; GeoRSCLIP's 105 templates against the spec's expansion."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from georsclip_jax.evals import reference
from georsclip_jax.evals.prompts import GEORSCLIP_TEMPLATES
from georsclip_jax.evals.retrieval import retrieval_metrics
from georsclip_jax.evals.topk import topk_search
from georsclip_jax.evals.zeroshot import classification_metrics


def unit(rng, n, d=16):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_runs_on_eight_devices():
    assert jax.device_count() == 8


@pytest.mark.parametrize("queries,keys,k,chunk", [(50, 37, 10, 16), (300, 1000, 5, 64), (7, 9, 9, 1024)])
def test_topk_search_equals_a_full_sort(queries, keys, k, chunk):
    rng = np.random.default_rng(queries)
    q, kk = unit(rng, queries), unit(rng, keys)
    scores, index = topk_search(q, kk, k, chunk=chunk)
    expected = np.argsort(-(q @ kk.T), axis=1, kind="stable")[:, :k]
    assert np.array_equal(index, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ kk.T, expected, 1), atol=1e-6)


def test_topk_rejects_k_larger_than_the_gallery():
    with pytest.raises(ValueError, match="k=5 is larger than the 3 keys"):
        topk_search(np.ones((2, 4), np.float32), np.ones((3, 4), np.float32), 5)


def planted_retrieval(num_images=60, captions_per_image=5, seed=0):
    """Captions near their image, some of them displaced so that every rank outcome occurs."""
    rng = np.random.default_rng(seed)
    images = unit(rng, num_images)
    caption_image = np.repeat(np.arange(num_images), captions_per_image)
    noise = rng.uniform(0.1, 3.0, size=(len(caption_image), 1)).astype(np.float32)
    texts = images[caption_image] + noise * unit(rng, len(caption_image))
    return texts / np.linalg.norm(texts, axis=1, keepdims=True), images, caption_image


def test_retrieval_equals_the_numpy_oracle():
    texts, images, caption_image = planted_retrieval()
    ours = retrieval_metrics(texts, images, caption_image, chunk=32)
    oracle = reference.retrieval_recalls(texts, images, caption_image)
    for key, value in oracle.items():
        direction, k = key.split("_")
        assert ours[f"{direction}-{k}"] == pytest.approx(100 * value, abs=1e-9)
    assert 0 < ours["text2image-R@1"] < ours["text2image-R@10"] < 100  # the planted noise spreads ranks


def test_planted_perfect_retrieval_scores_100():
    rng = np.random.default_rng(1)
    images = unit(rng, 40)
    caption_image = np.repeat(np.arange(40), 2)
    texts = images[caption_image] + 1e-3 * unit(rng, 80)
    metrics = retrieval_metrics(texts / np.linalg.norm(texts, axis=1, keepdims=True), images, caption_image)
    assert all(v == 100.0 for v in metrics.values())


def test_retrieval_equals_clip_benchmark_recall_at_k():
    from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k

    texts, images, caption_image = planted_retrieval(seed=2)
    ours = retrieval_metrics(texts, images, caption_image)
    scores = torch.from_numpy(texts @ images.T)
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(texts)), torch.from_numpy(caption_image)] = True
    for k in (1, 5, 10):
        t2i = (recall_at_k(scores, positive, k) > 0).float().mean().item() * 100
        i2t = (recall_at_k(scores.T, positive.T, k) > 0).float().mean().item() * 100
        assert ours[f"text2image-R@{k}"] == pytest.approx(t2i, abs=1e-4)
        assert ours[f"image2text-R@{k}"] == pytest.approx(i2t, abs=1e-4)


def test_classification_metrics_equal_clip_benchmark_and_sklearn(monkeypatch):
    from clip_benchmark.metrics import zeroshot_classification
    from sklearn.metrics import balanced_accuracy_score

    # clip_benchmark's accuracy() calls float() on a 1-element array, which NumPy 2.4 refuses; give
    # its module a float() that takes .item() first. The metric logic itself is untouched.
    monkeypatch.setattr(zeroshot_classification, "float", lambda x: np.asarray(x).item(), raising=False)
    accuracy = zeroshot_classification.accuracy

    rng = np.random.default_rng(3)
    images, classes = unit(rng, 500), unit(rng, 12)
    labels = rng.integers(0, 12, 500)
    labels[:200] = (images[:200] @ classes.T).argmax(1)  # planted: 200 certain hits, imbalanced classes
    _, top = topk_search(images, classes, 5)
    ours = classification_metrics(top, labels, 12)
    logits = torch.from_numpy(100 * images @ classes.T)
    acc1, acc5 = accuracy(logits, torch.from_numpy(labels), topk=(1, 5))
    assert ours["acc"] == pytest.approx(100 * acc1, abs=1e-9)
    assert ours["acc5"] == pytest.approx(100 * acc5, abs=1e-9)
    assert ours["mean_per_class_recall"] == pytest.approx(
        100 * balanced_accuracy_score(labels, logits.argmax(1).numpy()), abs=1e-9)
    assert ours["acc"] == pytest.approx(100 * reference.topk_accuracy(logits.numpy(), labels, 1))
    assert ours["mean_per_class_recall"] == pytest.approx(100 * reference.mean_per_class_recall(logits.numpy(), labels))


def test_georsclip_templates_match_the_spec():
    block1 = ("a remote sensing image of many {}. | a remote sensing image of a {}. | a remote sensing image of "
              "the {}. | a remote sensing image of the hard to see {}. | a remote sensing image of a hard to see "
              "{}. | a low resolution remote sensing image of the {}. | a low resolution remote sensing image of a "
              "{}. | a bad remote sensing image of the {}. | a bad remote sensing image of a {}. | a cropped remote "
              "sensing image of the {}. | a cropped remote sensing image of a {}. | a bright remote sensing image "
              "of the {}. | a bright remote sensing image of a {}. | a dark remote sensing image of the {}. | a "
              "dark remote sensing image of a {}. | a close-up remote sensing image of the {}. | a close-up remote "
              "sensing image of a {}. | a black and white remote sensing image of the {}. | a black and white "
              "remote sensing image of a {}. | a jpeg corrupted remote sensing image of the {}. | a jpeg corrupted "
              "remote sensing image of a {}. | a blurry remote sensing image of the {}. | a blurry remote sensing "
              "image of a {}. | a good remote sensing image of the {}. | a good remote sensing image of a {}. | a "
              "remote sensing image of the large {}. | a remote sensing image of a large {}. | a remote sensing "
              "image of the nice {}. | a remote sensing image of a nice {}. | a remote sensing image of the small "
              "{}. | a remote sensing image of a small {}. | a remote sensing image of the weird {}. | a remote "
              "sensing image of a weird {}. | a remote sensing image of the cool {}. | a remote sensing image of a "
              "cool {}.").split(" | ")
    assert len(GEORSCLIP_TEMPLATES) == 105 and list(GEORSCLIP_TEMPLATES[:35]) == block1
    assert GEORSCLIP_TEMPLATES[35] == "an aerial image of many {}."
    assert GEORSCLIP_TEMPLATES[40] == "a low resolution aerial image of the {}."
    assert GEORSCLIP_TEMPLATES[70] == "a satellite image of many {}."

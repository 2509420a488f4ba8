"""Our global-view losses equal open_clip's ClipLoss / SigLipLoss; padding rows change nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from georsclip_jax.losses import clip_loss, siglip_loss


def features(n=12, d=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_clip_loss_equals_open_clip():
    from open_clip.loss import ClipLoss

    image, text = features()
    reference = ClipLoss()(torch.from_numpy(image), torch.from_numpy(text), torch.tensor(14.3))
    assert abs(float(clip_loss(image, text, np.float32(14.3))) - reference.item()) < 1e-5


def test_siglip_loss_equals_open_clip():
    from open_clip.loss import SigLipLoss

    image, text = features(seed=1)
    reference = SigLipLoss()(torch.from_numpy(image), torch.from_numpy(text), torch.tensor(10.0), torch.tensor(-10.0))
    assert abs(float(siglip_loss(image, text, np.float32(10.0), np.float32(-10.0))) - reference.item()) < 1e-5


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_padding_rows_are_ignored(loss):
    image, text = features(n=10, seed=2)
    junk_image, junk_text = features(n=4, seed=3)
    padded_image, padded_text = np.concatenate([image, junk_image]), np.concatenate([text, junk_text])
    mask = np.arange(14) < 10
    fn = (lambda i, t, m=None: clip_loss(i, t, np.float32(20.0), m)) if loss == "clip" else (
        lambda i, t, m=None: siglip_loss(i, t, np.float32(10.0), np.float32(-5.0), m))
    assert abs(float(fn(padded_image, padded_text, mask)) - float(fn(image, text))) < 1e-5

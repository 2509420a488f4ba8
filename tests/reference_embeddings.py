"""The embeddings a loaded model and its open_clip reference are compared on: two fixed images and
captions, normalized (tests/test_hub.py, tests/test_published_checkpoints.py,
benchmarks/check_published_checkpoints.py)."""

from __future__ import annotations

import numpy as np
import torch

import georsclip_jax as gj


def embeddings(model, reference: bool, image_size: int = 32):
    """Normalized image and text embeddings of two fixed inputs, from ours or (reference) an open_clip model."""
    pixels = np.random.default_rng(0).normal(size=(2, image_size, image_size, 3)).astype(np.float32)
    tokens = gj.get_tokenizer()(["a roundabout between fields", "a harbour with boats"])
    if reference:
        with torch.no_grad():
            return (model.encode_image(torch.from_numpy(pixels.transpose(0, 3, 1, 2)), normalize=True).numpy(),
                    model.encode_text(torch.from_numpy(tokens.astype(np.int64)), normalize=True).numpy())
    return np.asarray(model.encode_image(pixels, normalize=True)), np.asarray(model.encode_text(tokens, normalize=True))

"""Contrastive losses in global view: every row of the batch against every column of the batch.

Written over the whole (global) batch; under `jax.jit` with batch-sharded inputs each device computes
its rows of the logits against all columns, which is open_clip's `local_loss + gather_with_grad`
objective with no axis names in the step. `mask` marks real rows; padding rows neither contribute a
loss term nor act as negatives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _valid(mask, n):
    return jnp.ones((n,), bool) if mask is None else mask.astype(bool)


def clip_loss(image_features: jax.Array, text_features: jax.Array, logit_scale: jax.Array,
              mask: jax.Array | None = None) -> jax.Array:
    """open_clip ClipLoss: mean of image->text and text->image cross-entropy, targets on the diagonal.

    `logit_scale` is the exponentiated scale (model output), features are L2-normalized."""
    valid = _valid(mask, image_features.shape[0])
    logits = logit_scale * image_features.astype(jnp.float32) @ text_features.astype(jnp.float32).T
    positives = jnp.diagonal(logits)
    pair = valid[:, None] & valid[None, :]
    masked = jnp.where(pair, logits, -jnp.inf)
    image_to_text = jax.nn.logsumexp(masked, axis=1) - positives
    text_to_image = jax.nn.logsumexp(masked, axis=0) - positives
    count = jnp.maximum(valid.sum(), 1)
    return (jnp.where(valid, image_to_text + text_to_image, 0.0).sum() / count) / 2


def siglip_loss(image_features: jax.Array, text_features: jax.Array, logit_scale: jax.Array,
                logit_bias: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """SigLIP sigmoid loss (open_clip SigLipLoss): -sum log sigmoid(label * logit) / batch size."""
    valid = _valid(mask, image_features.shape[0])
    logits = logit_scale * image_features.astype(jnp.float32) @ text_features.astype(jnp.float32).T + logit_bias
    labels = 2 * jnp.eye(logits.shape[0], dtype=logits.dtype) - 1
    pair = valid[:, None] & valid[None, :]
    return -jnp.where(pair, jax.nn.log_sigmoid(labels * logits), 0.0).sum() / jnp.maximum(valid.sum(), 1)

"""The train step: a pure function (state, batch) -> (state, metrics), jitted by the loop.

Gradient accumulation over micro-batches keeps the full-batch contrastive objective, as open_clip's
`--accum-freq`: every micro-batch's features are first computed without gradients; then, micro-batch
by micro-batch, its features are recomputed with gradients and the loss is taken over the whole
batch (cached features for the others). The summed gradients are exactly the full-batch gradient —
open_clip's logit_scale gradient is additionally counted once per micro-batch; here it is counted
once (only the first micro-batch lets it through), so accumulation and one big batch agree.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from georsclip_jax.losses import clip_loss, siglip_loss
from georsclip_jax.models.lora import seed_dropout
from georsclip_jax.sharding import param_path
from georsclip_jax.transforms import normalize_pixels

MAX_LOGIT_SCALE = math.log(100.0)


class TrainState(NamedTuple):
    step: jax.Array
    params: Any     # nnx.State of the trainable partition (train/partition.py)
    opt_state: Any


def clamp_logit_scale(params):
    """open_clip clamps logit_scale to [0, ln 100] after every update."""
    return jax.tree_util.tree_map_with_path(
        lambda key, leaf: jnp.clip(leaf, 0, MAX_LOGIT_SCALE) if param_path(key) == "logit_scale" else leaf, params)


def make_forward(graphdef, mean=None, std=None):
    """forward(params, frozen, batch, key=None) -> the model's output dict.

    `params` and `frozen` are the two partitions of the model state; uint8 images are normalized on
    device; `key`, if given, turns on the LoRA adapters' dropout."""
    def forward(params, frozen, batch, key=None):
        model = nnx.merge(graphdef, params, frozen)
        if key is not None:
            seed_dropout(model, key)
        images = batch["image"]
        if images.dtype == jnp.uint8:
            images = normalize_pixels(images, mean, std)
        return model(images, batch["tokens"])
    return forward


def contrastive_loss(loss: str, out, image_features, text_features, mask, scale_gate=True):
    """CLIP or SigLIP loss; `scale_gate` False stops the gradient into logit_scale / logit_bias."""
    gate = (lambda x: x) if scale_gate is True else (lambda x: jnp.where(scale_gate, x, jax.lax.stop_gradient(x)))
    if loss == "siglip":
        return siglip_loss(image_features, text_features, gate(out["logit_scale"]), gate(out["logit_bias"]), mask)
    return clip_loss(image_features, text_features, gate(out["logit_scale"]), mask)


def make_train_step(graphdef, optimizer, lr_schedule, loss: str = "clip", accum_steps: int = 1,
                    mean=None, std=None, dropout_seed: int | None = None):
    """train_step(state, frozen, batch): gradients only for `state.params` (the trainable partition);
    `frozen` is read, never updated. mean/std normalize uint8 batches on device; `dropout_seed` (for
    LoRA dropout) gives step s, micro-batch i the key fold_in(fold_in(key(seed), s), i)."""
    forward = make_forward(graphdef, mean, std)

    def objective(out, image_features, text_features, mask, scale_gate=True):
        return contrastive_loss(loss, out, image_features, text_features, mask, scale_gate)

    def full_batch_grads(params, frozen, batch, key):
        def loss_fn(p):
            out = forward(p, frozen, batch, key)
            return objective(out, out["image_features"], out["text_features"], batch["mask"]), out
        (value, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return value, grads, out["logit_scale"]

    def accumulated_grads(params, frozen, batch, key):
        micro = jax.tree.map(lambda x: x.reshape(accum_steps, -1, *x.shape[1:]), batch)
        micro_key = lambda i: None if key is None else jax.random.fold_in(key, i)
        constant = jax.lax.stop_gradient(params)

        def features(i):
            out = forward(constant, frozen, jax.tree.map(lambda x: x[i], micro), micro_key(i))
            return out["image_features"], out["text_features"]
        cached = jax.lax.map(features, jnp.arange(accum_steps))
        flat = lambda x: x.reshape(-1, x.shape[-1])

        def body(grads, i):
            def loss_fn(p):
                out = forward(p, frozen, jax.tree.map(lambda x: x[i], micro), micro_key(i))
                images = flat(cached[0].at[i].set(out["image_features"]))
                texts = flat(cached[1].at[i].set(out["text_features"]))
                return objective(out, images, texts, batch["mask"], scale_gate=i == 0), out["logit_scale"]
            (value, scale), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
            return jax.tree.map(jnp.add, grads, g), (value, scale)

        zeros = jax.tree.map(jnp.zeros_like, params)
        grads, (values, scales) = jax.lax.scan(body, zeros, jnp.arange(accum_steps))
        return values[0], grads, scales[0]

    def train_step(state: TrainState, frozen, batch: dict):
        key = None if dropout_seed is None else jax.random.fold_in(jax.random.key(dropout_seed), state.step)
        value, grads, scale = (accumulated_grads if accum_steps > 1 else full_batch_grads)(
            state.params, frozen, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = clamp_logit_scale(optax.apply_updates(state.params, updates))
        metrics = {"loss": value, "grad_norm": optax.tree.norm(grads), "lr": lr_schedule(state.step),
                   "logit_scale": scale, "l2_params": optax.tree.norm(params), "l2_updates": optax.tree.norm(updates)}
        return TrainState(state.step + 1, params, opt_state), metrics

    return train_step

"""The train step: a pure function (state, batch) -> (state, metrics), jitted by the loop.

Gradient accumulation over micro-batches keeps the full-batch contrastive objective, as open_clip's
`--accum-freq`: every micro-batch's features are first computed without gradients; then, micro-batch
by micro-batch, its features are recomputed with gradients and the loss is taken over the whole
batch (cached features for the others). The summed gradients are exactly the full-batch gradient —
open_clip's logit_scale gradient is additionally counted once per micro-batch; here it is counted
once (only the first micro-batch lets it through), so accumulation and one big batch agree.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from georsclip_jax.losses import clip_loss, siglip_loss
from georsclip_jax.sharding import param_path
from georsclip_jax.transforms import normalize_pixels

MAX_LOGIT_SCALE = float(jnp.log(100.0))


class TrainState(NamedTuple):
    step: jax.Array
    params: Any     # nnx.State of the trainable parameters
    opt_state: Any


def clamp_logit_scale(params):
    """open_clip clamps logit_scale to [0, ln 100] after every update."""
    return jax.tree_util.tree_map_with_path(
        lambda key, leaf: jnp.clip(leaf, 0, MAX_LOGIT_SCALE) if param_path(key) == "logit_scale" else leaf, params)


def make_forward(graphdef, rest, mean=None, std=None):
    """forward(params, batch) -> the model's output dict; uint8 images are normalized on device."""
    def forward(params, batch):
        model = nnx.merge(graphdef, params, rest)
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


def make_train_step(graphdef, rest, optimizer, lr_schedule, loss: str = "clip", accum_steps: int = 1,
                    mean=None, std=None):
    """`rest` holds the non-trainable state; mean/std normalize uint8 batches on device."""
    forward = make_forward(graphdef, rest, mean, std)

    def objective(out, image_features, text_features, mask, scale_gate=True):
        return contrastive_loss(loss, out, image_features, text_features, mask, scale_gate)

    def full_batch_grads(params, batch):
        def loss_fn(p):
            out = forward(p, batch)
            return objective(out, out["image_features"], out["text_features"], batch["mask"]), out
        (value, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return value, grads, out["logit_scale"]

    def accumulated_grads(params, batch):
        micro = jax.tree.map(lambda x: x.reshape(accum_steps, -1, *x.shape[1:]), batch)
        frozen = jax.lax.stop_gradient(params)
        cached = jax.lax.map(lambda mb: (lambda o: (o["image_features"], o["text_features"]))(forward(frozen, mb)), micro)
        flat = lambda x: x.reshape(-1, x.shape[-1])

        def body(grads, i):
            def loss_fn(p):
                out = forward(p, jax.tree.map(lambda x: x[i], micro))
                images = flat(cached[0].at[i].set(out["image_features"]))
                texts = flat(cached[1].at[i].set(out["text_features"]))
                return objective(out, images, texts, batch["mask"], scale_gate=i == 0), out["logit_scale"]
            (value, scale), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
            return jax.tree.map(jnp.add, grads, g), (value, scale)

        zeros = jax.tree.map(jnp.zeros_like, params)
        grads, (values, scales) = jax.lax.scan(body, zeros, jnp.arange(accum_steps))
        return values[0], grads, scales[0]

    def train_step(state: TrainState, batch: dict):
        value, grads, scale = (accumulated_grads if accum_steps > 1 else full_batch_grads)(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = clamp_logit_scale(optax.apply_updates(state.params, updates))
        metrics = {"loss": value, "grad_norm": optax.tree.norm(grads), "lr": lr_schedule(state.step),
                   "logit_scale": scale}
        return TrainState(state.step + 1, params, opt_state), metrics

    return train_step

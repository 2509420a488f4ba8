"""AdamW with open_clip's weight-decay exclusions, its warmup + cosine schedule, and clipping.

open_clip excludes from weight decay every parameter with fewer than 2 dimensions, every norm, every
bias and `logit_scale`; here that is a mask over parameter paths (dimensions counted per layer for a
scanned tower's stacked parameters). The cosine schedule is open_clip's
`cosine_lr`: lr * (step + 1) / warmup during warmup, then half a cosine down to 0 at the last step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from georsclip_jax.models.stacking import is_stacked
from georsclip_jax.sharding import param_path

NO_DECAY_NAMES = ("bias", "logit_scale", "logit_bias", "ln_", "norm")


def decays(path: str, ndim: int) -> bool:
    layer_ndim = ndim - 1 if is_stacked(path) else ndim
    return layer_ndim >= 2 and not any(name in path for name in NO_DECAY_NAMES)


def weight_decay_mask(params):
    return jax.tree_util.tree_map_with_path(lambda key, leaf: decays(param_path(key), leaf.ndim), params)


def schedule(name: str, lr: float, warmup_steps: int, total_steps: int):
    def warmup(step):
        return lr * (step + 1) / max(warmup_steps, 1)

    if name == "constant":
        return lambda step: jnp.where(step < warmup_steps, warmup(step), lr)
    if name == "cosine":
        def cosine(step):
            progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
            # 0.5 (1 + cos(pi p)) written as cos^2(pi p / 2): no cancellation near the end in float32
            return jnp.where(step < warmup_steps, warmup(step), jnp.cos(jnp.pi * progress / 2) ** 2 * lr)
        return cosine
    raise ValueError(f"config.optim.schedule: unknown schedule {name!r}; use 'cosine' or 'constant'")


def make_optimizer(optim, total_steps: int, params):
    """optax chain from `config.optim` (lr, b1, b2, eps, weight_decay, warmup_steps, schedule,
    grad_clip_norm); returns (optimizer, lr schedule)."""
    lr = schedule(optim.schedule, optim.lr, optim.warmup_steps, total_steps)
    parts = [optax.clip_by_global_norm(optim.grad_clip_norm)] if optim.grad_clip_norm else []
    parts.append(optax.adamw(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay,
                             mask=weight_decay_mask(params)))
    return optax.chain(*parts), lr

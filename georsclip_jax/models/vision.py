"""The ViT image tower (open_clip `VisionTransformer`, `pool_type='tok'`), NHWC input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from georsclip_jax.models.configs import VisionConfig
from georsclip_jax.models.layers import LayerNorm, ModelOptions, Transformer


class VisionTransformer(nnx.Module):
    def __init__(self, cfg: VisionConfig, embed_dim: int, act: str, opts: ModelOptions, rngs: nnx.Rngs):
        w = cfg.width
        scale = w**-0.5
        self.dtype = opts.dtype
        self.conv1 = nnx.Conv(
            3, w, kernel_size=(cfg.patch_size, cfg.patch_size), strides=cfg.patch_size, padding="VALID",
            use_bias=False, dtype=opts.dtype, param_dtype=opts.param_dtype, rngs=rngs,
        )
        self.class_embedding = nnx.Param(scale * jax.random.normal(rngs.params(), (w,), opts.param_dtype))
        self.positional_embedding = nnx.Param(
            scale * jax.random.normal(rngs.params(), (cfg.num_positions, w), opts.param_dtype)
        )
        self.ln_pre = LayerNorm(w, opts)
        self.transformer = Transformer(w, cfg.layers, cfg.heads, cfg.mlp_width, act, opts, rngs)
        self.ln_post = LayerNorm(w, opts)
        self.proj = nnx.Param(scale * jax.random.normal(rngs.params(), (w, embed_dim), opts.param_dtype))

    def __call__(self, images: jax.Array) -> jax.Array:
        """images: normalized float [B, H, W, 3] -> unnormalized features [B, embed_dim]."""
        x = self.conv1(images.astype(self.dtype))  # [B, g, g, W]
        b, gh, gw, w = x.shape
        x = x.reshape(b, gh * gw, w)  # row-major patches, as open_clip's flatten
        cls = jnp.broadcast_to(self.class_embedding[...].astype(x.dtype), (b, 1, w))
        x = jnp.concatenate([cls, x], axis=1) + self.positional_embedding[...].astype(x.dtype)
        x = self.transformer(self.ln_pre(x), causal=False)
        pooled = self.ln_post(x[:, 0])
        return pooled @ self.proj[...].astype(pooled.dtype)


def resize_pos_embed(pos_embed, new_grid: int):
    """Resize a [1 + g*g, W] positional table to a new grid, as open_clip's `resize_pos_embed`:
    the class row is kept, the grid is resized with antialiased bicubic (align_corners=False)."""
    cls, grid = pos_embed[:1], pos_embed[1:]
    old_grid = round(grid.shape[0] ** 0.5)
    if old_grid**2 != grid.shape[0]:
        raise ValueError(f"positional embedding with {grid.shape[0]} patch rows is not a square grid")
    grid = grid.reshape(old_grid, old_grid, -1).astype(jnp.float32)
    resized = jax.image.resize(grid, (new_grid, new_grid, grid.shape[-1]), method="bicubic", antialias=True)
    return jnp.concatenate([jnp.asarray(cls, jnp.float32), resized.reshape(new_grid * new_grid, -1)], axis=0)

"""The causal text tower, with open_clip's top-level attribute names.

open_clip's `CLIP` unpacks its text tower into top-level attributes (`token_embedding`,
`positional_embedding`, `transformer`, `ln_final`, `text_projection`); `CLIP` subclasses `TextTower`
so that our parameter paths are the same.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from georsclip_jax.models.configs import TextConfig
from georsclip_jax.models.layers import LayerNorm, ModelOptions, Transformer


class TextTower(nnx.Module):
    def __init__(self, cfg: TextConfig, embed_dim: int, act: str, opts: ModelOptions, rngs: nnx.Rngs):
        w, layers = cfg.width, cfg.layers
        normal = jax.nn.initializers.normal
        # Initialisation of open_clip's TextTransformer.init_parameters / OpenAI's initialize_parameters.
        proj_std = w**-0.5 * (2 * layers) ** -0.5
        self.context_length = cfg.context_length
        self.text_dtype = opts.dtype
        self.token_embedding = nnx.Embed(
            cfg.vocab_size, w, dtype=opts.dtype, param_dtype=opts.param_dtype,
            embedding_init=normal(0.02), rngs=rngs,
        )
        self.positional_embedding = nnx.Param(normal(0.01)(rngs.params(), (cfg.context_length, w), opts.param_dtype))
        self.transformer = Transformer(
            w, layers, cfg.heads, cfg.mlp_width, act, opts, rngs,
            attn_init=(normal(w**-0.5), normal(proj_std)), mlp_init=(normal((2 * w) ** -0.5), normal(proj_std)),
        )
        self.ln_final = LayerNorm(w, opts)
        self.text_projection = nnx.Param(normal(w**-0.5)(rngs.params(), (w, embed_dim), opts.param_dtype))

    def text_features(self, tokens: jax.Array) -> jax.Array:
        """tokens: int [B, context_length] -> unnormalized features [B, embed_dim].

        Pools at argmax(tokens): EOT (49407) is the largest id and argmax returns the first maximum.
        """
        if tokens.shape[-1] != self.context_length:
            raise ValueError(f"tokens must have length {self.context_length}, got shape {tokens.shape}")
        x = self.token_embedding(tokens) + self.positional_embedding[...].astype(self.text_dtype)
        x = self.ln_final(self.transformer(x, causal=True))
        pooled = jnp.take_along_axis(x, jnp.argmax(tokens, axis=-1)[:, None, None], axis=1)[:, 0]
        return pooled @ self.text_projection[...].astype(pooled.dtype)

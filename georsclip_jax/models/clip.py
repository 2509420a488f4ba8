"""The CLIP model: image tower, text tower, learnable logit scale (and optional bias)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from georsclip_jax.models.configs import CLIPConfig, PreprocessConfig
from georsclip_jax.models.layers import ModelOptions
from georsclip_jax.models.text import TextTower
from georsclip_jax.models.vision import VisionTransformer


def l2_normalize(x: jax.Array) -> jax.Array:
    """x / max(||x||, 1e-12), as torch.nn.functional.normalize."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


TEXT_TOWER_ROOTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


def tower(path: str) -> str | None:
    """'image' for `visual/...`, 'text' for the text tower's top-level paths, None for the shared
    `logit_scale` / `logit_bias`."""
    root = path.split("/", 1)[0]
    return "image" if root == "visual" else "text" if root in TEXT_TOWER_ROOTS else None


class CLIP(TextTower):
    """open_clip's `CLIP`; parameter paths equal its state-dict names (see interop/open_clip.py)."""

    def __init__(
        self,
        config: CLIPConfig,
        options: ModelOptions = ModelOptions(),
        preprocess: PreprocessConfig | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        super().__init__(config.text, config.embed_dim, config.act, options, rngs)
        self.config = config
        self.options = options
        self.preprocess = preprocess or PreprocessConfig(image_size=config.vision.image_size)
        self.visual = VisionTransformer(config.vision, config.embed_dim, config.act, options, rngs)
        self.logit_scale = nnx.Param(jnp.asarray(config.init_logit_scale, options.param_dtype))
        if config.init_logit_bias is not None:
            self.logit_bias = nnx.Param(jnp.asarray(config.init_logit_bias, options.param_dtype))

    def encode_image(self, images: jax.Array, normalize: bool = False) -> jax.Array:
        """images: preprocessed float [B, H, W, 3] (NHWC) -> [B, embed_dim]."""
        features = self.visual(images)
        return l2_normalize(features) if normalize else features

    def encode_text(self, tokens: jax.Array, normalize: bool = False) -> jax.Array:
        """tokens: int [B, 77] from `get_tokenizer` -> [B, embed_dim]."""
        features = self.text_features(tokens)
        return l2_normalize(features) if normalize else features

    def __call__(self, images: jax.Array, tokens: jax.Array) -> dict[str, jax.Array]:
        """Normalized features and the exponentiated scale, as open_clip's forward(output_dict=True)."""
        out = {
            "image_features": self.encode_image(images, normalize=True),
            "text_features": self.encode_text(tokens, normalize=True),
            "logit_scale": jnp.exp(self.logit_scale[...].astype(jnp.float32)),
        }
        if self.config.init_logit_bias is not None:
            out["logit_bias"] = self.logit_bias[...].astype(jnp.float32)
        return out

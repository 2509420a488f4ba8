"""Between an NNX model and a flat {'visual/conv1/kernel': array} dict of its parameters.

The dicts always use open_clip's per-layer names (`.../resblocks/<i>/...`); a scanned model's stacked
blocks are split into layers on the way out and stacked on the way in (models/stacking.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from georsclip_jax.interop import open_clip
from georsclip_jax.models.clip import CLIP
from georsclip_jax.models.configs import CLIPConfig, PreprocessConfig
from georsclip_jax.models.layers import ModelOptions
from georsclip_jax.models.stacking import gather_layers, unstack, unstack_shapes
from georsclip_jax.models.vision import resize_pos_embed
from georsclip_jax.sharding import place

PROGRESS_BYTES = 256 * 2**20  # show a progress bar for checkpoints larger than this


def _path(key: tuple) -> str:
    return "/".join(map(str, key))


def flat_params(model: CLIP, which=nnx.Param) -> dict[str, np.ndarray]:
    """Host copies of every parameter (of the `which` filter), keyed by per-layer path."""
    return unstack({_path(k): np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(model, which))})


def param_shapes(model: CLIP, which=nnx.Param) -> dict[str, tuple]:
    """Every parameter's shape, keyed by per-layer path (works on abstract models)."""
    return unstack_shapes({_path(k): v.get_value().shape for k, v in nnx.to_flat_state(nnx.state(model, which))})


def abstract_model(config: CLIPConfig, options: ModelOptions = ModelOptions(),
                   preprocess: PreprocessConfig | None = None) -> CLIP:
    """The model's structure with ShapeDtypeStructs instead of arrays: nothing is allocated."""
    return nnx.eval_shape(lambda: CLIP(config, options, preprocess, rngs=nnx.Rngs(0)))


def check_params(model: CLIP, params: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Match `params` to the model's parameters or raise one error naming every problem.

    A visual positional embedding for another grid is resized (open_clip's `resize_pos_embed`).
    """
    expected = param_shapes(model)
    params = dict(params)
    pos = "visual/positional_embedding"
    if pos in params and params[pos].shape != expected[pos] and params[pos].ndim == 2:
        params[pos] = resize_pos_embed(params[pos], model.config.vision.grid_size)
    missing = sorted(_open_clip_name(k) for k in set(expected) - set(params))
    unexpected = sorted(_open_clip_name(k) for k in set(params) - set(expected))
    mismatched = [
        f"{_open_clip_name(k)}: file {_open_clip_shape(k, params[k].shape)} vs model "
        f"{_open_clip_shape(k, expected[k])}"
        for k in sorted(set(params) & set(expected))
        if tuple(params[k].shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match the model ({_describe(model.config)}):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items))
        raise ValueError("\n".join(lines))
    return params


def _open_clip_name(path: str) -> str:
    """Errors speak the checkpoint's language: open_clip key names and layouts."""
    return open_clip.open_clip_key(path)[0]


def _open_clip_shape(path: str, shape) -> tuple:
    return tuple(open_clip.open_clip_key(path)[1](np.broadcast_to(np.float32(0), shape)).shape)


def _describe(cfg: CLIPConfig) -> str:
    v, t = cfg.vision, cfg.text
    return (f"vision {v.layers}x{v.width} patch {v.patch_size} @ {v.image_size}px, "
            f"text {t.layers}x{t.width}, embed {cfg.embed_dim}")


def materialize(model: CLIP, params: dict[str, np.ndarray], shardings=None) -> CLIP:
    """Fill an (abstract) model with `params` (per-layer names; layers of a scanned tower are stacked),
    cast to the model's param dtype and, if given, placed straight into `shardings` (a State of
    jax.sharding.Sharding mirroring the parameters). Variables whose names are absent keep their value.

    Consumes `params`: each entry is removed once placed, so host memory is released as loading goes.
    """
    graphdef, state = nnx.split(model)
    placement = dict(nnx.to_flat_state(shardings)) if shardings is not None else {}
    large = sum(a.nbytes for a in params.values()) > PROGRESS_BYTES
    for key, variable in tqdm(list(nnx.to_flat_state(state)), desc="loading weights", unit="tensor", disable=not large):
        current = variable.get_value()
        value = gather_layers(params, _path(key), current.shape[0] if current.ndim else 0)
        if value is not None:
            value = (place(np.asarray(value).astype(current.dtype), placement[key].get_value()) if key in placement
                     else jnp.asarray(value, dtype=current.dtype))
            variable.set_value(value)
    return nnx.merge(graphdef, state)

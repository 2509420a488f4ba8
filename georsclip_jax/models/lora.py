"""LoRA: low-rank adapters attached to the model's Linear layers, and their merge into the base.

An adapter on a Linear with kernel W [in, out] adds (alpha / rank) · (dropout(x) · A) · B to its
output, as peft's `LoraLayer`. A [in, rank] starts as PyTorch's Linear init (peft's kaiming-uniform
with a = √5), B [rank, out] starts at zero, so a fresh adapter leaves the model unchanged. Our A is
peft's `lora_A.weight` transposed and our B its `lora_B.weight` transposed.

Adapters live at `<layer>/lora/lora_a|lora_b` next to the untouched base `<layer>/kernel`, and are
`LoRAParam`s, so partitions (`train/partition.py`) can select them by type. On a scanned tower's
stacked layers (models/stacking.py) the adapters are stacked alike, one independent adapter per layer.
"""

from __future__ import annotations

import dataclasses
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from georsclip_jax.models.clip import CLIP, tower
from georsclip_jax.models.layers import TORCH_LINEAR_INIT, Linear, stacked
from georsclip_jax.models.stacking import is_stacked, layer_paths

TARGETS = ("attn/in_proj", "attn/out_proj", "mlp/c_fc", "mlp/c_proj")
TOWERS = ("image", "text")
LORA_SUFFIXES = ("/lora/lora_a", "/lora/lora_b")


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """targets: layer names matched against the end of each Linear's path (`in_proj` or `attn/in_proj`);
    towers: which of `image`, `text` get adapters."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = TARGETS
    towers: tuple[str, ...] = TOWERS

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LoRAConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class LoRAParam(nnx.Param):
    """An adapter weight: trainable under LoRA, absent from the base model."""


class LoRA(nnx.Module):
    def __init__(self, d_in: int, d_out: int, config: LoRAConfig, param_dtype, rngs: nnx.Rngs):
        self.lora_a = LoRAParam(TORCH_LINEAR_INIT(rngs.params(), (d_in, config.rank), param_dtype))
        self.lora_b = LoRAParam(jnp.zeros((config.rank, d_out), param_dtype))
        self.scale = config.scale
        self.dropout = nnx.Dropout(config.dropout) if config.dropout else None
        self.dropout_key = nnx.data(None)  # dropout is on only in a train step, which sets this key

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        if self.dropout is not None and self.dropout_key is not None:
            h = self.dropout(x, deterministic=False, rngs=self.dropout_key)
        return (h @ self.lora_a[...].astype(x.dtype)) @ self.lora_b[...].astype(x.dtype) * self.scale


def target_layers(model: CLIP, config: LoRAConfig) -> list[tuple[str, Linear]]:
    """(path, layer) of every Linear the config targets, in graph order."""
    unknown = [t for t in config.towers if t not in TOWERS]
    if unknown:
        raise ValueError(f"LoRA towers {unknown} are not among {TOWERS}")
    found = []
    for key, node in nnx.iter_graph(model):
        path = "/".join(map(str, key))
        if isinstance(node, Linear) and tower(path) in config.towers and any(
                path == t or path.endswith("/" + t) for t in config.targets):
            found.append((path, node))
    if not found:
        raise ValueError(f"LoRA targets {list(config.targets)} match no Linear layer in towers {list(config.towers)}")
    return found


def add_lora(model: CLIP, config: LoRAConfig, rngs: nnx.Rngs) -> CLIP:
    """Attach fresh adapters (B = 0: outputs unchanged) to the targeted layers, in place."""
    if config.rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {config.rank}")
    if has_lora(model):
        raise ValueError("the model already has LoRA adapters")
    for path, layer in target_layers(model, config):
        make = lambda r: LoRA(layer.in_features, layer.out_features, config, layer.param_dtype, r)
        layer.lora = stacked(make, layer.kernel.shape[0], rngs) if is_stacked(path) else make(rngs)
    model.lora_config = config
    return model


def has_lora(model: CLIP) -> bool:
    return getattr(model, "lora_config", None) is not None


def is_lora_path(path: str) -> bool:
    return path.endswith(LORA_SUFFIXES)


def seed_dropout(model: CLIP, key: jax.Array) -> None:
    """Give each adapter's dropout its own key: the train step's key folded with a hash of the
    adapter's per-layer name, so scanned and unrolled models draw the same masks. Models whose
    adapters have no key (eval, export) run without dropout."""
    for path, layer in target_layers(model, model.lora_config):
        keys = [jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)
                for name in layer_paths(path, layer.kernel.shape[0])]
        layer.lora.dropout_key = jnp.stack(keys) if is_stacked(path) else keys[0]


def merge_params(params: dict[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
    """Fold each adapter into its base kernel, W + scale · A · B (in float32), and drop the adapters."""
    merged = {k: v for k, v in params.items() if not is_lora_path(k)}
    for key in params:
        if key.endswith(LORA_SUFFIXES[0]):
            layer = key.removesuffix(LORA_SUFFIXES[0])
            a = np.asarray(params[key], np.float32)
            b = np.asarray(params[layer + LORA_SUFFIXES[1]], np.float32)
            kernel = merged[layer + "/kernel"]
            merged[layer + "/kernel"] = (np.asarray(kernel, np.float32) + scale * (a @ b)).astype(kernel.dtype)
    return merged


def merge_lora(model: CLIP) -> CLIP:
    """A plain CLIP (no adapters) whose kernels hold W + (alpha/rank) · A · B: what exports write."""
    from georsclip_jax.interop.params import abstract_model, flat_params, materialize

    if not has_lora(model):
        return model
    params = merge_params(flat_params(model), model.lora_config.scale)
    return materialize(abstract_model(model.config, model.options, model.preprocess), params)

"""Adapter-only checkpoints: a model's LoRA weights, and which base they belong to.

A directory with `adapter.safetensors` (the `.../lora/lora_a|lora_b` tensors by parameter path; a few
MB where the base is hundreds) and `adapter_config.json` (LoRA config, base architecture and base
fingerprint). `load_adapter` attaches them to a base model and refuses a different base.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from georsclip_jax.interop import safetensors_io
from georsclip_jax.interop.params import flat_params, materialize, param_shapes
from georsclip_jax.models.clip import CLIP
from georsclip_jax.models.configs import CLIPConfig
from georsclip_jax.models.lora import LoRAConfig, LoRAParam, add_lora, has_lora
from georsclip_jax.models.stacking import unstack, unstack_shapes

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
FORMAT_VERSION = 1


def is_base(key: tuple, variable) -> bool:
    return isinstance(variable, nnx.Param) and not isinstance(variable, LoRAParam)


def base_fingerprint(model: CLIP) -> str:
    """sha256 over every base parameter's per-layer path, shape, dtype and a strided sample of its
    values (at most 5 per axis): cheap, the same whatever the sharding, process count or layer
    layout (scanned or not), different for another base."""
    from jax.experimental import multihost_utils

    flat = {"/".join(map(str, k)): v.get_value() for k, v in nnx.to_flat_state(nnx.state(model, is_base))}
    sample = lambda x: x[tuple(slice(None, None, max(1, d // 4)) for d in x.shape)]
    # a stacked [L, ...] leaf gives L per-layer samples, as the unrolled model's layers would
    samples = jax.jit(lambda tree: {k: sample(x) for k, x in unstack(tree).items()})(flat)
    samples = (multihost_utils.process_allgather(samples, tiled=True) if jax.process_count() > 1
               else jax.device_get(samples))
    shapes = unstack_shapes({k: v.shape for k, v in flat.items()})
    digest = hashlib.sha256()
    for path in sorted(samples, key=layer_order):
        digest.update(f"{path}:{shapes[path]}:{samples[path].dtype};".encode())
        digest.update(np.ascontiguousarray(samples[path], np.float32).tobytes())
    return digest.hexdigest()


def layer_order(path: str) -> tuple:
    """Sort key: paths in name order, layer indices numerically (layer 10 after layer 9)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.split("/"))


def adapter_params(model: CLIP) -> dict[str, np.ndarray]:
    return flat_params(model, LoRAParam)


def save_adapter(model: CLIP, directory: str | Path, base: str | None = None) -> Path:
    """Write the adapters only. `base`: the base's fingerprint if already known (else computed)."""
    if not has_lora(model):
        raise ValueError("the model has no LoRA adapters to save")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    safetensors_io.save(directory / ADAPTER_WEIGHTS, adapter_params(model), {"format": "georsclip_jax.lora"})
    meta = {"format_version": FORMAT_VERSION, "lora": model.lora_config.to_dict(), "model": model.config.to_dict(),
            "base_fingerprint": base or base_fingerprint(model)}
    tmp = directory / (ADAPTER_CONFIG + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(directory / ADAPTER_CONFIG)
    return directory


def load_adapter(model: CLIP, directory: str | Path, check_base: bool = True) -> CLIP:
    """Attach the saved adapters to `model` (a base without adapters), in place.

    Raises ValueError naming the file when the architecture differs, when the base is not the one the
    adapters were trained on (unless `check_base=False`), or when tensors are missing or misshapen."""
    directory = Path(directory)
    config_path = directory / ADAPTER_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no adapter config (is this a save_adapter directory?)")
    meta = json.loads(config_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{config_path}: unsupported format_version {meta.get('format_version')!r}")
    if CLIPConfig.from_dict(meta["model"]) != model.config:
        raise ValueError(f"{config_path}: the adapters are for another architecture than this model's")
    if check_base and meta["base_fingerprint"] != base_fingerprint(model):
        raise ValueError(f"{config_path}: the adapters were trained on another base (fingerprint "
                         f"{meta['base_fingerprint'][:12]}, this model's is {base_fingerprint(model)[:12]}); "
                         "pass check_base=False to load them anyway")
    add_lora(model, LoRAConfig.from_dict(meta["lora"]), nnx.Rngs(0))
    saved, _ = safetensors_io.load(directory / ADAPTER_WEIGHTS)
    expected = param_shapes(model, LoRAParam)
    problems = ([f"missing {p}" for p in sorted(set(expected) - set(saved))] +
                [f"unexpected {p}" for p in sorted(set(saved) - set(expected))] +
                [f"{p}: shape {saved[p].shape}, expected {expected[p]}" for p in sorted(set(saved) & set(expected))
                 if saved[p].shape != expected[p]])
    if problems:
        raise ValueError(f"{directory / ADAPTER_WEIGHTS}: " + "; ".join(problems))
    nnx.update(model, nnx.state(materialize(model, saved), LoRAParam))
    return model

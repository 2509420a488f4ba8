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
from georsclip_jax.models.clip import CLIP
from georsclip_jax.models.configs import CLIPConfig
from georsclip_jax.models.lora import LoRAConfig, LoRAParam, add_lora, has_lora

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
FORMAT_VERSION = 1


def is_base(key: tuple, variable) -> bool:
    return isinstance(variable, nnx.Param) and not isinstance(variable, LoRAParam)


def base_fingerprint(model: CLIP) -> str:
    """sha256 over every base parameter's path, shape, dtype and a strided sample of its values (at
    most 5 per axis): cheap, the same whatever the sharding or process count, different for another base."""
    from jax.experimental import multihost_utils

    flat = nnx.to_flat_state(nnx.state(model, is_base))
    sample = lambda x: x[tuple(slice(None, None, max(1, d // 4)) for d in x.shape)]
    samples = jax.jit(lambda leaves: [sample(x) for x in leaves])([v.get_value() for _, v in flat])
    samples = (multihost_utils.process_allgather(samples, tiled=True) if jax.process_count() > 1
               else jax.device_get(samples))
    digest = hashlib.sha256()
    for (key, variable), values in zip(flat, samples):
        value = variable.get_value()
        digest.update(f"{'/'.join(map(str, key))}:{value.shape}:{value.dtype};".encode())
        digest.update(np.ascontiguousarray(values, np.float32).tobytes())
    return digest.hexdigest()


def adapter_params(model: CLIP) -> dict[str, np.ndarray]:
    return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model, LoRAParam))}


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
    expected = nnx.to_flat_state(nnx.state(model, LoRAParam))
    paths = {"/".join(map(str, k)) for k, _ in expected}
    problems = [f"missing {p}" for p in sorted(paths - set(saved))] + [f"unexpected {p}" for p in sorted(set(saved) - paths)]
    for key, variable in expected:
        path = "/".join(map(str, key))
        if path in saved and saved[path].shape != variable.get_value().shape:
            problems.append(f"{path}: shape {saved[path].shape}, expected {variable.get_value().shape}")
    if problems:
        raise ValueError(f"{directory / ADAPTER_WEIGHTS}: " + "; ".join(problems))
    for key, variable in expected:
        variable.set_value(jax.numpy.asarray(saved["/".join(map(str, key))], variable.get_value().dtype))
    return model

"""Read any CLIP checkpoint a GeoRSCLIP user has into an open_clip-named float32 state dict.

Accepted: open_clip / GeoRSCLIP / ITRA state dicts and training checkpoints (`.pt`, `.bin`,
`.safetensors`), OpenAI TorchScript archives, open_clip local dirs (`open_clip_config.json`),
Hugging Face `CLIPModel` folders (`config.json` + safetensors or bin, sharded or not).
Our own `save_pretrained` dirs are read by `georsclip_jax.factory`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from georsclip_jax.interop import hf, open_clip, openai_jit, registry, safetensors_io, torch_pickle
from georsclip_jax.models.configs import CLIPConfig, PreprocessConfig

OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclasses.dataclass
class Checkpoint:
    state_dict: dict[str, np.ndarray]  # open_clip names, float32
    source: str
    config: CLIPConfig | None = None  # when the checkpoint says (HF, open_clip dirs)
    act: str | None = None  # when only the activation is known (OpenAI TorchScript, a registered file name)
    preprocess: PreprocessConfig | None = None
    known: registry.KnownCheckpoint | None = None  # a published file (registry.py)


def read_tensor_file(path: Path) -> dict[str, np.ndarray]:
    """A flat tensor dict from .safetensors or a torch pickle (never executed)."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return safetensors_io.load(path)[0]
    return torch_pickle.load(path, select=open_clip.unwrap)  # weights only: optimizer state is never read


def read_checkpoint(pretrained: str | Path) -> Checkpoint:
    path = Path(pretrained)
    if path.is_dir():
        if (path / "open_clip_config.json").is_file():
            return _read_open_clip_dir(path)
        if (path / "config.json").is_file():
            return read_hf_dir(path)
        raise ValueError(f"{path}: directory has neither open_clip_config.json nor config.json")
    if openai_jit.is_torchscript(path):
        sd = open_clip.normalize_state_dict(openai_jit.load_state_dict(path))
        return Checkpoint(sd, str(path), act=openai_jit.activation_from_code(path))
    known = registry.lookup(path)
    return Checkpoint(open_clip.normalize_state_dict(read_tensor_file(path)), str(path),
                      act=known.act if known else None, known=known)


def _read_open_clip_dir(path: Path) -> Checkpoint:
    meta = json.loads((path / "open_clip_config.json").read_text())
    weights = next((path / n for n in OPEN_CLIP_WEIGHTS if (path / n).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{path}: none of {OPEN_CLIP_WEIGHTS} found")
    pre = meta.get("preprocess_cfg", {})
    preprocess = PreprocessConfig(
        image_size=meta["model_cfg"]["vision_cfg"].get("image_size", 224),
        **{k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()
           if k in ("mean", "std", "interpolation", "resize_mode")},
    )
    return Checkpoint(
        open_clip.normalize_state_dict(read_tensor_file(weights)), str(weights),
        config=CLIPConfig.from_open_clip_json(meta["model_cfg"]), preprocess=preprocess,
    )


def read_hf_dir(path: Path) -> Checkpoint:
    config = hf.config_from_hf(json.loads((path / "config.json").read_text()))
    tensors: dict[str, np.ndarray] = {}
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index_name).is_file():
            shards = sorted(set(json.loads((path / index_name).read_text())["weight_map"].values()))
            for shard in shards:
                tensors.update(read_tensor_file(path / shard))
            break
    else:
        weights = next((path / n for n in HF_WEIGHTS if (path / n).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{path}: none of {HF_WEIGHTS} (or a sharded index) found")
        tensors = read_tensor_file(weights)
    sd = open_clip.normalize_state_dict(hf.hf_to_open_clip(tensors))
    preprocess = None
    if (path / "preprocessor_config.json").is_file():
        preprocess = hf.preprocess_from_hf(json.loads((path / "preprocessor_config.json").read_text()),
                                           config.vision.image_size)
    return Checkpoint(sd, str(path), config=config, preprocess=preprocess)

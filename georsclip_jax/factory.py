"""open_clip-style entry points: create_model, save_pretrained, export_open_clip, export_hf."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
from flax import nnx

from georsclip_jax import hub
from georsclip_jax.interop import checkpoints, hf, model_card, open_clip, registry, safetensors_io
from georsclip_jax.interop.params import abstract_model, check_params, flat_params, materialize
from georsclip_jax.models.clip import CLIP
from georsclip_jax.models.configs import CLIPConfig, PreprocessConfig, get_model_config
from georsclip_jax.models.layers import ModelOptions
from georsclip_jax.models.lora import merge_lora
from georsclip_jax.tokenizer import get_tokenizer

OUR_CONFIG = "georsclip_config.json"
OUR_WEIGHTS = "params.safetensors"
FORMAT_VERSION = 1


def create_model(
    model_name: str | CLIPConfig | None = None,
    pretrained: str | Path | None = None,
    *,
    act: str | None = None,
    image_size: int | None = None,
    options: ModelOptions = ModelOptions(),
    seed: int = 0,
    shardings=None,
    init_logit_scale: float | None = None,
    init_logit_bias: float | None = None,
) -> CLIP:
    """Build a CLIP by open_clip name (or config), optionally loading weights.

    pretrained: our `save_pretrained` dir, an open_clip/GeoRSCLIP/ITRA `.pt`/`.bin`/`.safetensors`,
    an OpenAI TorchScript `.pt`, an open_clip local dir, a Hugging Face CLIPModel folder, or a Hub id
    (`hf-hub:ORG/NAME[@REVISION][/file]`, hub.py).
    act: 'gelu' | 'quick_gelu'; overrides what the name or file says. Needed when neither tells,
    i.e. a bare state dict loaded without a model name.
    shardings: optional parameter shardings; weights are placed straight into them.
    init_logit_scale, init_logit_bias: as open_clip's (SigLIP: log 10 and -10). A bias the weights lack
    starts at 0 (open_clip's load_checkpoint); the weights' logit scale is kept.
    """
    config = get_model_config(model_name) if isinstance(model_name, str) else model_name
    if pretrained is None:
        if config is None:
            raise ValueError("create_model needs a model name or config when no pretrained weights are given")
        config = _override(config, act, image_size, init_logit_bias)
        if init_logit_scale is not None:
            config = config.replace(init_logit_scale=init_logit_scale)
        return CLIP(config, options, rngs=nnx.Rngs(seed))
    if hub.is_hub_id(pretrained):
        pretrained = hub.resolve(pretrained)
    config, preprocess, params, source = _read_weights(Path(pretrained), config, act)
    config = _override(config, act, image_size, init_logit_bias)
    if config.init_logit_bias is not None and "logit_bias" not in params:
        params["logit_bias"] = np.zeros((), np.float32)  # as open_clip's load_checkpoint
    if preprocess is None or image_size:
        preprocess = dataclasses.replace(preprocess or PreprocessConfig(), image_size=config.vision.image_size)
    model = abstract_model(config, options, preprocess)
    params = check_params(model, params, source)  # rebinding leaves `params` the only reference to the
    return materialize(model, params, shardings)  # host arrays, so materialize frees each once placed


def _read_weights(pretrained: Path, named: CLIPConfig | None, act: str | None):
    """(config, preprocess or None, our-path params, source name) from any supported checkpoint."""
    if (pretrained / OUR_CONFIG).is_file():
        config, preprocess, params = _read_ours(pretrained)
        return config, preprocess, params, str(pretrained / OUR_WEIGHTS)
    ckpt = checkpoints.read_checkpoint(pretrained)
    config = _resolve_config(named, ckpt, act)
    return config, ckpt.preprocess, open_clip.to_ours(ckpt.state_dict), ckpt.source


def _override(config: CLIPConfig, act: str | None, image_size: int | None, logit_bias: float | None) -> CLIPConfig:
    if logit_bias is not None and config.init_logit_bias is None:
        config = config.replace(init_logit_bias=logit_bias)
    if act is not None:
        config = config.replace(act=act)
    if image_size is not None:
        config = config.replace(vision=dataclasses.replace(config.vision, image_size=image_size))
    return config


def _resolve_config(named: CLIPConfig | None, ckpt: checkpoints.Checkpoint, act: str | None) -> CLIPConfig:
    """The file's own config if it has one, else the named one, else inferred from shapes."""
    config = ckpt.config or named
    if config is None:
        file_act = act or ckpt.act
        if file_act is None:
            raise ValueError(
                f"{ckpt.source}: the activation cannot be read from a bare state dict, and its file name is not "
                "a published checkpoint's (interop/registry.py); pass a model name (e.g. 'ViT-B-32-quickgelu' "
                "for OpenAI-derived weights) or act='quick_gelu' / act='gelu'"
            )
        inferred = open_clip.infer_config(ckpt.state_dict, file_act)
        return registry.published_config(ckpt.known, inferred, ckpt.source) if ckpt.known else inferred
    if ckpt.act is not None and ckpt.act != config.act and act is None:
        warnings.warn(f"{ckpt.source} was built with {ckpt.act}; the model name says {config.act}. "
                      f"Using {ckpt.act}, as the weights were trained with it.")
        config = config.replace(act=ckpt.act)
    return config


# ---- our own format -------------------------------------------------------------------------------

def save_pretrained(model: CLIP, directory: str | Path) -> Path:
    """Config (architecture, activation, preprocessing) + parameters, loadable by create_model.
    LoRA adapters are merged into the kernels (`save_adapter` keeps them apart)."""
    model = merge_lora(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    safetensors_io.save(directory / OUR_WEIGHTS, flat_params(model), {"format": "georsclip_jax"})
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "preprocess": dataclasses.asdict(model.preprocess),
    }
    _write_json(directory / OUR_CONFIG, meta)
    return directory


def _read_ours(directory: Path):
    meta = json.loads((directory / OUR_CONFIG).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory / OUR_CONFIG}: unsupported format_version {meta.get('format_version')!r}")
    config = CLIPConfig.from_dict(meta["model"])
    pre = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["preprocess"].items()}
    params, _ = safetensors_io.load(directory / OUR_WEIGHTS)
    return config, PreprocessConfig(**pre), params


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


# ---- export to PyTorch ecosystems -------------------------------------------------------------------

def open_clip_state_dict(model: CLIP) -> dict[str, np.ndarray]:
    """open_clip's state dict; LoRA adapters are merged into the kernels (open_clip has none)."""
    model = merge_lora(model)
    return open_clip.from_ours({k: np.asarray(v, np.float32) for k, v in flat_params(model).items()})


def open_clip_metadata(model: CLIP) -> dict:
    """open_clip_config.json content: what `create_model_from_pretrained('local-dir:...')` reads."""
    pre = model.preprocess
    return {
        "model_cfg": model.config.to_open_clip_json(),
        "preprocess_cfg": {"mean": list(pre.mean), "std": list(pre.std), "interpolation": pre.interpolation,
                           "resize_mode": pre.resize_mode},
    }


def export_open_clip(model: CLIP, out: str | Path) -> Path:
    """Write open_clip weights. A directory gets open_clip's local-dir layout
    (open_clip_model.safetensors + open_clip_config.json); a `.safetensors` or `.pt` file gets the bare
    state dict plus `<stem>_config.json` beside it. `.pt` needs torch (written with torch.save)."""
    out = Path(out)
    sd = open_clip_state_dict(model)
    if out.suffix not in (".safetensors", ".pt", ".bin"):
        out.mkdir(parents=True, exist_ok=True)
        safetensors_io.save(out / checkpoints.OPEN_CLIP_WEIGHTS[0], sd)
        _write_json(out / "open_clip_config.json", open_clip_metadata(model))
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        safetensors_io.save(out, sd)
    else:
        _torch_save(sd, out)
    _write_json(out.with_name(out.stem + "_config.json"), open_clip_metadata(model))
    return out


def _torch_save(sd: dict[str, np.ndarray], out: Path) -> None:
    try:
        import torch
    except ImportError:
        raise ImportError("writing .pt needs torch; export to .safetensors instead, which open_clip also loads")
    tmp = out.with_name(out.name + ".tmp")
    torch.save({k: torch.from_numpy(np.array(v, order="C")) for k, v in sd.items()}, tmp)
    tmp.replace(out)


def export_hf(model: CLIP, directory: str | Path, results: dict | str | None = None, training_data: str | None = None,
              name: str | None = None) -> Path:
    """A transformers `CLIPModel` folder that CLIPProcessor and pipeline() load: config.json,
    model.safetensors, preprocessor_config.json, the CLIPTokenizer files and a README.md model card.

    results: our evaluation (result keys as the suite reports them), or the path of a results.json from a
    training run or the evaluate CLI; it goes into the card's `model-index`. training_data: a line for the
    card. name: the model's name on the card (default: the folder's name)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if model.config.init_logit_bias is not None:
        raise ValueError("transformers' CLIPModel has no logit_bias; this model cannot be exported to it")
    sd = open_clip_state_dict(model)
    safetensors_io.save(directory / "model.safetensors", hf.open_clip_to_hf(sd), {"format": "pt"})
    _write_json(directory / "config.json", hf.hf_config(model.config, float(sd["logit_scale"])))
    pre = model.preprocess
    _write_json(directory / "preprocessor_config.json", {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": pre.image_size},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": pre.image_size, "width": pre.image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": list(pre.mean), "image_std": list(pre.std),
    })
    for file, text in hf.tokenizer_files(get_tokenizer(), model.config.text.context_length).items():
        (directory / file).write_text(text, encoding="utf-8")
    if isinstance(results, str):
        results = model_card.read_results(results)
    card = model_card.model_card(model.config, pre, name or directory.resolve().name, results, training_data)
    (directory / "README.md").write_text(card, encoding="utf-8")
    return directory

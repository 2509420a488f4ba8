"""Hugging Face `CLIPModel` <-> open_clip state dict, and their configs.

The key table is the one checked with zero missing/unexpected keys in the spec (§3.4). HF splits
open_clip's fused `in_proj` into q/k/v projections and stores the two output projections as Linear
weights ([out, in]); everything else is a rename.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from georsclip_jax.models.configs import (CLIPConfig, PreprocessConfig, TextConfig, VisionConfig, canonical_config,
                                          mlp_ratio_for)

_TOWERS = {"visual.transformer.resblocks": "vision_model.encoder.layers", "transformer.resblocks": "text_model.encoder.layers"}
_BLOCK = {  # open_clip block suffix -> HF block suffix (renames only; in_proj is split separately)
    "ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
}
_TOP = {  # open_clip key -> (HF key, transpose?)
    "visual.conv1.weight": ("vision_model.embeddings.patch_embedding.weight", False),
    "visual.class_embedding": ("vision_model.embeddings.class_embedding", False),
    "visual.positional_embedding": ("vision_model.embeddings.position_embedding.weight", False),
    "visual.ln_pre.weight": ("vision_model.pre_layrnorm.weight", False),
    "visual.ln_pre.bias": ("vision_model.pre_layrnorm.bias", False),
    "visual.ln_post.weight": ("vision_model.post_layernorm.weight", False),
    "visual.ln_post.bias": ("vision_model.post_layernorm.bias", False),
    "visual.proj": ("visual_projection.weight", True),
    "token_embedding.weight": ("text_model.embeddings.token_embedding.weight", False),
    "positional_embedding": ("text_model.embeddings.position_embedding.weight", False),
    "ln_final.weight": ("text_model.final_layer_norm.weight", False),
    "ln_final.bias": ("text_model.final_layer_norm.bias", False),
    "text_projection": ("text_projection.weight", True),
    "logit_scale": ("logit_scale", False),
}
_BLOCK_KEY = re.compile(r"(visual\.transformer\.resblocks|transformer\.resblocks)\.(\d+)\.(.+)[._](weight|bias)")
_HF_BLOCK_KEY = re.compile(r"(vision_model|text_model)\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)")
_HF_IGNORED = re.compile(r".*position_ids$")


def open_clip_to_hf(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in sd.items():
        if key in _TOP:
            hf_key, transpose = _TOP[key]
            out[hf_key] = value.T if transpose else value
            continue
        m = _BLOCK_KEY.fullmatch(key)
        if not m:
            raise ValueError(f"no Hugging Face name for open_clip key {key!r}")
        tower, layer, suffix, kind = m.groups()
        prefix = f"{_TOWERS[tower]}.{layer}"
        if suffix == "attn.in_proj":
            for name, part in zip("qkv", np.split(value, 3, axis=0)):
                out[f"{prefix}.self_attn.{name}_proj.{kind}"] = part
        elif suffix in _BLOCK:
            out[f"{prefix}.{_BLOCK[suffix]}.{kind}"] = value
        else:
            raise ValueError(f"no Hugging Face name for open_clip key {key!r}")
    return {k: np.asarray(v, order="C") for k, v in out.items()}


def hf_to_open_clip(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    inverse_top = {hf: (oc, t) for oc, (hf, t) in _TOP.items()}
    inverse_block = {hf: oc for oc, hf in _BLOCK.items()}
    inverse_tower = {"vision_model": "visual.transformer.resblocks", "text_model": "transformer.resblocks"}
    out, qkv, unknown = {}, {}, []
    for key, value in sd.items():
        if _HF_IGNORED.fullmatch(key):
            continue
        if key in inverse_top:
            oc_key, transpose = inverse_top[key]
            out[oc_key] = value.T if transpose else value
            continue
        m = _HF_BLOCK_KEY.fullmatch(key)
        if not m:
            unknown.append(key)
            continue
        tower, layer, suffix, kind = m.groups()
        prefix = f"{inverse_tower[tower]}.{layer}"
        qkv_match = re.fullmatch(r"self_attn\.([qkv])_proj", suffix)
        if qkv_match:
            qkv.setdefault(f"{prefix}.attn.in_proj_{kind}", {})[qkv_match.group(1)] = value
        elif suffix in inverse_block:
            out[f"{prefix}.{inverse_block[suffix]}.{kind}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected Hugging Face keys ({len(unknown)}): {', '.join(sorted(unknown))}")
    for key, parts in qkv.items():
        if set(parts) != set("qkv"):
            raise ValueError(f"{key}: q/k/v projections incomplete, found only {sorted(parts)}")
        out[key] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return out


def config_from_hf(hf: dict) -> CLIPConfig:
    """CLIPConfig from a transformers `CLIPConfig` JSON (config.json)."""
    try:
        v, t = hf["vision_config"], hf["text_config"]
        act = {"quick_gelu": "quick_gelu", "gelu": "gelu"}.get(v.get("hidden_act", "quick_gelu"))
        if act is None or t.get("hidden_act", "quick_gelu") != v.get("hidden_act", "quick_gelu"):
            raise ValueError(f"hidden_act {v.get('hidden_act')!r}/{t.get('hidden_act')!r} is not supported")
        for tower in (v, t):
            eps = tower.get("layer_norm_eps", 1e-5)
            if not math.isclose(eps, 1e-5):
                raise ValueError(f"layer_norm_eps {eps} is not supported (CLIP uses 1e-5)")
        return canonical_config(CLIPConfig(
            embed_dim=hf.get("projection_dim", 512),
            vision=VisionConfig(
                image_size=v["image_size"], patch_size=v["patch_size"], width=v["hidden_size"],
                layers=v["num_hidden_layers"], head_width=v["hidden_size"] // v["num_attention_heads"],
                mlp_ratio=mlp_ratio_for(v["hidden_size"], v["intermediate_size"]),
            ),
            text=TextConfig(
                context_length=t.get("max_position_embeddings", 77), vocab_size=t.get("vocab_size", 49408),
                width=t["hidden_size"], heads=t["num_attention_heads"], layers=t["num_hidden_layers"],
                mlp_ratio=mlp_ratio_for(t["hidden_size"], t["intermediate_size"]),
            ),
            act=act,
        ))
    except KeyError as e:
        raise ValueError(f"Hugging Face config.json lacks field {e.args[0]!r}") from None


def hf_config(cfg: CLIPConfig, logit_scale: float) -> dict:
    """A transformers CLIPConfig JSON for this model.

    eos_token_id=2 (as the openai/clip-* repos) selects argmax-of-ids pooling, which equals open_clip's.
    """
    act = cfg.act
    common = {"hidden_act": act, "layer_norm_eps": 1e-5, "attention_dropout": 0.0, "initializer_factor": 1.0,
              "initializer_range": 0.02}
    v, t = cfg.vision, cfg.text
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": cfg.embed_dim,
        "logit_scale_init_value": logit_scale,
        "torch_dtype": "float32",
        "vision_config": {
            **common, "model_type": "clip_vision_model", "hidden_size": v.width, "intermediate_size": v.mlp_width,
            "num_hidden_layers": v.layers, "num_attention_heads": v.heads, "image_size": v.image_size,
            "patch_size": v.patch_size, "num_channels": 3, "projection_dim": cfg.embed_dim,
        },
        "text_config": {
            **common, "model_type": "clip_text_model", "hidden_size": t.width, "intermediate_size": t.mlp_width,
            "num_hidden_layers": t.layers, "num_attention_heads": t.heads, "max_position_embeddings": t.context_length,
            "vocab_size": t.vocab_size, "projection_dim": cfg.embed_dim,
            "bos_token_id": 49406, "eos_token_id": 2, "pad_token_id": 1,
        },
    }


HF_RESAMPLE = {3: "bicubic", 2: "bilinear", 0: "nearest"}  # PIL's codes, as preprocessor_config.json stores them


def preprocess_from_hf(pre: dict, model_image_size: int) -> PreprocessConfig:
    """Eval preprocessing from a CLIPImageProcessor config: crop size, mean/std, resampling."""
    crop = pre.get("crop_size", model_image_size)
    size = crop.get("height", model_image_size) if isinstance(crop, dict) else int(crop)
    defaults = PreprocessConfig()
    return PreprocessConfig(image_size=size, mean=tuple(pre.get("image_mean", defaults.mean)),
                            std=tuple(pre.get("image_std", defaults.std)),
                            interpolation=HF_RESAMPLE.get(pre.get("resample", 3), "bicubic"))


HF_SPECIAL_TOKENS = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


def tokenizer_files(tokenizer, context_length: int) -> dict[str, str]:
    """transformers' CLIPTokenizer files for our BPE: the same ids, with HF's names for the special tokens.
    HF pads with <|endoftext|> where open_clip pads with 0; the attention mask hides either."""
    vocab = {HF_SPECIAL_TOKENS.get(token, token): i for token, i in tokenizer.encoder.items()}
    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": context_length, "do_lower_case": True,
              "errors": "replace", **special}
    return {"vocab.json": json.dumps(vocab, ensure_ascii=False),
            "merges.txt": "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
            "tokenizer_config.json": json.dumps(config, indent=2), "special_tokens_map.json": json.dumps(special, indent=2)}

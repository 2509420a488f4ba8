"""open_clip state dict <-> our parameter paths: one declarative table each way.

Our paths are open_clip's key names with '/' for '.', Linear weights as `kernel` [in, out], LayerNorm
weights as `scale`, the patch conv as HWIO. Everything else (raw parameters such as `visual.proj`,
`text_projection`, `logit_scale`) keeps name and layout, so round trips are bit-exact.
"""

from __future__ import annotations

import re
from typing import Callable

import ml_dtypes
import numpy as np

from georsclip_jax.interop import torch_pickle
from georsclip_jax.models.configs import CLIPConfig, TextConfig, VisionConfig, canonical_config, mlp_ratio_for

_LINEARS = r"(attn\.in_proj|attn\.out_proj|mlp\.c_fc|mlp\.c_proj)"
_NORMS = r"(ln_1|ln_2|ln_pre|ln_post|ln_final)"

Transform = Callable[[np.ndarray], np.ndarray]
SAME: Transform = lambda a: a
TRANSPOSE: Transform = lambda a: a.T
OIHW_TO_HWIO: Transform = lambda a: a.transpose(2, 3, 1, 0)
HWIO_TO_OIHW: Transform = lambda a: a.transpose(3, 2, 0, 1)

# (open_clip key regex, our path template, transform). First match wins.
OPEN_CLIP_TO_OURS: list[tuple[str, str, Transform]] = [
    (r"(.*)attn\.in_proj_weight", r"\1attn/in_proj/kernel", TRANSPOSE),
    (r"(.*)attn\.in_proj_bias", r"\1attn/in_proj/bias", SAME),
    (rf"(.*){_LINEARS}\.weight", r"\1\2/kernel", TRANSPOSE),
    (rf"(.*){_LINEARS}\.bias", r"\1\2/bias", SAME),
    (rf"(.*){_NORMS}\.weight", r"\1\2/scale", SAME),
    (rf"(.*){_NORMS}\.bias", r"\1\2/bias", SAME),
    (r"visual\.conv1\.weight", "visual/conv1/kernel", OIHW_TO_HWIO),
    (r"token_embedding\.weight", "token_embedding/embedding", SAME),
    (r"(.*)", r"\1", SAME),  # raw parameters: class/positional embeddings, projections, logit scale/bias
]

OURS_TO_OPEN_CLIP: list[tuple[str, str, Transform]] = [
    (r"(.*)attn/in_proj/kernel", r"\1attn.in_proj_weight", TRANSPOSE),
    (r"(.*)attn/in_proj/bias", r"\1attn.in_proj_bias", SAME),
    (r"(.*)/(out_proj|c_fc|c_proj)/kernel", r"\1/\2.weight", TRANSPOSE),
    (r"(.*)/(out_proj|c_fc|c_proj)/bias", r"\1/\2.bias", SAME),
    (r"(.*)/scale", r"\1.weight", SAME),
    (r"visual/conv1/kernel", "visual.conv1.weight", HWIO_TO_OIHW),
    (r"token_embedding/embedding", "token_embedding.weight", SAME),
    (r"(.*)", r"\1", SAME),
]


def _rename(key: str, table, sep_from: str, sep_to: str) -> tuple[str, Transform]:
    for pattern, template, transform in table:
        m = re.fullmatch(pattern, key)
        if m:
            return m.expand(template).replace(sep_from, sep_to), transform
    raise AssertionError("the last rule matches everything")


def open_clip_key(path: str) -> tuple[str, Transform]:
    """The open_clip key for one of our parameter paths, and the transform to its layout."""
    return _rename(path, OURS_TO_OPEN_CLIP, "/", ".")


def to_ours(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """open_clip key names -> our '/'-joined parameter paths (no checking; see `check_params`)."""
    out = {}
    for key, value in state_dict.items():
        path, transform = _rename(key, OPEN_CLIP_TO_OURS, ".", "/")
        out[path] = transform(value)
    return out


def from_ours(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our parameter paths -> open_clip key names, float32 arrays in open_clip's layout."""
    out = {}
    for path, value in params.items():
        key, transform = open_clip_key(path)
        out[key] = np.asarray(transform(np.asarray(value)), order="C")
    return out


# ---- accepting the key variants found in the wild -------------------------------------------------

_WRAPPER_KEYS = ("state_dict", "model", "module")
_PREFIXES = [  # (prefix, replacement), applied once each, in order
    ("module.", ""),  # DDP
    ("image_backbone.", "visual."),  # ITRA (GeoRSCLIP's training code)
    ("text_backbone.", ""),
    ("text.", ""),  # open_clip CustomTextCLIP
]
_DROPPED = {"input_resolution", "context_length", "vocab_size"}  # OpenAI JIT extras
_BUFFERS = re.compile(r"(.*\.)?(attn_mask|position_ids)$")  # non-persistent buffers some exporters keep


def unwrap(obj) -> dict[str, np.ndarray]:
    """Find the tensor dict inside a training checkpoint ({'state_dict': ...}, {'epoch', ...})."""
    while isinstance(obj, dict) and not _looks_like_state_dict(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise ValueError(f"no state dict found; top-level keys are {sorted(map(str, obj))[:20]}")
        obj = inner
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict of tensors, got {type(obj).__name__}")
    return obj


def _looks_like_state_dict(d: dict) -> bool:
    return bool(d) and sum(map(torch_pickle.is_tensor, d.values())) >= len(d) / 2


def normalize_state_dict(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip DDP/ITRA/custom-text prefixes, drop JIT extras and buffers, up-cast to float32."""
    out = {}
    for key, value in sd.items():
        if not isinstance(value, np.ndarray):
            continue
        for prefix, replacement in _PREFIXES:
            if key.startswith(prefix):
                key = replacement + key[len(prefix):]
        if key in _DROPPED or _BUFFERS.fullmatch(key):
            continue
        if key in ("logit_scale", "logit_bias"):
            value = value.reshape(())
        out[key] = value.astype(np.float32, copy=False) if _is_float(value.dtype) else value
    return out


def _is_float(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating) or dtype == ml_dtypes.bfloat16  # bfloat16 is not np.floating


def infer_config(sd: dict[str, np.ndarray], act: str) -> CLIPConfig:
    """Architecture from tensor shapes, as open_clip's `build_model_from_openai_state_dict`.

    The activation cannot be read from shapes, so it is an argument.
    """
    try:
        conv = sd["visual.conv1.weight"]
        v_width, patch = conv.shape[0], conv.shape[-1]
        v_layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        t_width = sd["ln_final.weight"].shape[0]
        t_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
        v_mlp = sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        t_mlp = sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        embed_dim = sd["text_projection"].shape[1]
        context_length = sd["positional_embedding"].shape[0]
        vocab = sd["token_embedding.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"cannot infer the architecture: key {e.args[0]!r} is missing (is this a ViT CLIP?)") from None
    if t_width % 64 or v_width % 64:
        raise ValueError(f"cannot infer head counts for widths {v_width}/{t_width} (not multiples of 64); "
                         "pass a model name or config")
    # Head counts are not visible in shapes. open_clip's ViTs up to L use head width 64; H, g and bigG
    # (widths 1280, 1408, 1664) use 16 vision heads (head widths 80, 88, 104).
    head_width = v_width // 16 if v_width >= 1280 else 64
    return canonical_config(CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(
            image_size=grid * patch, patch_size=patch, width=v_width, layers=v_layers, head_width=head_width,
            mlp_ratio=mlp_ratio_for(v_width, v_mlp),
        ),
        text=TextConfig(
            context_length=context_length, vocab_size=vocab, width=t_width, heads=t_width // 64, layers=t_layers,
            mlp_ratio=mlp_ratio_for(t_width, t_mlp),
        ),
        act=act,
        init_logit_bias=0.0 if "logit_bias" in sd else None,
    ))

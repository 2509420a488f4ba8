"""Model configs by open_clip name, as plain data.

The registry mirrors open_clip's `model_configs/*.json` (v3.3.0). The activation is a field of the
config, chosen per checkpoint: a `-quickgelu` name only sets `act='quick_gelu'`, and a converted
checkpoint carries its own value. Nothing is inferred from an architecture name.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

ACTIVATIONS = ("gelu", "quick_gelu")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    head_width: int = 64
    mlp_ratio: float = 4.0

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)  # truncated, as open_clip (bigG: 8192)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        return self.grid_size**2 + 1


@dataclasses.dataclass(frozen=True)
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Eval preprocessing that belongs to a checkpoint (open_clip's PreprocessCfg)."""

    image_size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int = 512
    vision: VisionConfig = VisionConfig()
    text: TextConfig = TextConfig()
    act: str = "gelu"
    init_logit_scale: float = math.log(1 / 0.07)
    init_logit_bias: float | None = None

    def __post_init__(self):
        validate(self)

    def replace(self, **changes) -> "CLIPConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CLIPConfig":
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown CLIP config field(s): {sorted(unknown)}")
        vision = _dataclass_from_dict(VisionConfig, d.pop("vision", {}), "vision")
        text = _dataclass_from_dict(TextConfig, d.pop("text", {}), "text")
        return cls(vision=vision, text=text, **d)

    def to_open_clip_json(self) -> dict[str, Any]:
        """The `model_cfg` that open_clip's `create_model` reads (its model_configs JSON schema)."""
        out: dict[str, Any] = {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.vision.image_size,
                "layers": self.vision.layers,
                "width": self.vision.width,
                "head_width": self.vision.head_width,
                "mlp_ratio": self.vision.mlp_ratio,
                "patch_size": self.vision.patch_size,
            },
            "text_cfg": {
                "context_length": self.text.context_length,
                "vocab_size": self.text.vocab_size,
                "width": self.text.width,
                "heads": self.text.heads,
                "layers": self.text.layers,
                "mlp_ratio": self.text.mlp_ratio,
            },
        }
        if self.act == "quick_gelu":
            out["quick_gelu"] = True
        if self.init_logit_bias is not None:
            out["init_logit_bias"] = self.init_logit_bias
        return out

    @classmethod
    def from_open_clip_json(cls, d: dict[str, Any]) -> "CLIPConfig":
        v, t = d.get("vision_cfg", {}), d.get("text_cfg", {})
        if not isinstance(v.get("layers", 12), int):
            raise ValueError("vision_cfg.layers is a list: ResNet towers are not supported")
        vision_keys = {f.name for f in dataclasses.fields(VisionConfig)}
        text_keys = {f.name for f in dataclasses.fields(TextConfig)}
        return cls(
            embed_dim=d["embed_dim"],
            vision=VisionConfig(**{k: v[k] for k in vision_keys & set(v)}),
            text=TextConfig(**{k: t[k] for k in text_keys & set(t)}),
            act="quick_gelu" if d.get("quick_gelu", False) else "gelu",
            init_logit_bias=d.get("init_logit_bias"),
        )


def _dataclass_from_dict(cls, d: dict[str, Any], where: str):
    if isinstance(d, cls):
        return d
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {where} config field(s): {sorted(unknown)}")
    return cls(**d)


def validate(cfg: CLIPConfig) -> None:
    """Reject configs the model cannot build, naming the field."""
    if cfg.act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {cfg.act!r}")
    v, t = cfg.vision, cfg.text
    if v.width % v.head_width:
        raise ValueError(f"vision.width {v.width} is not divisible by vision.head_width {v.head_width}")
    if v.image_size % v.patch_size:
        raise ValueError(f"vision.image_size {v.image_size} is not divisible by vision.patch_size {v.patch_size}")
    if t.width % t.heads:
        raise ValueError(f"text.width {t.width} is not divisible by text.heads {t.heads}")
    for name, value in [("embed_dim", cfg.embed_dim), ("vision.layers", v.layers), ("text.layers", t.layers)]:
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def _vit(embed_dim, image, patch, width, layers, head_width, mlp_ratio, t_width, t_heads, t_layers):
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(image, patch, width, layers, head_width, mlp_ratio),
        text=TextConfig(width=t_width, heads=t_heads, layers=t_layers),
    )


_BASE_CONFIGS: dict[str, CLIPConfig] = {
    "ViT-B-32": _vit(512, 224, 32, 768, 12, 64, 4.0, 512, 8, 12),
    "ViT-B-16": _vit(512, 224, 16, 768, 12, 64, 4.0, 512, 8, 12),
    "ViT-L-14": _vit(768, 224, 14, 1024, 24, 64, 4.0, 768, 12, 12),
    "ViT-L-14-336": _vit(768, 336, 14, 1024, 24, 64, 4.0, 768, 12, 12),
    "ViT-H-14": _vit(1024, 224, 14, 1280, 32, 80, 4.0, 1024, 16, 24),
    "ViT-g-14": _vit(1024, 224, 14, 1408, 40, 88, 4.3637, 1024, 16, 24),
    "ViT-bigG-14": _vit(1280, 224, 14, 1664, 48, 104, 4.9231, 1280, 20, 32),
    # Tiny towers for tests and the CPU demo; same code paths, seconds to run.
    "tiny": CLIPConfig(
        embed_dim=32,
        vision=VisionConfig(image_size=32, patch_size=8, width=64, layers=2, head_width=16),
        text=TextConfig(width=48, heads=4, layers=2),
    ),
    "tiny-h80": CLIPConfig(  # head_width that is not 64, like ViT-H
        embed_dim=40,
        vision=VisionConfig(image_size=48, patch_size=16, width=160, layers=2, head_width=80, mlp_ratio=4.3637),
        text=TextConfig(width=64, heads=2, layers=2),
    ),
}

MODEL_CONFIGS: dict[str, CLIPConfig] = {
    **_BASE_CONFIGS,
    **{f"{name}-quickgelu": cfg.replace(act="quick_gelu") for name, cfg in _BASE_CONFIGS.items()},
}


def mlp_ratio_for(width: int, hidden: int) -> float:
    """A short mlp_ratio with int(width * ratio) == hidden, as open_clip's JSONs write them (4.9231)."""
    ratio = hidden / width
    for digits in (1, 4, 6, 8):
        if int(width * round(ratio, digits)) == hidden:
            return round(ratio, digits)
    return ratio


def _architecture(cfg: CLIPConfig) -> tuple:
    """What the weights determine: every shape, with MLP widths instead of their (ambiguous) ratios."""
    v, t = cfg.vision, cfg.text
    return (cfg.embed_dim, v.image_size, v.patch_size, v.width, v.layers, v.head_width, v.mlp_width,
            t.context_length, t.vocab_size, t.width, t.heads, t.layers, t.mlp_width)


def canonical_config(cfg: CLIPConfig) -> CLIPConfig:
    """The registry's spelling of an inferred architecture (e.g. ViT-g's mlp_ratio 4.3637, which
    shapes alone cannot pin down), keeping the activation and logit bias; `cfg` itself if unknown."""
    for named in _BASE_CONFIGS.values():
        if _architecture(named) == _architecture(cfg):
            return named.replace(act=cfg.act, init_logit_bias=cfg.init_logit_bias)
    return cfg


def list_models() -> list[str]:
    return sorted(MODEL_CONFIGS)


def get_model_config(name: str) -> CLIPConfig:
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model name {name!r}; known: {', '.join(list_models())}") from None

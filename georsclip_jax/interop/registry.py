"""The published remote-sensing CLIP checkpoints this project knows, keyed by file name, with the
architecture and activation each was trained with — as open_clip's pretrained registry fixes them.

A bare state dict or training checkpoint says neither its activation nor, for some widths, its head
count; loading with the wrong activation raises nothing and silently changes every embedding (ViT-L/14
SkyCLIP weights loaded with GELU, as a third-party loader did). A file found here gets its activation
from this table; its shapes are still read from the file, and shapes that are not those of the
published architecture are loaded as they are, with a warning. Any other bare file still needs `act=`.

Keys: the file name, or for SkyCLIP (every zip holds an `epoch_20.pt`) the zip's folder and the file.
Hub ids resolve to a file of the same name (`hf-hub:Zilun/GeoRSCLIP/ckpt/RS5M_ViT-B-32.pt`).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

from georsclip_jax.models.configs import CLIPConfig, get_model_config


@dataclasses.dataclass(frozen=True)
class KnownCheckpoint:
    model: str   # the open_clip architecture
    act: str
    source: str  # where it is published and why this activation


_GEORSCLIP = "GeoRSCLIP (hf Zilun/GeoRSCLIP/ckpt): open_clip {} from {}; specs/eval_protocols.md §1.1"
_SKYCLIP = "SkyCLIP (SkyScript ckpt/{}.zip): {}; specs/skyscript.md §2"
KNOWN = {
    **{name: KnownCheckpoint("ViT-B-32", "quick_gelu", _GEORSCLIP.format("ViT-B/32", "OpenAI weights (QuickGELU)"))
       for name in ("RS5M_ViT-B-32.pt", "RS5M_ViT-B-32_RET-2.pt", "RS5M_ViT-B-32_RSICD.pt")},
    "RS5M_ViT-H-14.pt": KnownCheckpoint("ViT-H-14", "gelu", _GEORSCLIP.format("ViT-H/14", "laion2b_s32b_b79k")),
    **{f"{name}/epoch_20.pt": KnownCheckpoint("ViT-L-14", "quick_gelu", _SKYCLIP.format(
        name, "ViT-L/14 trained from OpenAI weights; its notebooks force QuickGELU for every ViT-L/14"))
       for name in ("SkyCLIP_ViT_L14_top30pct", "SkyCLIP_ViT_L14_top50pct",
                    "SkyCLIP_ViT_L14_top30pct_filtered_by_CLIP_laion_RS", "SkyCLIP_ViT_L14_top30pct_multi_objects",
                    "CLIP_ViT_L14_LAION_RS")},
    "SkyCLIP_ViT_B32_top50pct/epoch_20.pt": KnownCheckpoint("ViT-B-32", "gelu", _SKYCLIP.format(
        "SkyCLIP_ViT_B32_top50pct", "ViT-B/32 trained from laion2b_e16, a GELU model")),
}
# Not listed: GeoRSCLIP's RS5M_ViT-L-14(-336).pt (no published initialization or evaluation to tell the
# activation) and RemoteCLIP (its README builds 'ViT-B-32' with open_clip's default GELU for weights
# trained from OpenAI's, so which activation its numbers used is not clear).


def lookup(path: str | Path) -> KnownCheckpoint | None:
    path = Path(path)
    return KNOWN.get(f"{path.parent.name}/{path.name}") or KNOWN.get(path.name)


def published_config(known: KnownCheckpoint, inferred: CLIPConfig, source: str) -> CLIPConfig:
    """The published architecture with its activation, when the file's shapes are that architecture's;
    else the shapes' own (a warning says so)."""
    published = get_model_config(known.model).replace(act=known.act)
    if (inferred.embed_dim, inferred.vision, inferred.text) == (published.embed_dim, published.vision, published.text):
        return published.replace(init_logit_bias=inferred.init_logit_bias)
    warnings.warn(f"{source}: its shapes are not those of {known.model}, the published architecture of a file of "
                  f"this name; loading the shapes as they are, with the published activation ({known.act})")
    return inferred

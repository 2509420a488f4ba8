"""Stacked blocks: how a scanned tower stores its layers, and open_clip's per-layer names for them.

With `ModelOptions(scan_layers=True)` a tower's residual blocks are one block whose parameters carry a
leading layer axis, stored at `<tower>/transformer/resblocks/<rest>` (MaxText's layout): the compiler
sees one block, the optimizer a few dozen leaves instead of hundreds. Everything that leaves the
model — checkpoint files, converters, exports, adapters, fingerprints, sharding and locking rules —
speaks open_clip's per-layer names `<tower>/transformer/resblocks/<i>/<rest>`. These functions
translate flat `{path: array}` dicts between the two views. (Orbax training checkpoints store the
train state as it is, so a run resumes only with the `scan_layers` it was started with.)
"""

from __future__ import annotations

import numpy as np

BLOCKS = "resblocks"


def split_stacked(path: str) -> tuple[str, str] | None:
    """('visual/transformer/resblocks', 'attn/in_proj/kernel') for a stacked parameter's path, None
    for any other (including per-layer paths, whose segment after `resblocks` is the layer index)."""
    parts = path.split("/")
    if BLOCKS not in parts:
        return None
    at = parts.index(BLOCKS)
    if at + 1 >= len(parts) or parts[at + 1].isdigit():
        return None
    return "/".join(parts[:at + 1]), "/".join(parts[at + 1:])


def is_stacked(path: str) -> bool:
    return split_stacked(path) is not None


def layer_path(path: str, layer: int) -> str:
    """The per-layer name of layer `layer` of a stacked parameter."""
    blocks, rest = split_stacked(path)
    return f"{blocks}/{layer}/{rest}"


def layer_paths(path: str, layers: int) -> list[str]:
    return [layer_path(path, i) for i in range(layers)] if is_stacked(path) else [path]


def unstack(flat: dict) -> dict:
    """Per-layer view: each stacked entry [L, ...] becomes L entries named by layer."""
    out = {}
    for path, value in flat.items():
        if is_stacked(path):
            out.update({layer_path(path, i): value[i] for i in range(value.shape[0])})
        else:
            out[path] = value
    return out


def unstack_shapes(shapes: dict[str, tuple]) -> dict[str, tuple]:
    """`unstack` for shapes only: {path: shape} in the per-layer view."""
    out = {}
    for path, shape in shapes.items():
        if is_stacked(path):
            out.update({layer_path(path, i): tuple(shape[1:]) for i in range(shape[0])})
        else:
            out[path] = tuple(shape)
    return out


def gather_layers(per_layer: dict, path: str, layers: int) -> np.ndarray | None:
    """The value of a (stacked) model parameter from a per-layer dict, removing what it uses; None if
    any layer is missing."""
    names = layer_paths(path, layers)
    if not all(name in per_layer for name in names):
        return None
    if not is_stacked(path):
        return per_layer.pop(path)
    return np.stack([np.asarray(per_layer.pop(name)) for name in names])

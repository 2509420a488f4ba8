"""Device mesh and parameter sharding from config data.

Mesh axes are named with sizes (`{"data": -1, "fsdp": 1}`; one -1 takes the remaining devices).
Parameter placement is a list of rules, regex on the parameter path (`visual/transformer/resblocks/
3/attn/in_proj/kernel`) -> tactic, first match wins:
  "replicate"            every device holds the whole array;
  "fsdp"                 split the largest dimension divisible by the fsdp axis size, when the array
                         has at least `fsdp_min_size` elements (small ones stay replicated);
  [None, "fsdp", ...]    an explicit PartitionSpec.
Presets: `dp` (all replicated) and `fsdp` (everything large split over "fsdp"). Batches are split
over every batch axis present ("data", "fsdp"). Axes use AxisType.Auto: the model is written in
global view and XLA inserts the collectives. Rules always see open_clip's per-layer paths and shapes:
a scanned tower's stacked parameter is placed by the rule for its layer 0, its layer axis unsplit.
"""

from __future__ import annotations

import math
import re

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from georsclip_jax.models.stacking import is_stacked, layer_path

BATCH_AXES = ("data", "fsdp")
PRESETS = {"dp": ((".*", "replicate"),), "fsdp": ((".*", "fsdp"),)}


def mesh_shape(axes: dict[str, int], device_count: int) -> dict[str, int]:
    """Resolve a -1 size; errors name the mesh field."""
    sizes = dict(axes)
    unknown = [name for name, size in sizes.items() if size == -1]
    if len(unknown) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {unknown}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if any(size == 0 or size < -1 for size in sizes.values()):
        raise ValueError(f"config.mesh: sizes must be positive or -1, got {sizes}")
    if unknown:
        if device_count % fixed:
            raise ValueError(f"config.mesh: {sizes} does not divide the {device_count} devices")
        sizes[unknown[0]] = device_count // fixed
    if math.prod(sizes.values()) != device_count:
        raise ValueError(f"config.mesh: {sizes} needs {math.prod(sizes.values())} devices, "
                         f"but {device_count} are available")
    return sizes


def make_mesh(axes: dict[str, int], devices=None) -> jax.sharding.Mesh:
    devices = devices if devices is not None else jax.devices()
    sizes = mesh_shape(axes, len(devices))
    return jax.make_mesh(tuple(sizes.values()), tuple(sizes), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,) * len(sizes))


def batch_spec(mesh) -> P:
    return P(tuple(a for a in BATCH_AXES if a in mesh.shape))


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, batch_spec(mesh))


def data_parallel_size(mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.shape)


def resolve_rules(rules) -> tuple:
    """A preset name or a sequence of (regex, tactic) pairs."""
    if isinstance(rules, str):
        if rules not in PRESETS:
            raise ValueError(f"config.sharding.rules: unknown preset {rules!r}; presets are {sorted(PRESETS)}")
        return PRESETS[rules]
    return tuple((pattern, tactic) for pattern, tactic in rules)


def spec_for(path: str, shape: tuple[int, ...], rules, mesh, fsdp_min_size: int) -> P:
    for pattern, tactic in resolve_rules(rules):
        if re.fullmatch(pattern, path):
            break
    else:
        return P()
    if tactic == "replicate":
        return P()
    if tactic == "fsdp":
        size = mesh.shape.get("fsdp", 1)
        if size == 1 or math.prod(shape) < fsdp_min_size:
            return P()
        candidates = [d for d in sorted(range(len(shape)), key=lambda d: -shape[d]) if shape[d] % size == 0]
        if not candidates:
            return P()
        spec = [None] * len(shape)
        spec[candidates[0]] = "fsdp"
        return P(*spec)
    if isinstance(tactic, (list, tuple)):
        if len(tactic) != len(shape):
            raise ValueError(f"config.sharding.rules: spec {tactic} for {path} has {len(tactic)} entries, "
                             f"the parameter has {len(shape)} dimensions")
        return P(*tactic)
    raise ValueError(f"config.sharding.rules: unknown tactic {tactic!r} for pattern {pattern!r}")


def param_path(key) -> str:
    """'visual/transformer/resblocks/0/attn/in_proj/kernel' from a pytree key path of a State."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in key
                    if not isinstance(k, jax.tree_util.GetAttrKey))


def lora_spec(path: str, shapes: dict, rules, mesh, fsdp_min_size: int) -> P:
    """A LoRA factor follows its base kernel [in, out]: A [in, r] takes the kernel's input-axis split,
    B [r, out] its output-axis split, so x·A·B comes out laid out as x·W and needs no resharding;
    the rank axis is never split."""
    layer, factor = path.rsplit("/lora/", 1)
    a, b = shapes[f"{layer}/lora/lora_a"], shapes[f"{layer}/lora/lora_b"]
    kernel = spec_for(f"{layer}/kernel", (a[0], b[1]), rules, mesh, fsdp_min_size)
    kernel = tuple(kernel) + (None,) * (2 - len(kernel))
    return P(kernel[0], None) if factor == "lora_a" else P(None, kernel[1])


def per_layer(path: str, shape: tuple) -> tuple[str, tuple]:
    """A stacked parameter as its layer 0 (path and shape); any other as it is."""
    return (layer_path(path, 0), shape[1:]) if is_stacked(path) else (path, shape)


def param_shardings(state, mesh, rules="dp", fsdp_min_size: int = 2**18):
    """A State of NamedShardings mirroring `state` (abstract or concrete). Rules place base
    parameters; LoRA adapters (`.../lora/lora_a|lora_b`) follow their base kernel (`lora_spec`)."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    shapes = dict(per_layer(param_path(key), tuple(leaf.shape)) for key, leaf in flat)

    def place(key, leaf):
        path, shape = per_layer(param_path(key), tuple(leaf.shape))
        spec = (lora_spec(path, shapes, rules, mesh, fsdp_min_size) if "/lora/" in path
                else spec_for(path, shape, rules, mesh, fsdp_min_size))
        return NamedSharding(mesh, P(None, *spec) if is_stacked(param_path(key)) else spec)
    return jax.tree_util.tree_map_with_path(place, state)


def place(value, target) -> jax.Array:
    """A host value (the same on every process: weights read from one file, adapters from one seed)
    as a global array in `target`: each process copies in only its own devices' shards.
    `jax.device_put` would first check across processes that the whole array is equal (a collective per
    array: an all-gather of every weight on a pod)."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, target, lambda index: value[index])

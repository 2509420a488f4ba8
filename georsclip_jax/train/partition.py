"""Which parameters train: a filter that splits the model state into a trainable and a frozen partition.

The step differentiates only the trainable partition; the frozen one (the base under LoRA, a locked
tower) is a plain argument of the step — never donated, never updated, with no optimizer state.

`config.peft.trainable` names groups whose union trains:
  all           every base parameter (full fine-tuning),
  lora          the LoRA adapters (`config.peft.lora`, rank > 0),
  norms_biases  LayerNorm scales and biases, and the biases of every Linear (BitFit),
  logit_scale   logit_scale (and logit_bias).
open_clip's locks then freeze a tower's base parameters except its last N layer groups
(`lock_image` + `lock_image_unlocked_groups`, `lock_text` + `lock_text_unlocked_layers`); they do not
touch adapters or the logit scale, as in open_clip. A scanned tower stores its blocks stacked
(models/stacking.py), so a lock there must unlock all of its blocks or none.
"""

from __future__ import annotations

from typing import Callable

from flax import nnx

from georsclip_jax.models.clip import tower
from georsclip_jax.models.configs import CLIPConfig
from georsclip_jax.models.lora import TOWERS, LoRAConfig, LoRAParam
from georsclip_jax.models.stacking import is_stacked, layer_paths

GROUPS = ("all", "lora", "norms_biases", "logit_scale")


def layer_groups(config: CLIPConfig, which: str) -> list[tuple[str, ...]]:
    """open_clip's lock groups, first to last (`VisionTransformer.lock`, `lock_text_tower`): the
    embeddings, each block but the last, the last block with the final norm, the projection."""
    if which == "image":
        layers, prefix = config.vision.layers, "visual/"
        embeddings = ("visual/conv1", "visual/class_embedding", "visual/positional_embedding", "visual/ln_pre")
        last, projection = "visual/ln_post", "visual/proj"
    else:
        layers, prefix = config.text.layers, ""
        embeddings, last, projection = ("token_embedding", "positional_embedding"), "ln_final", "text_projection"
    blocks = [(f"{prefix}transformer/resblocks/{i}",) for i in range(layers - 1)]
    return [embeddings, *blocks, (f"{prefix}transformer/resblocks/{layers - 1}", last), (projection,)]


def unlocked_prefixes(config: CLIPConfig, which: str, unlocked: int) -> tuple[str, ...]:
    groups = layer_groups(config, which)
    return tuple(p for group in groups[len(groups) - unlocked:] for p in group) if unlocked > 0 else ()


def under(path: str, prefixes) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def in_group(group: str, path: str, is_adapter: bool) -> bool:
    if group == "lora":
        return is_adapter
    if is_adapter:
        return False
    if group == "norms_biases":
        return path.endswith("/bias") or any(part.startswith("ln_") for part in path.split("/"))
    if group == "logit_scale":
        return path in ("logit_scale", "logit_bias")
    return True  # all


def trainable_groups(peft) -> tuple[str, ...]:
    groups = tuple(g.strip() for g in peft.trainable.split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ValueError(f"config.peft.trainable: {peft.trainable!r}; use a comma-separated subset of {GROUPS}")
    return groups


def lora_config(peft) -> LoRAConfig | None:
    """The adapters `config.peft.lora` asks for, or None for rank 0."""
    lora = peft.lora
    if not lora.rank:
        return None
    split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())
    return LoRAConfig(rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout, targets=split(lora.targets),
                      towers=split(lora.towers))


def validate_peft(peft) -> None:
    """Raises ValueError naming the bad `config.peft` field."""
    groups = trainable_groups(peft)
    lora = peft.lora
    if lora.rank < 0:
        raise ValueError(f"config.peft.lora.rank: must be 0 (no adapters) or positive, got {lora.rank}")
    if "lora" in groups and not lora.rank:
        raise ValueError("config.peft.lora.rank: 'lora' is trainable but no adapters are attached (rank 0)")
    if lora.rank and "lora" not in groups:
        raise ValueError(f"config.peft.trainable: adapters of rank {lora.rank} are attached but 'lora' is not "
                         f"among the trainable groups {groups}")
    if not 0 <= lora.dropout < 1:
        raise ValueError(f"config.peft.lora.dropout: {lora.dropout} is not in [0, 1)")
    bad = [t for t in lora_config(peft).towers if t not in TOWERS] if lora.rank else []
    if bad:
        raise ValueError(f"config.peft.lora.towers: {bad} are not among {TOWERS}")


def trainable_filter(peft, config: CLIPConfig) -> Callable[[tuple, object], bool]:
    """An nnx filter (path, variable) -> bool selecting the trainable parameters."""
    groups = trainable_groups(peft)
    unlocked = {}
    if peft.lock_image:
        unlocked["image"] = unlocked_prefixes(config, "image", peft.lock_image_unlocked_groups)
    if peft.lock_text:
        unlocked["text"] = unlocked_prefixes(config, "text", peft.lock_text_unlocked_layers)

    def trainable(key: tuple, variable) -> bool:
        if not isinstance(variable, nnx.Param):
            return False
        path = "/".join(map(str, key))
        is_adapter = isinstance(variable, LoRAParam)
        if not any(in_group(g, path, is_adapter) for g in groups):
            return False
        which = tower(path)
        if is_adapter or which not in unlocked:
            return True
        layers = layer_paths(path, config.vision.layers if which == "image" else config.text.layers)
        free = [under(layer, unlocked[which]) for layer in layers]
        if is_stacked(path) and any(free) != all(free):
            field = "lock_image_unlocked_groups" if which == "image" else "lock_text_unlocked_layers"
            raise ValueError(f"config.peft.{field}: unlocking {sum(free)} of the {len(free)} {which} blocks needs "
                             "per-layer parameters; a scanned tower stores them stacked (set "
                             "config.model.scan_layers=False, or unlock all blocks or none)")
        return all(free)
    return trainable


def split_trainable(model, peft):
    """(graphdef, trainable, frozen) of `model`; raises if nothing would train."""
    graphdef, trainable, frozen = nnx.split(model, trainable_filter(peft, model.config), ...)
    if not nnx.to_flat_state(trainable):
        raise ValueError(f"config.peft: no parameter is trainable (trainable={peft.trainable!r}, "
                         f"lock_image={peft.lock_image}, lock_text={peft.lock_text})")
    return graphdef, trainable, frozen

"""The training config schema (every field, with defaults) and its validation.

Recipes in `configs/` start from `base_config()` and override fields; `validate` stops a run at
start with one line naming the bad field: unknown keys, impossible meshes, batch sizes that do not
divide over the data-parallel devices, missing data.
"""

from __future__ import annotations

import difflib
import os
import tempfile

import ml_collections

from georsclip_jax import storage
from georsclip_jax.data.tar_shards import expand_braces


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # remat: none | dots | full (models/layers.py REMAT_POLICIES); scan_layers: one lax.scan per tower
    c.model = dict(name="ViT-B-32-quickgelu", init_from="", act="", dtype="float32", remat="none",
                   scan_layers=False, attention_impl="")
    c.data = dict(
        kind="tar",                 # tar | metafile | array_record | karpathy
        train="",                   # tar: brace pattern(s), '::'-separated; array_record: glob;
                                    # metafile: a file; karpathy: dataset_*.json files, '::'-separated
        image_root="",              # metafile: its image folder; karpathy: one folder per JSON, '::'-separated
        image_column="filepath", caption_columns="title", exclude="",  # karpathy: filename lists to drop
        val="",                     # held-out data of the same kind, for the validation loss
        augment="georsclip",        # georsclip | open_clip | skyscript | none (transforms.py AUGMENTATIONS)
        image_dtype="uint8", jpeg_draft=True, num_workers=0, max_pixels=89_478_485,  # jpeg_draft: README "Speed"
        read_threads=4,             # batches each decoding process fetches and decodes at once (PipelineOptions)
        retry_seconds=300.0,        # object storage: how long transient errors are retried before the run stops
        synthetic=dict(train_samples=0, val_samples=0, samples_per_shard=512, min_size=64, max_size=64,
                       eval_per_class=20, retrieval_images=60, selo_images=0),
        # a second corpus mixed in at `weight` (the first gets 1 - weight), e.g. SkyScript's CSV beside RS5M's
        # shards: kind="metafile", train=its CSV, image_root=its image folder, caption_columns="title"
        mix=dict(weight=0.0, kind="metafile", train="", image_root="", image_column="filepath",
                 caption_columns="title", exclude=""),
    )
    # profile_steps (start, stop): trace steps start..stop-1 into WORKDIR/tensorboard (train/profiler.py)
    # compilation_cache: "" (JAX's configured folder, else WORKDIR/compilation_cache), "none", or a folder
    # max_param_growth: stop when ||params|| exceeds this many times its smallest value (train/guard.py; 0: off)
    c.train = dict(global_batch_size=256, total_steps=1000, epochs=0.0, seed=0, loss="clip", accum_steps=1,
                   log_every=10, checkpoint_every=500, keep_checkpoints=3, async_checkpoints=True,
                   profile_steps=(0, 0), compilation_cache="", max_param_growth=10.0)
    c.optim = dict(lr=5e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.2, warmup_steps=100, schedule="cosine",
                   grad_clip_norm=0.0)
    # Which parameters train (train/partition.py); lora.rank > 0 attaches adapters (models/lora.py).
    c.peft = dict(trainable="all", lock_image=False, lock_image_unlocked_groups=0, lock_text=False,
                  lock_text_unlocked_layers=0,
                  lora=dict(rank=0, alpha=16.0, dropout=0.0, targets="attn/in_proj,attn/out_proj,mlp/c_fc,mlp/c_proj",
                            towers="image,text"))
    c.mesh = dict(data=-1, fsdp=1)
    c.sharding = dict(rules="dp", fsdp_min_size=2**18)
    # every_steps: validation loss (data.val) and the suite (data_root) every N steps, and at the end
    # tfds: zero-shot sets prepared by tensorflow-datasets under tfds_data_dir (data/eval_sets.py TFDS_SETS)
    # tasks: zeroshot, retrieval, selo, knn, fewshot, linear_probe (the last three: evals/probes.py)
    c.eval = dict(data_root="", tasks="zeroshot,retrieval", every_steps=0, batch_size=256, protocol="georsclip",
                  tfds="", tfds_data_dir="", knn_k=20, shots="1,4,8,16", fewshot_draws=5)
    c.export = dict(open_clip=False, loss_plot=True)
    return c


KINDS = ["tar", "metafile", "array_record", "karpathy"]  # data.kind, data.mix.kind: train/loop.py make_source

# Every numeric field's allowed range: (path, test, what the test means).
RANGES = (
    ("train.global_batch_size", lambda v: v >= 1, "at least 1"),
    ("train.total_steps", lambda v: v >= 1, "at least 1"),
    ("train.epochs", lambda v: v >= 0, "0 (use total_steps) or positive"),
    ("train.accum_steps", lambda v: v >= 1, "at least 1"),
    ("train.log_every", lambda v: v >= 1, "at least 1"),
    ("train.checkpoint_every", lambda v: v >= 1, "at least 1"),
    ("train.keep_checkpoints", lambda v: v >= 1, "at least 1"),
    ("train.max_param_growth", lambda v: v == 0 or v > 1, "0 (off) or greater than 1"),
    ("optim.lr", lambda v: v > 0, "positive"),
    ("optim.b1", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.b2", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.eps", lambda v: v > 0, "positive"),
    ("optim.weight_decay", lambda v: v >= 0, "0 or positive"),
    ("optim.warmup_steps", lambda v: v >= 0, "0 or positive"),
    ("optim.grad_clip_norm", lambda v: v >= 0, "0 (off) or positive"),
    ("data.num_workers", lambda v: v >= 0, "0 (in-process) or positive"),
    ("data.read_threads", lambda v: v >= 1, "at least 1"),
    ("data.max_pixels", lambda v: v >= 1, "at least 1"),
    ("data.mix.weight", lambda v: 0 <= v < 1, "in [0, 1) (0: no second corpus)"),
    ("eval.batch_size", lambda v: v >= 1, "at least 1"),
    ("eval.every_steps", lambda v: v >= 0, "0 (only at the end) or positive"),
    ("eval.knn_k", lambda v: v >= 1, "at least 1"),
    ("eval.fewshot_draws", lambda v: v >= 1, "at least 1"),
    ("sharding.fsdp_min_size", lambda v: v >= 0, "0 or positive"),
    ("peft.lora.alpha", lambda v: v > 0, "positive"),
    *((f"data.synthetic.{k}", lambda v: v >= 0, "0 or positive") for k in (
        "train_samples", "val_samples", "eval_per_class", "retrieval_images", "selo_images")),
    *((f"data.synthetic.{k}", lambda v: v >= 1, "at least 1") for k in ("samples_per_shard", "min_size", "max_size")),
)


def choices() -> dict[str, list[str]]:
    """Every name field and the registry it must come from."""
    from georsclip_jax.data.eval_sets import TFDS_SETS
    from georsclip_jax.evals.suite import TASKS
    from georsclip_jax.models.configs import list_models
    from georsclip_jax.models.layers import REMAT_POLICIES
    from georsclip_jax.sharding import PRESETS
    from georsclip_jax.transforms import AUGMENTATIONS

    return {"model.name": list_models(), "model.act": ["", "gelu", "quick_gelu"],
            "model.dtype": ["float32", "bfloat16"], "model.remat": sorted(REMAT_POLICIES),
            "model.attention_impl": ["", "xla", "cudnn"], "train.loss": ["clip", "siglip"],
            "optim.schedule": ["cosine", "constant"], "data.kind": KINDS, "data.mix.kind": KINDS,
            "data.augment": [*AUGMENTATIONS, "none"], "data.image_dtype": ["uint8", "float32"],
            "eval.protocol": ["georsclip", "clip_benchmark"], "sharding.rules": sorted(PRESETS),
            "eval.tasks": list(TASKS), "eval.tfds": list(TFDS_SETS)}


def _field(config, path: str):
    for part in path.split("."):
        config = config[part]
    return config


def validate_values(config) -> None:
    """Every numeric field in its range and every name in its registry, or one line naming the field."""
    for path, test, meaning in RANGES:
        value = _field(config, path)
        if not test(value):
            raise ValueError(f"config.{path}: {value!r} must be {meaning}")
    for path, known in choices().items():
        value = _field(config, path)
        if path in ("eval.tasks", "eval.tfds"):
            names = [t for t in str(value).split(",") if t]
        elif path == "sharding.rules" and not isinstance(value, str):
            continue  # an explicit rule list, checked where it is resolved
        else:
            names = [str(value)]
        for name in names:
            if name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {near[0]}?)" if near else f"; known: {', '.join(k or repr(k) for k in known)}"
                raise ValueError(f"config.{path}: unknown {name!r}{hint}")


def unknown_keys(config, schema, prefix="config") -> list[str]:
    out = []
    for key in config.keys():
        path = f"{prefix}.{key}"
        if key not in schema:
            out.append(path)
        elif isinstance(schema[key], ml_collections.ConfigDict) and path != "config.mesh":
            out.extend(unknown_keys(config[key], schema[key], path))
    return out


def data_files(data, path: str) -> list[str]:
    if data.kind == "tar":
        return [p for pattern in path.split("::") for p in expand_braces(pattern)]
    if data.kind == "array_record":
        return storage.glob(path)
    if data.kind == "karpathy":
        return path.split("::") + data.image_root.split("::")
    return [path]


def validate_workdir(workdir: str) -> None:
    """Checkpoints go through Orbax, which writes local paths and gs:// (TensorStore's GCS driver). A local
    workdir is created and written to once here, so a read-only one stops the run before it starts."""
    if storage.is_remote(workdir):
        if not workdir.startswith("gs://"):
            raise ValueError(f"--workdir: {workdir}: Orbax writes checkpoints to local paths and gs:// only; use "
                             "a gs:// bucket or a mounted path (data may still be read from other object stores)")
        return
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as e:
        raise ValueError(f"--workdir: {workdir}: cannot write there ({e.strerror or e})") from None


def validate_init_from(init_from: str) -> None:
    """A path or URL must exist; a Hub id is fetched into the Hub cache now (so a typo stops the run here)."""
    from georsclip_jax import hub

    if not hub.is_hub_id(init_from):
        if not storage.exists(init_from):
            raise ValueError(f"config.model.init_from: not found: {init_from}")
        return
    try:
        hub.resolve(init_from)
    except (ValueError, ImportError) as e:
        raise ValueError(f"config.model.init_from: {e}") from None


def validate(config, device_count: int, workdir: str | None = None, check_data: bool = True) -> None:
    """Raises ValueError naming the first bad field. `check_data=False` (planning a run on another
    machine) skips the checks that the data and weights exist."""
    from georsclip_jax.sharding import BATCH_AXES, mesh_shape
    from georsclip_jax.train.partition import validate_peft

    bad = unknown_keys(config, base_config())
    if bad:
        raise ValueError(f"{bad[0]}: unknown config key")
    if workdir is not None:
        validate_workdir(workdir)
    validate_values(config)
    mesh = mesh_shape(dict(config.mesh), device_count)
    dp = 1
    for axis in BATCH_AXES:
        dp *= mesh.get(axis, 1)
    train = config.train
    if train.global_batch_size % dp:
        raise ValueError(f"config.train.global_batch_size: {train.global_batch_size} is not divisible by the "
                         f"data-parallel size {dp} (mesh {mesh})")
    if train.accum_steps < 1 or train.global_batch_size % (train.accum_steps * dp):
        raise ValueError(f"config.train.accum_steps: {train.accum_steps} micro-batches do not divide the batch "
                         f"{train.global_batch_size} over {dp} data-parallel devices")
    window = tuple(train.profile_steps)
    if len(window) != 2 or not 0 <= window[0] <= window[1]:
        raise ValueError(f"config.train.profile_steps: {window} is not (start, stop) with 0 <= start <= stop")
    validate_peft(config.peft)
    if config.data.kind == "array_record" and storage.is_remote(config.data.train):
        raise ValueError(f"config.data.train: {config.data.train}: ArrayRecord shards are read with local file "
                         "I/O; copy them to a local disk or read tar shards from object storage")
    if not config.data.synthetic.train_samples and not config.data.train:
        raise ValueError("config.data.train: no training data given")
    mixed = config.data.mix.weight > 0
    if mixed and not config.data.mix.train:
        raise ValueError(f"config.data.mix.train: a second corpus at weight {config.data.mix.weight} needs its data")
    if check_data:
        checks = [] if config.data.synthetic.train_samples else [(config.data, "data", "train"),
                                                                 (config.data, "data", "val")]
        if mixed:
            checks.append((config.data.mix, "data.mix", "train"))
        for data, prefix, key in checks:
            path = data[key]
            missing = [p for p in data_files(data, path) if not storage.glob(p)] if path else []
            if missing or (path and not data_files(data, path)):
                raise ValueError(f"config.{prefix}.{key}: not found: {missing[0] if missing else path}")
    if check_data and config.model.init_from:
        validate_init_from(config.model.init_from)
    if config.eval.every_steps and not (config.eval.data_root or config.data.val or config.data.synthetic.train_samples):
        raise ValueError("config.eval.data_root: eval.every_steps is set but there is no eval data")

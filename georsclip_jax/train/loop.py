"""`train_and_evaluate(config, workdir)`: the whole training run, resumable by re-running it.

Order of work: validate the config; build the mesh; build the model with parameters born sharded
(or converted weights placed straight into their shardings); attach LoRA adapters if asked; split
the state into the trainable and the frozen partition (train/partition.py); build the optimizer state
of the trainable one under jit;
open the data pipeline; restore the newest checkpoint (train state + data-iterator state) if any;
AOT-compile the step and print its memory report; train with a progress bar, JSONL + TensorBoard
metrics, periodic checkpoints and evals; save on SIGTERM and exit cleanly.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from georsclip_jax import sharding
from georsclip_jax.adapters import base_fingerprint, save_adapter
from georsclip_jax.checkpoint import Checkpointer, abstract_like
from georsclip_jax.data.pipeline import DataIterator, PipelineOptions, SampleTransform, build_dataset
from georsclip_jax.models.clip import CLIP
from georsclip_jax.models.configs import get_model_config
from georsclip_jax.models.layers import ModelOptions
from georsclip_jax.models.lora import LoRAParam, add_lora
from georsclip_jax.train.config import validate
from georsclip_jax.train.optim import make_optimizer
from georsclip_jax.train.partition import lora_config, split_trainable
from georsclip_jax.train.step import TrainState, make_train_step
from georsclip_jax.train.validation import ValidationLoss

log = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s per device, for MFU (float32 runs report none).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "TPU v4": 275e12,
                   "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12}


def model_options(config) -> ModelOptions:
    return ModelOptions(dtype=config.model.dtype, attention_impl=config.model.attention_impl or None,
                        remat=config.model.remat)


def build_model(config, mesh) -> CLIP:
    """Parameters born sharded: initialized under jit with out_shardings, or loaded into them."""
    from georsclip_jax.factory import create_model
    from georsclip_jax.interop.params import abstract_model

    options, act = model_options(config), config.model.act or None
    rules, min_size = config.sharding.rules, config.sharding.fsdp_min_size
    if config.model.init_from:
        named = config.model.name or None
        shardings = (sharding.param_shardings(nnx.state(abstract_model(get_model_config(named), options)), mesh,
                                              rules, min_size) if named else None)
        model = create_model(named, config.model.init_from, act=act, options=options, shardings=shardings)
        if shardings is None:  # architecture inferred from the file: place now that it is known
            graphdef, state = nnx.split(model)
            state = jax.device_put(state, sharding.param_shardings(state, mesh, rules, min_size))
            model = nnx.merge(graphdef, state)
        return model
    model_config = get_model_config(config.model.name)
    model_config = model_config.replace(act=act) if act else model_config
    graphdef, abstract_state = nnx.split(abstract_model(model_config, options))
    shardings = sharding.param_shardings(abstract_state, mesh, rules, min_size)
    init = lambda: nnx.state(CLIP(model_config, options, rngs=nnx.Rngs(config.train.seed)))
    return nnx.merge(graphdef, jax.jit(init, out_shardings=shardings)())


def attach_lora(model: CLIP, config, mesh) -> None:
    """Adapters from `config.peft.lora`, placed in the shardings their base kernels dictate
    (`sharding.lora_spec`). They are small: made on the host with the run's seed (the same on every
    process), then put in place."""
    add_lora(model, lora_config(config.peft), nnx.Rngs(config.train.seed))
    adapters = nnx.state(model, LoRAParam)
    shardings = sharding.param_shardings(adapters, mesh, config.sharding.rules, config.sharding.fsdp_min_size)
    nnx.update(model, jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), adapters, shardings))


def synthetic_data(config, workdir: str) -> dict:
    """Generate the demo's synthetic RS data under WORKDIR/data once (process 0; others wait)."""
    from jax.experimental import multihost_utils

    from georsclip_jax.data import synthetic

    syn = config.data.synthetic
    root = os.path.join(workdir, "data")
    done = os.path.join(root, "COMPLETE")
    if jax.process_index() == 0 and not os.path.exists(done):
        synthetic.write_rs5m_shards(os.path.join(root, "train"), syn.train_samples, syn.samples_per_shard,
                                    config.train.seed, (syn.min_size, syn.max_size))
        if syn.val_samples:
            synthetic.write_rs5m_shards(os.path.join(root, "val"), syn.val_samples, syn.samples_per_shard,
                                        config.train.seed, (syn.min_size, syn.max_size), "val", stream=1)
        synthetic.write_test_data(os.path.join(root, "rs5m_test_data"), syn.eval_per_class, syn.retrieval_images,
                                  syn.selo_images, seed=config.train.seed + 1)
        open(done, "w").close()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("synthetic data")
    return {"train": os.path.join(root, "train", "*.tar"), "eval": os.path.join(root, "rs5m_test_data"),
            "val": os.path.join(root, "val", "*.tar") if syn.val_samples else ""}


def make_source(data, train_path: str):
    import glob

    from georsclip_jax.data.array_record import ArrayRecordSource
    from georsclip_jax.data.metafile import KarpathyJsonSource, MetafileSource
    from georsclip_jax.data.tar_shards import TarShardSource

    if data.kind == "array_record":
        return ArrayRecordSource(sorted(glob.glob(train_path)))
    if data.kind == "karpathy":
        return KarpathyJsonSource(train_path.split("::"), data.image_root.split("::"), "train",
                                  [p for p in data.exclude.split("::") if p])
    if data.kind == "metafile":
        column = lambda c: int(c) if str(c).isdigit() else c
        return MetafileSource(train_path, data.image_root, column(data.image_column),
                              tuple(column(c) for c in str(data.caption_columns).split(",")))
    return TarShardSource(train_path)


def make_data_iterator(config, source, preprocess, mesh) -> DataIterator:
    data = config.data
    transform = SampleTransform(preprocess, augment=None if data.augment == "none" else data.augment,
                                context_length=77, max_pixels=data.max_pixels, image_dtype=data.image_dtype,
                                jpeg_draft=data.jpeg_draft)
    options = PipelineOptions(global_batch_size=config.train.global_batch_size, seed=config.train.seed,
                              num_workers=data.num_workers, process_index=jax.process_index(),
                              process_count=jax.process_count())
    return DataIterator(build_dataset(source, transform, options),
                        sharding=sharding.batch_sharding(mesh), prefetch=2)


def total_steps(config, num_samples: int) -> int:
    """`train.epochs` (if set) over the source's samples, else `train.total_steps`."""
    if config.train.epochs:
        return max(1, int(np.ceil(config.train.epochs * num_samples / config.train.global_batch_size)))
    return config.train.total_steps


def peak_flops(config) -> float | None:
    if config.model.dtype != "bfloat16":
        return None
    kind = jax.devices()[0].device_kind
    return next((flops for name, flops in PEAK_BF16_FLOPS.items() if name in kind), None)


class Preempted:
    """Turns SIGTERM into a flag the loop checks between steps (save, then exit cleanly)."""

    def __init__(self):
        self.flag = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint at the current step and exiting")
        self.flag = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


class MetricsLog:
    """JSONL (always) and TensorBoard event files, written by process 0 only."""

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        if self.enabled:
            from tensorboardX import SummaryWriter

            self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict):
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self.tensorboard.add_scalar(key.replace("@", "_at_"), value, step)

    def close(self):
        if self.enabled:
            self.jsonl.close()
            self.tensorboard.close()


def optimizer_shardings(optimizer, params, replicated):
    """Moments take their parameter's sharding (matched by the longest parameter path their own path
    ends with); everything else (step counts) is replicated."""
    by_path = {jax.tree_util.keystr(k): x.sharding for k, x in jax.tree_util.tree_flatten_with_path(params)[0]}

    def place(path, leaf):
        key = jax.tree_util.keystr(path)
        matches = [p for p in by_path if key.endswith(p)]
        return by_path[max(matches, key=len)] if matches else replicated
    return jax.tree_util.tree_map_with_path(place, jax.eval_shape(optimizer.init, params))


def compile_step(step_fn, state, frozen, batch_shapes, state_shardings, batch_shard):
    """AOT-compile the step before step 1 and report its memory and FLOPs. The train state is donated;
    the frozen partition is only read."""
    frozen_shardings = jax.tree.map(lambda x: x.sharding, frozen)
    jitted = jax.jit(step_fn, in_shardings=(state_shardings, frozen_shardings, batch_shard),
                     out_shardings=(state_shardings, None), donate_argnums=0)
    compiled = jitted.lower(state, frozen, batch_shapes).compile()
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    report = {"flops_per_step_per_device": float((cost or {}).get("flops", 0.0))}
    if memory is not None:
        for field in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
                      "peak_memory_in_bytes", "generated_code_size_in_bytes"):
            report[field] = int(getattr(memory, field, 0))
    return compiled, report


def batch_structs(config, preprocess, batch_shard):
    b, s = config.train.global_batch_size, preprocess.image_size
    dtype = jnp.uint8 if config.data.image_dtype == "uint8" else jnp.float32
    shapes = {"image": ((b, s, s, 3), dtype), "tokens": ((b, 77), jnp.int32), "mask": ((b,), jnp.bool_)}
    return {k: jax.ShapeDtypeStruct(shape, d, sharding=batch_shard) for k, (shape, d) in shapes.items()}


def train_and_evaluate(config, workdir: str) -> dict:
    from tqdm import tqdm

    os.makedirs(workdir, exist_ok=True)
    validate(config, jax.device_count())
    mesh = sharding.make_mesh(dict(config.mesh))
    paths = synthetic_data(config, workdir) if config.data.synthetic.train_samples else {
        "train": config.data.train, "eval": config.eval.data_root, "val": config.data.val}
    model = build_model(config, mesh)
    base = base_fingerprint(model)
    adapters = lora_config(config.peft)
    if adapters:
        attach_lora(model, config, mesh)
    preprocess = model.preprocess
    graphdef, params, frozen = split_trainable(model, config.peft)
    source = make_source(config.data, paths["train"])
    total = total_steps(config, len(source))
    optimizer, lr_schedule = make_optimizer(config.optim, total, params)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    opt_state = jax.jit(optimizer.init, out_shardings=optimizer_shardings(optimizer, params, replicated))(params)
    state = TrainState(jax.device_put(jnp.zeros((), jnp.int32), replicated), params, opt_state)
    state_shardings = jax.tree.map(lambda x: x.sharding, state)
    batch_shard = sharding.batch_sharding(mesh)
    step_fn = make_train_step(graphdef, optimizer, lr_schedule, config.train.loss, config.train.accum_steps,
                              preprocess.mean, preprocess.std,
                              dropout_seed=config.train.seed if adapters and adapters.dropout else None)

    checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"), config.train.keep_checkpoints,
                               config.train.async_checkpoints)
    batches = make_data_iterator(config, source, preprocess, mesh)
    start = checkpoints.latest_step()
    if start is not None:
        state, data_state, meta = checkpoints.restore(start, abstract_like(state))
        if meta.get("base_fingerprint", base) != base:
            raise ValueError(f"config.model.init_from: the checkpoint {checkpoints.directory}/{start} was trained "
                             f"from another base model (fingerprint {meta['base_fingerprint'][:12]}, this run's is "
                             f"{base[:12]}); resume with the original base or start a fresh workdir")
        batches.set_state(data_state)
        log.info("resumed from step %d", start)
    compiled, report = compile_step(step_fn, state, frozen, batch_structs(config, preprocess, batch_shard),
                                    state_shardings, batch_shard)
    report["trainable_params"] = sum(x.size for x in jax.tree.leaves(params))
    report["frozen_params"] = sum(x.size for x in jax.tree.leaves(frozen))
    if jax.process_index() == 0:
        print("compiled train step:", json.dumps(report), flush=True)

    suite = make_suite(config, model, paths["eval"])
    validation = (ValidationLoss(config, make_source(config.data, paths["val"]), preprocess, mesh, graphdef)
                  if paths["val"] else None)
    evaluate = lambda params: run_evals(suite, validation, graphdef, params, frozen)
    metrics_log = MetricsLog(workdir)
    preempted = Preempted()
    peak = peak_flops(config)
    first = int(state.step)
    history = []
    bar = tqdm(total=total, initial=first, desc="train", unit="step", disable=jax.process_index() != 0)
    tick, step = time.perf_counter(), first
    try:
        for step in range(first, total):
            batch = next(batches)
            state, metrics = compiled(state, frozen, {k: batch[k] for k in ("image", "tokens", "mask")})
            done = step + 1
            if done % config.train.log_every == 0 or done == total:
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                elapsed, tick = time.perf_counter() - tick, time.perf_counter()
                steps_timed = config.train.log_every if done % config.train.log_every == 0 else done % config.train.log_every
                rate = steps_timed * config.train.global_batch_size / elapsed
                metrics.update({"images_per_s": rate, "images_per_s_per_device": rate / jax.device_count(),
                                **{f"skipped/{k}": v for k, v in batches.skipped.items()}})
                if peak:
                    metrics["mfu"] = report["flops_per_step_per_device"] * steps_timed / elapsed / peak
                history.append({"step": done, **metrics})
                metrics_log.write(done, metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            if config.eval.every_steps and done % config.eval.every_steps == 0 and done != total:
                metrics_log.write(done, evaluate(state.params))
            bar.update(1)
            if preempted.flag or done % config.train.checkpoint_every == 0 or done == total:
                checkpoints.save(done, state, batches.get_state(),
                                 {"step": done, "config": config.to_dict(), "base_fingerprint": base}, force=True)
            if preempted.flag:
                break
    finally:
        bar.close()
        checkpoints.wait()
        checkpoints.close()
        batches.close()
        preempted.restore()
    results = {"steps": int(state.step), "preempted": preempted.flag, "compile": report,
               "last": history[-1] if history else {}}
    if not preempted.flag and (suite or validation):
        evaluation = evaluate(state.params)
        results["eval"] = {k.removeprefix("eval/"): v for k, v in evaluation.items()}
        metrics_log.write(int(state.step), evaluation)
    metrics_log.close()
    if not preempted.flag:
        exports = config.export.open_clip or lora_config(config.peft) is not None
        params, frozen = host_copy((state.params, frozen)) if exports else (state.params, frozen)
        if jax.process_index() == 0:
            finish(config, workdir, nnx.merge(graphdef, params, frozen), results, base)
    return results


def host_copy(tree):
    """Arrays split across processes gathered whole onto every host (a collective: all processes call
    it), so process 0 can export them; single-process arrays pass through."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def run_evals(suite, validation, graphdef, params, frozen) -> dict:
    """Validation loss and the eval suite on the current parameters (both partitions)."""
    out = {"eval/val_loss": validation(params, frozen)} if validation else {}
    if suite:
        every_param = nnx.state(nnx.merge(graphdef, params, frozen), nnx.Param)
        out.update({f"eval/{k}": v for k, v in suite(every_param).items()})
    return out


def make_suite(config, model, eval_root: str):
    if not eval_root or not (config.eval.every_steps or config.eval.tasks):
        return None
    from georsclip_jax.evals.suite import Suite

    tasks = [t for t in config.eval.tasks.split(",") if t]
    return Suite(model, eval_root, tasks, config.eval.batch_size, config.eval.protocol) if tasks else None


def finish(config, workdir: str, model, results: dict, base: str):
    """results.json, the loss curve as PNG, the adapters (if any) and the open_clip export (merged)."""
    from georsclip_jax.train.plot import plot_loss

    if config.export.loss_plot:
        plot_loss(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "loss.png"))
    if lora_config(config.peft):
        results["adapter"] = str(save_adapter(model, os.path.join(workdir, "adapter"), base))
    if config.export.open_clip:
        from georsclip_jax.factory import export_open_clip

        results["open_clip_export"] = str(export_open_clip(model, os.path.join(workdir, "open_clip")))
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)

"""`train_and_evaluate(config, workdir)`: the whole training run, resumable by re-running it.

Order of work: validate the config; build the mesh; build the program (train/program.py: the model
with parameters born sharded or converted weights placed into their shardings, LoRA adapters, the
trainable/frozen partition, the optimizer state under jit, the step); open the data pipeline; restore
the newest checkpoint (train state + this process's data-iterator state) if any; AOT-compile the
step and print its memory report; train with a progress bar, JSONL + TensorBoard metrics, periodic
checkpoints and evals; on a preemption notice save at the step all processes agree on and exit cleanly.

The workdir and the data may be local or in object storage (`gs://`): everything goes through the
path layer (storage.py).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time

import jax
import numpy as np
import optax
from flax import nnx

from georsclip_jax import compilation_cache, sharding, storage
from georsclip_jax.adapters import base_fingerprint, save_adapter
from georsclip_jax.checkpoint import Checkpointer, abstract_like
from georsclip_jax.data.demo_data import run_data
from georsclip_jax.data.pipeline import DataIterator, PipelineOptions, SampleTransform, build_dataset
from georsclip_jax.train.config import validate
from georsclip_jax.train.guard import Guard
from georsclip_jax.train.partition import lora_config
from georsclip_jax.train.program import (attach_lora, batch_structs, build_model, compile_step, initial_state,
                                         make_program)
from georsclip_jax.train.profiler import IntervalTimer, ProfileWindow
from georsclip_jax.train.summary import run_summary
from georsclip_jax.train.validation import ValidationLoss

log = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s per device, for MFU (float32 runs report none).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "TPU v4": 275e12,
                   "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12}
INPUT_BOUND = 0.5  # a log interval spending more than this share waiting for data is input-bound
SYNC_SECONDS = 30  # how often an object-storage workdir receives the metrics between checkpoints


def make_source(data, train_path: str, workdir: str):
    from georsclip_jax.data.array_record import ArrayRecordSource
    from georsclip_jax.data.index import Hosts
    from georsclip_jax.data.metafile import KarpathyJsonSource, MetafileSource
    from georsclip_jax.data.tar_shards import TarShardSource

    if data.kind == "array_record":
        return ArrayRecordSource(storage.glob(train_path))
    if data.kind == "karpathy":
        return KarpathyJsonSource(train_path.split("::"), data.image_root.split("::"), "train",
                                  [p for p in data.exclude.split("::") if p])
    if data.kind == "metafile":
        column = lambda c: int(c) if str(c).isdigit() else c
        return MetafileSource(train_path, data.image_root, column(data.image_column),
                              tuple(column(c) for c in str(data.caption_columns).split(",")))
    return TarShardSource(train_path, workdir=workdir, hosts=Hosts.of_jax())


def make_sources(config, train_path: str, workdir: str) -> tuple[list, tuple[float, ...] | None]:
    """The training corpus, and the second one mixed in at `data.mix.weight` (with the weights) if any."""
    sources = [make_source(config.data, train_path, workdir)]
    mix = config.data.mix
    if not mix.weight:
        return sources, None
    return sources + [make_source(mix, mix.train, workdir)], (1 - mix.weight, mix.weight)


def make_data_iterator(config, sources: list, weights, preprocess, mesh) -> DataIterator:
    data = config.data
    transform = SampleTransform(preprocess, augment=None if data.augment == "none" else data.augment,
                                context_length=77, max_pixels=data.max_pixels, image_dtype=data.image_dtype,
                                jpeg_draft=data.jpeg_draft)
    options = PipelineOptions(global_batch_size=config.train.global_batch_size, seed=config.train.seed,
                              num_workers=data.num_workers, read_threads=data.read_threads,
                              process_index=jax.process_index(),
                              process_count=jax.process_count())
    return DataIterator(build_dataset(sources if weights else sources[0], transform, options, weights),
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


class Preemption:
    """When to save and stop after a preemption notice (SIGTERM, or a TPU maintenance event).

    A notice reaches processes at different times, and a save is a collective: each process stopping
    at the step it saw the notice would deadlock the others. With several processes, JAX's preemption
    sync manager (started by `jax.distributed.initialize`; it catches SIGTERM itself) is asked at every
    step and answers True at the same step on every process (one past the furthest any had reached).
    A single process simply turns SIGTERM into a flag."""

    def __init__(self, checkpoints: Checkpointer):
        self.checkpoints, self.flag = checkpoints, False
        self.agreed = jax.process_count() > 1
        self._previous = None if self.agreed else signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint at the current step and exiting")
        self.flag = True

    def reached(self, step: int) -> bool:
        """Called by every process after every step; True means: save `step` now and stop."""
        if self.agreed and self.checkpoints.reached_preemption(step):
            log.warning("preemption: all processes save step %d and exit", step)
            self.flag = True
        return self.flag

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def global_skips(local: dict[str, int]) -> dict[str, int]:
    """Skip counts summed over processes (a collective: every process calls it at the same step)."""
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    counts = multihost_utils.process_allgather(np.asarray(list(local.values()), np.int64))
    return {reason: int(n) for reason, n in zip(local, np.asarray(counts).reshape(-1, len(local)).sum(0))}


# tensorboardX imports these, when installed, for what this log never does (torch tensors as values, s3://
# and gs:// logdirs: ours is a local folder that Outputs mirrors): 1.5-4 s of every start-up.
TENSORBOARDX_EXTRAS = ("torch", "boto3", "google.cloud.storage")


def summary_writer(logdir: str):
    """tensorboardX's SummaryWriter, imported without its optional extras (those not already imported)."""
    skipped = [name for name in TENSORBOARDX_EXTRAS if name not in sys.modules]
    sys.modules.update(dict.fromkeys(skipped, None))  # an import of these now fails, as if not installed
    try:
        from tensorboardX import SummaryWriter
    finally:
        for name in skipped:
            sys.modules.pop(name, None)
    return SummaryWriter(logdir)


class MetricsLog:
    """JSONL and TensorBoard event files, written by process 0 only, into the run's outputs (mirrored
    to an object-storage workdir at most every SYNC_SECONDS, and at every checkpoint)."""

    def __init__(self, outputs: storage.Outputs, resumed_at: int | None):
        self.enabled, self.outputs = jax.process_index() == 0, outputs
        if not self.enabled:
            return
        path = outputs.path("metrics.jsonl")
        if resumed_at is not None and outputs.fetch("metrics.jsonl"):
            keep_until(path, resumed_at)  # steps after the checkpoint are trained (and logged) again
        self.jsonl = open(path, "a")
        if resumed_at is not None:
            self.jsonl.write(json.dumps({"step": resumed_at, "resumed": True}) + "\n")  # marked on the plots
        self.tensorboard = summary_writer(outputs.path("tensorboard"))
        self._synced = time.monotonic()

    def write(self, step: int, metrics: dict):
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self.tensorboard.add_scalar(key.replace("@", "_at_"), value, step)
        if time.monotonic() - self._synced > SYNC_SECONDS:
            self.sync()

    def sync(self):
        if self.enabled:
            self.tensorboard.flush()
            self.outputs.sync()
            self._synced = time.monotonic()

    def close(self):
        if self.enabled:
            self.jsonl.close()
            self.tensorboard.close()


def compile_line(report: dict) -> str:
    """The compiled step in one line, in the plan's terms (plan.py): where it came from, its matmul FLOPs
    and memory per device, the parameter counts."""
    from georsclip_jax.plan import flops_text, size_text, total_bytes

    how = "loaded from the compilation cache" if report["from_compilation_cache"] else "compiled"
    memory = (f"memory per device {size_text(total_bytes(report))} (arguments "
              f"{size_text(report['argument_size_in_bytes'])}, temporaries {size_text(report['temp_size_in_bytes'])})"
              if "argument_size_in_bytes" in report else "memory per device not reported by this backend")
    return (f"train step {how} in {report['compile_seconds']:.1f} s: {flops_text(report['flops_per_step_per_device'])}"
            f" of matmuls per device per step, {memory}; {report['trainable_params'] / 1e6:.2f} M trainable and "
            f"{report['frozen_params'] / 1e6:.2f} M frozen parameters")


def progress_note(metrics: dict) -> dict[str, str]:
    """The progress bar's postfix: loss, and the share of time spent waiting for data (flagged when the
    input pipeline, not the step, sets the pace)."""
    waiting = metrics["time/data_wait_fraction"]
    return {"loss": f"{metrics['loss']:.3f}",
            "data_wait": f"{waiting:.0%}" + (" (input-bound)" if waiting > INPUT_BOUND else "")}


def keep_until(jsonl_path: str, step: int) -> None:
    """Drop the lines logged after `step` (a resumed run logs them again)."""
    with open(jsonl_path) as f:
        lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(jsonl_path, "w") as f:
        f.writelines(lines)


def train_and_evaluate(config, workdir: str) -> dict:
    from tqdm import tqdm

    storage.set_retry_seconds(config.data.retry_seconds)
    validate(config, jax.device_count(), workdir=workdir)
    compilation_cache.enable(config.train.compilation_cache, workdir)
    outputs = storage.Outputs(workdir)
    mesh = sharding.make_mesh(dict(config.mesh))
    paths = run_data(config, outputs)
    model = build_model(config, mesh)
    base = base_fingerprint(model)
    adapters = lora_config(config.peft)
    if adapters:
        attach_lora(model, config, mesh)
    preprocess = model.preprocess
    sources, weights = make_sources(config, paths["train"], outputs.workdir)
    total = total_steps(config, sum(map(len, sources)))
    program, params, frozen = make_program(config, mesh, model, total)
    state, graphdef = initial_state(program, params), program.graphdef

    checkpoints = Checkpointer(storage.join(outputs.workdir, "checkpoints"), config.train.keep_checkpoints,
                               config.train.async_checkpoints)
    batches = make_data_iterator(config, sources, weights, preprocess, mesh)
    start = checkpoints.latest_step()
    if start is not None:
        check_resumable(config, checkpoints.read_meta(start), base, f"{checkpoints.directory}/{start}")
        state, data_state, _ = checkpoints.restore(start, abstract_like(state))
        batches.set_state(data_state)
        log.info("resumed from step %d", start)
    started = time.perf_counter()
    with compilation_cache.CacheHits() as loaded:
        compiled, report = compile_step(program, state, frozen,
                                        batch_structs(config, preprocess.image_size, program.batch_sharding))
    report.update(compile_seconds=time.perf_counter() - started, from_compilation_cache=loaded.count > 0)
    report["trainable_params"] = sum(x.size for x in jax.tree.leaves(params))
    report["frozen_params"] = sum(x.size for x in jax.tree.leaves(frozen))
    if jax.process_index() == 0:
        print(compile_line(report), flush=True)

    suite = make_suite(config, model, storage.local_copy(paths["eval"]) if paths["eval"] else "")
    validation = (ValidationLoss(config, make_source(config.data, paths["val"], outputs.workdir), preprocess,
                                 mesh, graphdef) if paths["val"] else None)
    evaluate = lambda params: run_evals(suite, validation, graphdef, params, frozen)
    metrics_log = MetricsLog(outputs, start)
    preemption = Preemption(checkpoints)
    profile = ProfileWindow(config.train.profile_steps, outputs.path("tensorboard"), jax.process_index() == 0)
    guard = Guard(float(jax.jit(optax.tree.norm)(state.params)), config.train.max_param_growth,
                  checkpoints.latest_step, checkpoints.directory)
    timer = IntervalTimer()
    peak = peak_flops(config)
    first = int(state.step)
    history = []
    bar = tqdm(total=total, initial=first, desc="train", unit="step", disable=jax.process_index() != 0)
    try:
        for step in range(first, total):
            profile.before(step)
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                batch = timer.next_batch(batches)
                state, metrics = compiled(state, frozen, {k: batch[k] for k in ("image", "tokens", "mask")})
            profile.after(step, state)
            done = step + 1
            preempted = preemption.reached(done)
            logs = done % config.train.log_every == 0 or done == total
            saves = preempted or done % config.train.checkpoint_every == 0 or done == total
            if logs or saves:
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if logs:
                steps_timed, elapsed, split = timer.split()
                rate = steps_timed * config.train.global_batch_size / elapsed
                metrics.update({"images_per_s": rate, "images_per_s_per_device": rate / jax.device_count(), **split,
                                **{f"skipped/{k}": v for k, v in global_skips(batches.skipped).items()}})
                if peak:
                    metrics["mfu"] = report["flops_per_step_per_device"] * steps_timed / elapsed / peak
                history.append({"step": done, **metrics})
                metrics_log.write(done, metrics)
                bar.set_postfix(progress_note(metrics))
            if logs or saves:  # never train on from, or save, a state that is no longer finite or has exploded
                guard.check(done, metrics)
            if config.eval.every_steps and done % config.eval.every_steps == 0 and done != total:
                with timer.excluding():
                    metrics_log.write(done, evaluate(state.params))
            bar.update(1)
            if saves:
                checkpoints.save(done, state, batches.get_state(),
                                 {"step": done, "config": config.to_dict(), "base_fingerprint": base,
                                  "process_count": jax.process_count()}, force=True)
                metrics_log.sync()
            if preempted:
                break
    finally:
        profile.close()
        bar.close()
        try:
            checkpoints.close()  # waits for the last write; raises CheckpointWriteError if one failed
        finally:
            batches.close()
            preemption.restore()
            metrics_log.sync()
    results = {"steps": int(state.step), "preempted": preemption.flag, "compile": report,
               "last": history[-1] if history else {}}
    if not preemption.flag and (suite or validation):
        evaluation = evaluate(state.params)
        results["eval"] = {k.removeprefix("eval/"): v for k, v in evaluation.items()}
        metrics_log.write(int(state.step), evaluation)
    metrics_log.close()
    if not preemption.flag:
        exports = config.export.open_clip or lora_config(config.peft) is not None
        params, frozen = host_copy((state.params, frozen)) if exports else (state.params, frozen)
        if jax.process_index() == 0:
            finish(config, outputs, nnx.merge(graphdef, params, frozen), results, base)
    outputs.close()  # only process 0 wrote outputs; the others' staging is empty
    if jax.process_index() == 0:
        print(run_summary(results, workdir, config.model.name or "model"), flush=True)
    return results


def check_resumable(config, meta: dict, base: str, where: str) -> None:
    """A checkpoint resumes only the run that wrote it: the same base model, the same global batch
    (data positions count global batches), the same parameter layout (stacked when scanned)."""
    saved = meta.get("config", {})
    scanned = saved.get("model", {}).get("scan_layers", False)
    if scanned != config.model.scan_layers:
        raise ValueError(f"config.model.scan_layers: the checkpoint {where} stores its blocks "
                         f"{'stacked' if scanned else 'per layer'} (scan_layers={scanned}); resume with that "
                         "setting, or export it (read_state + save_pretrained) and start from the export")
    if meta.get("base_fingerprint", base) != base:
        raise ValueError(f"config.model.init_from: the checkpoint {where} was trained from another base model "
                         f"(fingerprint {meta['base_fingerprint'][:12]}, this run's is {base[:12]}); resume with "
                         "the original base or start a fresh workdir")
    saved_batch = saved.get("train", {}).get("global_batch_size")
    if saved_batch not in (None, config.train.global_batch_size):
        raise ValueError(f"config.train.global_batch_size: the checkpoint {where} was trained with global batch "
                         f"{saved_batch}, this run has {config.train.global_batch_size}; its data position "
                         "counts batches of that size, so resume with the same batch or start a fresh workdir")


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
    tfds_sets = [n for n in config.eval.tfds.split(",") if n]
    if not (eval_root or tfds_sets) or not (config.eval.every_steps or config.eval.tasks):
        return None
    from georsclip_jax.evals.suite import Suite

    tasks = [t for t in config.eval.tasks.split(",") if t]
    tfds_dir = storage.local_copy(config.eval.tfds_data_dir) if tfds_sets else ""
    shots = [int(k) for k in config.eval.shots.split(",") if k]
    return Suite(model, eval_root, tasks, config.eval.batch_size, config.eval.protocol, tfds_sets=tfds_sets,
                 tfds_data_dir=tfds_dir, knn_k=config.eval.knn_k, shots=shots,
                 fewshot_draws=config.eval.fewshot_draws) if tasks else None


def finish(config, outputs: storage.Outputs, model, results: dict, base: str):
    """results.json, the loss curve as PNG, the adapters (if any) and the open_clip export (merged)."""
    from georsclip_jax.train.plot import plot_run

    if config.export.loss_plot:
        plot_run(outputs.path("metrics.jsonl"), outputs.path("loss.png"))
    if lora_config(config.peft):
        save_adapter(model, outputs.path("adapter"), base)
        results["adapter"] = storage.join(outputs.workdir, "adapter")
    if config.export.open_clip:
        from georsclip_jax.factory import export_open_clip

        export_open_clip(model, outputs.path("open_clip"))
        results["open_clip_export"] = storage.join(outputs.workdir, "open_clip")
    with open(outputs.path("results.json"), "w") as f:
        json.dump(results, f, indent=1)

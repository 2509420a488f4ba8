"""Orbax checkpoints of a training run: train state, per-process data-iterator state, run metadata.

Saves are asynchronous and atomic (Orbax finalizes a step only once every item of every process is
written: a temporary directory renamed when complete, or a commit marker in object storage), so a
run killed mid-save leaves the previous checkpoint intact; the newest `keep` are kept. The train
state is restored straight into the shardings of the abstract state it is given. The directory may
be local or `gs://` (Orbax reaches it through etils.epath and TensorStore).

The data-iterator state differs per process (each host meets its own bad samples), so each process
writes its own `data/process_<i>-of-<n>.json`, as Grain's checkpoint handler does. Restoring on
another process count works because batches are positional (data/pipeline.py): the position, which
every process shares, carries over; the skip counts, which do not split, are summed into process 0's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import warnings

import jax
import orbax.checkpoint as ocp
from etils import epath

from georsclip_jax import storage

log = logging.getLogger(__name__)

PROCESS_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")
# Orbax splits the writing of a replicated array among its replicas, one device slice each; every slice
# shape is a program compiled at a process's first save (the tiny model on 8 devices: 1,400 slices, 150
# programs, 5 s; a pod pays this at every restart). Splitting pays off for large arrays only: smaller ones are
# written whole by one replica.
MIN_REPLICA_SLICE_BYTES = 2**20


def split_only_large_replicated_arrays() -> None:
    """Orbax's jax.Array handler (registered process-wide, as Orbax configures it) with the threshold."""
    from orbax.checkpoint._src.metadata import array_metadata_store

    handler = ocp.type_handlers.get_type_handler(jax.Array)
    if getattr(handler, "_min_slice_bytes_for_replica_parallel", None) == MIN_REPLICA_SLICE_BYTES:
        return
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # Orbax warns that the handler it registered is replaced: as intended
    try:
        ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(
            min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
            array_metadata_store=array_metadata_store.Store()), override=True)
    finally:
        absl_log.setLevel(level)


class DataStateHandler(ocp.CheckpointHandler):
    """Each process's data-iterator state in its own JSON file."""

    def save(self, directory: epath.Path, args: "DataStateSave"):
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        (directory / name).write_text(json.dumps(args.state))

    def restore(self, directory: epath.Path, args: "DataStateRestore" = None) -> dict:
        index, count = jax.process_index(), jax.process_count()
        own = directory / f"process_{index}-of-{count}.json"
        if own.exists():
            return json.loads(own.read_text())
        files = sorted((int(m[1]), int(m[2]), path) for path in directory.iterdir()
                       if (m := PROCESS_FILE.fullmatch(path.name)))
        if not files:
            raise FileNotFoundError(f"{directory}: no data-iterator state (process_<i>-of-<n>.json)")
        states = [json.loads(path.read_text()) for _, _, path in files]
        positions = {state["position"] for state in states}
        if len(positions) != 1 or len(files) != files[0][1]:
            raise ValueError(f"{directory}: the data states of the {files[0][1]} processes that wrote this "
                             f"checkpoint are incomplete or disagree (positions {sorted(positions)})")
        reasons = {reason for state in states for reason in state["skipped"]}
        totals = {r: sum(state["skipped"].get(r, 0) for state in states) if index == 0 else 0 for r in reasons}
        position = positions.pop()
        log.warning("data state written by %d processes restored onto %d: position %d; skip totals kept by "
                    "process 0", files[0][1], count, position)
        return {"position": position, "skipped": totals}

    def metadata(self, directory: epath.Path):
        return None

    def finalize(self, directory: epath.Path):
        pass

    def close(self):
        pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
    state: dict


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
    pass


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, quota, read-only volume); one line naming the file
    and the cause. Orbax commits a step only when all of it is written, so the newest checkpoint stays whole."""


def write_error(directory: str, step: int | None, error: Exception) -> CheckpointWriteError:
    """TensorStore reports a failed write as 'Failed writing: "<file>": <cause> [os_error_code=...]'."""
    found = re.search(r'Failed writing: "([^"]+)": (.*?)(?: \[os_error_code|$)', str(error), re.MULTILINE)
    if found:
        where, cause = found.groups()
    elif isinstance(error, OSError):
        where, cause = error.filename or directory, error.strerror or str(error)
    else:
        where, cause = directory, (str(error).splitlines() or [type(error).__name__])[0][:300]
    pending = re.search(r"/(\d+)\.orbax-checkpoint-tmp", where)  # a failed background write of an earlier step
    step = int(pending.group(1)) if pending else step
    saving = f"saving step {step}" if step is not None else "saving a checkpoint"
    return CheckpointWriteError(f"{saving}: cannot write {where}: {cause}")


class _RepeatsOfAFailedWrite(logging.Filter):
    """Orbax logs a failed background write with its traceback from each of its threads, then raises it
    from the next save or wait, where it becomes one CheckpointWriteError line: drop the logged copies."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        # Orbax's own logs, and asyncio's "Task exception was never retrieved" for Orbax's write tasks
        return not ("orbax" in record.pathname or record.name == "asyncio" and "orbax" in record.getMessage())


def report_write_failures_once() -> None:
    """One line per failed checkpoint write instead of hundreds: Orbax's logged copies are dropped, and so
    are the 'Event loop is closed' errors TensorStore's callbacks raise once the failed write's loop is gone."""
    for name in ("absl", "asyncio"):
        logging.getLogger(name).addFilter(_RepeatsOfAFailedWrite())
    # and the write tasks a failed write leaves un-awaited, which Python reports at exit
    warnings.filterwarnings("ignore", message="coroutine 'async_serialize_from_host", category=RuntimeWarning)
    default = sys.unraisablehook

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value)):
            default(unraisable)

    sys.unraisablehook = hook


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        self.directory = storage.resolve(directory)
        split_only_large_replicated_arrays()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(epath.Path(self.directory), options=options,
                                             item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict, meta: dict, force: bool = False) -> bool:
        """Starts writing `step` (in the background when async); an earlier background write that failed
        raises CheckpointWriteError here."""
        try:
            return self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=DataStateSave(data_state), meta=ocp.args.JsonSave(meta)),
                force=force)
        except Exception as e:  # noqa: BLE001 -- whatever the storage layer raised, the write failed
            raise write_error(self.directory, step, e) from None

    def read_meta(self, step: int) -> dict:
        """The run metadata alone (to check a checkpoint fits this run before restoring its state)."""
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def restore(self, step: int, abstract_state):
        """(state, data_state, meta); `abstract_state` leaves are ShapeDtypeStructs with shardings."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=DataStateRestore(), meta=ocp.args.JsonRestore()))
        return restored.state, restored.data, restored.meta

    def reached_preemption(self, step: int) -> bool:
        """True at the step every process agreed on after any of them got a preemption notice (JAX's
        preemption sync manager, which jax.distributed starts); always False in a single process."""
        return self.manager.reached_preemption(step)

    def wait(self):
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise write_error(self.directory, None, e) from None

    def close(self):
        """Waits for a pending write and stops the manager's threads (also after a failed write, so none
        is left to report the same failure again at exit); then raises that failure, if any."""
        failure = None
        try:
            self.wait()
        except CheckpointWriteError as e:
            failure = e
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001
            if failure is None:
                raise  # otherwise it is the same failed write, reported below
        if failure is not None:
            raise failure


def abstract_like(tree):
    """ShapeDtypeStructs carrying each array's sharding: the restore target for `tree`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def read_state(directory: str, step: int | None = None):
    """A saved train state as plain arrays on this process's first device, whatever mesh or process
    count wrote it (for inspection, export, or comparing runs); returns (step, state tree)."""
    checkpoints = Checkpointer(directory)
    step = checkpoints.latest_step() if step is None else step
    checkpoints.close()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    path = epath.Path(storage.join(storage.resolve(directory), str(step), "state"))
    reader = ocp.StandardCheckpointer()
    metadata = reader.metadata(path).item_metadata
    metadata = getattr(metadata, "tree", metadata)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
    return step, reader.restore(path, target)


def read_data_states(directory: str, step: int) -> dict[int, dict]:
    """Every process's saved data-iterator state at `step`, by process index."""
    folder = epath.Path(storage.join(storage.resolve(directory), str(step), "data"))
    return {int(m[1]): json.loads(path.read_text()) for path in folder.iterdir()
            if (m := PROCESS_FILE.fullmatch(path.name))}

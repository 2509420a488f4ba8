"""Orbax checkpoints of a training run: train state, data-iterator state, run metadata.

Saves are asynchronous and atomic (Orbax writes a temporary directory and renames it when complete,
so a run killed mid-save leaves the previous checkpoint intact); the newest `keep` are kept.
The train state is restored straight into the shardings of the abstract state it is given.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict, meta: dict, force: bool = False) -> bool:
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta)),
            force=force)

    def restore(self, step: int, abstract_state):
        """(state, data_state, meta); `abstract_state` leaves are ShapeDtypeStructs with shardings."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
        return restored.state, restored.data, restored.meta

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()


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
    path = os.path.join(os.path.abspath(directory), str(step), "state")
    reader = ocp.StandardCheckpointer()
    metadata = reader.metadata(path).item_metadata
    metadata = getattr(metadata, "tree", metadata)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
    return step, reader.restore(path, target)

"""Jitted, chunked, device-sharded top-k search: the kernel behind retrieval and zero-shot metrics.

Keys (the gallery) are sharded over every device along their rows; a fixed-size chunk of queries is
scored against each device's rows, each device keeps its local top-k, and the k·devices candidates
are merged. The full query × key matrix never exists, on any device or on the host: 100k images ×
500k captions costs chunk × keys/devices floats per device at a time. Shapes are fixed (queries and
keys padded, padding masked to -inf), so a whole evaluation compiles once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

AXIS = "devices"


def device_mesh() -> jax.sharding.Mesh:
    return jax.make_mesh((jax.device_count(),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


@functools.partial(jax.jit, static_argnames=("k", "k_local", "mesh"))
def _chunk_topk(queries, keys, key_valid, *, k: int, k_local: int, mesh):
    def local(q, kk, valid):
        scores = jnp.where(valid[None, :], q @ kk.T, -jnp.inf)
        values, index = jax.lax.top_k(scores, k_local)
        index = index + jax.lax.axis_index(AXIS) * kk.shape[0]
        # every device's candidates, [chunk, devices * k_local] in device order, then the global top-k;
        # ties keep the lower key index, as a single top_k over all keys would
        values = jnp.moveaxis(jax.lax.all_gather(values, AXIS), 0, 1).reshape(q.shape[0], -1)
        index = jnp.moveaxis(jax.lax.all_gather(index, AXIS), 0, 1).reshape(q.shape[0], -1)
        best_values, best = jax.lax.top_k(values, k)
        return best_values, jnp.take_along_axis(index, best, axis=1)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)), out_specs=(P(), P()),
                         check_vma=False)(queries, keys, key_valid)


def pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
    extra = (-len(x)) % multiple
    return np.concatenate([x, np.zeros((extra,) + x.shape[1:], x.dtype)]) if extra else x


def topk_search(queries: np.ndarray, keys: np.ndarray, k: int, chunk: int = 1024, mesh=None,
                progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices) [num_queries, k] of the k highest dot products of each query with the keys."""
    mesh = mesh or device_mesh()
    devices = mesh.devices.size
    if k > len(keys):
        raise ValueError(f"k={k} is larger than the {len(keys)} keys")
    k_local = min(k, -(-len(keys) // devices))
    keys_padded = pad_rows(np.asarray(keys, np.float32), devices)
    valid = np.arange(len(keys_padded)) < len(keys)
    key_sharding = NamedSharding(mesh, P(AXIS))
    keys_dev = jax.device_put(keys_padded, key_sharding)
    valid_dev = jax.device_put(valid, key_sharding)
    replicated = NamedSharding(mesh, P())
    queries = np.asarray(queries, np.float32)
    scores, indices = [], []
    for start in tqdm(range(0, len(queries), chunk), desc=progress, disable=progress is None, leave=False):
        block = pad_rows(queries[start:start + chunk], chunk) if len(queries) > chunk else queries[start:start + chunk]
        values, index = _chunk_topk(jax.device_put(block, replicated), keys_dev, valid_dev, k=k, k_local=k_local, mesh=mesh)
        n = min(chunk, len(queries) - start)
        scores.append(np.asarray(values)[:n])
        indices.append(np.asarray(index)[:n])
    return np.concatenate(scores), np.concatenate(indices)

"""Checkpoints and compiled programs across restarts, in process: a first save compiles a handful of
programs, not one per replica slice of every array; JAX's persistent cache goes where the run's
`train.compilation_cache` says. (A restart that loads its train step from the cache, end to end:
test_train_loop.py.)"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

import georsclip_jax as gj
from georsclip_jax import compilation_cache
from georsclip_jax.checkpoint import Checkpointer, abstract_like

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


def test_a_first_save_of_a_replicated_state_compiles_few_programs(tmp_path):
    """Orbax's replica-parallel write slices every replicated array among its 8 replicas, one compiled
    slice program per shape (150 programs, 5 s on this model); only arrays of 1 MiB per slice are split."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    state = jax.device_put(nnx.state(gj.create_model("tiny")), jax.sharding.NamedSharding(mesh, jax.P()))
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event) if event == BACKEND_COMPILE else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with compilation_cache.CacheHits() as loaded:  # the suite's persistent cache may hold them
            checkpoints = Checkpointer(str(tmp_path), async_save=False)
            checkpoints.save(1, state, {"position": 1, "skipped": {}}, {"step": 1})
            checkpoints.wait()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    programs = len(compiles) + loaded.count
    assert programs <= 16, programs  # the token embedding (12.6 MB) is still split 8 ways
    restored, data, _ = checkpoints.restore(1, abstract_like(state))
    checkpoints.close()
    assert data == {"position": 1, "skipped": {}}
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("setting,configured,expected", [
    ("", None, "{workdir}/compilation_cache"),
    ("", "/shared/jax_cache", "/shared/jax_cache"),
    ("gs://bucket/cache", "/shared/jax_cache", "gs://bucket/cache"),
    ("none", "/shared/jax_cache", None),
])
def test_the_cache_folder_follows_the_config(tmp_path, setting, configured, expected):
    expected = expected and expected.format(workdir=tmp_path)
    assert compilation_cache.cache_dir(setting, str(tmp_path), configured) == expected

"""Two real JAX processes (jax.distributed on CPU, gloo, 2 devices each) reading messy shards:
disjoint per-host streams whose union is exactly the valid samples, exact skip counts, identical
batches after a mid-epoch save/restore, and host batches assembled into one global jax.Array."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from georsclip_jax.data.tar_shards import TarShardSource
from messy_shards import expected, write_messy_shards

HERE = os.path.dirname(__file__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    root = tmp_path_factory.mktemp("multihost")
    shards = write_messy_shards(str(root / "shards"))
    port = str(free_port())
    env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "multihost_data_run.py"), str(i), port,
                               str(root / f"out{i}.json"), *shards], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    results = []
    for i in range(2):
        with open(root / f"out{i}.json") as f:
            results.append(json.load(f))
    return TarShardSource(shards), results


def test_hosts_are_disjoint_and_cover_every_valid_sample_once(two_hosts):
    source, (a, b) = two_hosts
    valid, _ = expected(source)
    assert a["seen"] and b["seen"] and not set(a["seen"]) & set(b["seen"])
    assert sorted(a["seen"] + b["seen"]) == sorted(valid)


def test_skip_counts_add_up_across_hosts(two_hosts):
    source, (a, b) = two_hosts
    _, skips = expected(source)
    total = {reason: a["skipped"][reason] + b["skipped"][reason] for reason in a["skipped"]}
    assert {k: v for k, v in total.items() if v} == skips


def test_restored_iterator_continues_identically_on_each_host(two_hosts):
    _, (a, b) = two_hosts
    assert a["resume_identical"] and b["resume_identical"]


def test_host_batches_form_one_global_array(two_hosts):
    _, (a, b) = two_hosts
    assert a["global_shape"] == b["global_shape"] == [8, 32, 32, 3]
    assert a["local_ids"] == a["host_ids"] and b["local_ids"] == b["host_ids"]
    assert a["global_id_sum"] == b["global_id_sum"] == sum(a["host_ids"]) + sum(b["host_ids"])

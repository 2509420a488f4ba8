"""Shards read in place from a store that behaves like one on a pod: an HTTP server that honours Range
(as the Hugging Face Hub's file URLs do, tests/range_server.py) behind a proxy that injects 503s and
dropped connections or takes the store down (tests/store_proxy.py).

One request per sample; transient faults never change a batch; an outage ends a run in one line within
the retry budget, and the re-run resumes bit for bit; an outage at start-up is called an outage."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest

from georsclip_jax import storage
from georsclip_jax.data.pipeline import DataIterator, PipelineOptions, SampleTransform, build_dataset
from georsclip_jax.data.tar_shards import PROBLEMS, TarShardSource
from georsclip_jax.models.configs import PreprocessConfig
from conftest import take
from messy_shards import write_messy_shards
from range_server import RangeServer
from runs import ROOT, SMALL, assert_bit_identical, command, env, final_params, run
from store_proxy import StoreProxy

TRANSFORM = SampleTransform(PreprocessConfig(image_size=32), augment="georsclip")
MESSY = "{pub11,rs3}-train-0000.tar::pub11-train-0001.tar"  # write_messy_shards's three shards


def patterns(url: str) -> str:
    return "::".join(f"{url}/{p}" for p in MESSY.split("::"))


@pytest.fixture()
def messy_store(tmp_path, monkeypatch):
    """Messy shards on local disk and served over HTTP through a faulty proxy: (local source, proxy)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_messy_shards(str(tmp_path / "shards"))
    with RangeServer(str(tmp_path / "shards")) as server, StoreProxy(server.url) as proxy:
        yield TarShardSource(patterns(str(tmp_path / "shards"))), proxy


def assert_same_batches(a: list[dict], b: list[dict]):
    assert len(a) == len(b) and all(x.keys() == y.keys() for x, y in zip(a, b))
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_one_request_per_sample_all_in_flight(messy_store):
    local, proxy = messy_store
    remote = TarShardSource(patterns(proxy.url))
    proxy.counters.reset()
    readable = [i for i in range(len(remote)) if not PROBLEMS[remote.index[i]["problem"]]]
    samples, expected = remote._getitems(readable), local._getitems(readable)  # noqa: SLF001
    assert [(s["image"], s["captions"]) for s in samples] == [(s["image"], s["captions"]) for s in expected]
    assert proxy.counters.requests == len(readable)  # image and caption in one ranged GET


def test_http_shards_with_faults_give_the_local_batches_skips_and_resume(messy_store):
    local, proxy = messy_store
    proxy.fault_rate = 0.05
    remote = TarShardSource(patterns(proxy.url), retry_seconds=60)
    assert len(remote) == len(local) and np.array_equal(remote.index, local.index)
    options = PipelineOptions(global_batch_size=8, seed=3, num_workers=1)
    straight = take(DataIterator(build_dataset(local, TRANSFORM, options)), 6)
    head_iterator = DataIterator(build_dataset(remote, TRANSFORM, options))
    head = take(head_iterator, 2)
    resumed = DataIterator(build_dataset(remote, TRANSFORM, options))
    resumed.set_state(head_iterator.get_state())
    assert_same_batches(straight, head + take(resumed, 4))
    epoch = PipelineOptions(global_batch_size=8, num_epochs=1, drop_remainder=False)
    here = DataIterator(build_dataset(local, TRANSFORM, epoch))
    there = DataIterator(build_dataset(remote, TRANSFORM, epoch))
    assert_same_batches(take(here), take(there))
    assert there.skipped == here.skipped and sum(here.skipped.values()) == 10
    assert proxy.counters.faults > 0  # the faults did happen, and changed nothing


def test_a_store_down_at_start_up_is_called_an_outage_not_a_missing_shard(messy_store):
    _, proxy = messy_store
    proxy.down = True
    storage.set_retry_seconds(1.5)
    try:
        start = time.monotonic()
        with pytest.raises(storage.StorageError, match=r"pub11-train-0000.tar: the store kept failing for 2 s"):
            TarShardSource(patterns(proxy.url))
        assert time.monotonic() - start < 10
        proxy.down = False
        with pytest.raises(FileNotFoundError, match="tar shard not found: .*/rs3-train-0009.tar"):
            TarShardSource(f"{proxy.url}/rs3-train-0009.tar")
    finally:
        storage.set_retry_seconds(storage.RETRY_SECONDS)


def test_a_run_over_http_through_faults_and_an_outage_resumes_bit_identical_to_local(tmp_path):
    steps = [*SMALL, "--config.train.total_steps=8", "--config.train.checkpoint_every=4"]
    run(tmp_path / "local", *steps)  # the reference: the demo's shards read from local disk
    workdir, cache = tmp_path / "http", {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    # 4 shard reads to index, then one GET per sample: the store goes down during the 6th batch of 16. The
    # outage is placed by counting requests, so batches are fetched one after another here (1 read thread);
    # with more, a retried request of batch 3 may come after batch 6's and the outage would precede step 4.
    with RangeServer(str(tmp_path / "local" / "data" / "train")) as server, \
            StoreProxy(server.url, fault_rate=0.05, down_after=4 + 5 * 16 + 5) as proxy:
        over = command(workdir, *steps, "--config.data.synthetic.train_samples=0", "--config.eval.every_steps=0",
                       "--config.data.read_threads=1",
                       f"--config.data.train={proxy.url}/{{pub11,rs3}}-train-{{0000..0001}}.tar")
        began = time.monotonic()
        failed = subprocess.run([*over, "--config.data.retry_seconds=3"], env=env(**cache), capture_output=True,
                                text=True, cwd=ROOT, timeout=600)
        assert failed.returncode == 1 and time.monotonic() - began < 120
        assert "Traceback" not in failed.stderr, failed.stderr[-3000:]
        assert failed.stderr.strip().splitlines()[-1].startswith(f"error: {proxy.url}/"), failed.stderr[-3000:]
        assert "the store kept failing for 3 s" in failed.stderr
        assert final_params(workdir)[0] == 4  # the last checkpoint before the outage
        proxy.down, proxy.down_after = False, None
        subprocess.run(over, env=env(**cache), check=True, capture_output=True, cwd=ROOT, timeout=600)
        assert proxy.counters.faults > 0 and proxy.counters.refused > 0  # both happened, and changed nothing
    step, params = final_params(workdir)
    assert step == 8
    assert_bit_identical(final_params(tmp_path / "local")[1], params)


def test_two_hosts_split_the_indexing_and_a_second_start_reads_no_shard(tmp_path, monkeypatch):
    import json
    import sys

    from georsclip_jax.data.synthetic import write_rs5m_shards
    from runs import free_port

    paths = write_rs5m_shards(str(tmp_path / "shards"), 96, samples_per_shard=16)  # 6 shards
    shard_bytes = sum(os.path.getsize(p) for p in paths)
    here = TarShardSource(str(tmp_path / "shards" / "*.tar"))
    with RangeServer(str(tmp_path / "shards")) as server, StoreProxy(server.url) as one, StoreProxy(server.url) as two:
        def start_both():
            port, proxies = free_port(), (one, two)
            processes = [subprocess.Popen(
                [sys.executable, os.path.join(ROOT, "tests", "multihost_index_run.py"), str(i), str(port),
                 f"{proxies[i].url}/{{pub11,rs3}}-train-{{0000..0002}}.tar", str(tmp_path / "run"),
                 str(tmp_path / f"out{i}.json")],
                env={**env(devices=1), "XDG_CACHE_HOME": str(tmp_path / f"cache{i}")}, cwd=ROOT,
                stderr=subprocess.PIPE, text=True) for i in range(2)]
            for p in processes:
                assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]
            for i in range(2):
                out = json.loads((tmp_path / f"out{i}.json").read_text())
                assert out["samples"] == len(here) == 96 and out["index"] == here.index.tobytes().hex()
            read = [sum(b for path, (_, b) in proxy.counters.by_path.items() if path.endswith(".tar"))
                    for proxy in proxies]
            for proxy in proxies:
                proxy.counters.reset()
            return read

        first = start_both()
        assert all(0 < b <= 0.6 * shard_bytes for b in first), (first, shard_bytes)
        assert start_both() == [0, 0]  # indexes shared under the workdir: no shard is read to index it


def test_the_index_command_prepares_a_dataset_ahead_of_a_run(messy_store, tmp_path, capsys):
    from georsclip_jax.data import index

    local, proxy = messy_store
    assert index.main([patterns(proxy.url), "--workdir", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.startswith(f"3 shards, {len(local)} samples, 3 with problems")
    proxy.counters.reset()
    remote = TarShardSource(patterns(proxy.url), workdir=str(tmp_path / "run"))
    assert np.array_equal(remote.index, local.index) and proxy.counters.requests == 0

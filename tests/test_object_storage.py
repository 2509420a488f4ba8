"""Runs whose workdir and data live in object storage: real `gs://` paths against a GCS emulator on
localhost (tests/fake_gcs.py), through the same gcsfs / Orbax TensorStore code paths as on a pod,
and `s3://` data against moto's S3 server on localhost.

A training run on gs:// completes, is killed, resumes exactly (bit for bit against the same run on
a local disk) and leaves its metrics, checkpoints, results and exports in the bucket; the path
layer's byte-range reads, globbing and local caches behave like their local counterparts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from georsclip_jax import storage
from georsclip_jax.data.synthetic import write_rs5m_shards
from georsclip_jax.data.tar_shards import TarShardSource
from fake_gcs import fake_gcs
from runs import ROOT, SMALL, assert_bit_identical, command, env, final_params, run


@pytest.fixture(scope="module")
def bucket():
    with fake_gcs("bucket"):
        yield "gs://bucket"


@pytest.fixture(scope="module")
def s3_bucket():
    """moto's S3 server on localhost, with s3fs pointed at it through fsspec's configuration."""
    import boto3
    import fsspec
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    url = "http://{}:{}".format(*server.get_host_and_port())
    keys = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in keys.items():
            patch.setenv(key, value)
        patch.setitem(fsspec.config.conf, "s3", {"endpoint_url": url})
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="bucket")
        yield "s3://bucket"
    server.stop()


@pytest.mark.parametrize("store", ["bucket", "s3_bucket"])
def test_tar_shards_read_from_object_storage_equal_local_reads(store, request, tmp_path):
    bucket = request.getfixturevalue(store)
    local = write_rs5m_shards(str(tmp_path / "shards"), 12, samples_per_shard=5, seed=4)
    storage.upload_tree(str(tmp_path / "shards"), f"{bucket}/shards")
    remote = TarShardSource(f"{bucket}/shards/*.tar")
    assert remote.paths == sorted(f"{bucket}/shards/{os.path.basename(p)}" for p in local)
    assert all(storage.isfile(p + ".georsclip-index.npz") for p in remote.paths)  # indexed once, beside the shards
    here = TarShardSource(str(tmp_path / "shards" / "*.tar"))
    for i in range(len(here)):
        a, b = here[i], remote[i]
        assert a["image"] == b["image"] and a["captions"] == b["captions"]
        assert str(a["origin"]).rsplit("/", 1)[1] == str(b["origin"]).rsplit("/", 1)[1]


def test_local_copy_fetches_a_tree_once_and_refreshes_changed_files(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("GEORSCLIP_CACHE", str(tmp_path / "cache"))
    storage.write_bytes(f"{bucket}/tree/a/x.txt", b"one")
    storage.write_bytes(f"{bucket}/tree/b.txt", b"two")
    copy = storage.local_copy(f"{bucket}/tree")
    assert open(f"{copy}/a/x.txt", "rb").read() == b"one" and open(f"{copy}/b.txt", "rb").read() == b"two"
    storage.write_bytes(f"{bucket}/tree/b.txt", b"three")
    assert open(f"{storage.local_copy(f'{bucket}/tree')}/b.txt", "rb").read() == b"three"
    assert storage.glob(f"{bucket}/tree/*.txt") == [f"{bucket}/tree/b.txt"]


def remote_steps(workdir: str) -> list[int]:
    path = f"{workdir}/metrics.jsonl"
    if not storage.exists(path):
        return []
    return [json.loads(line)["step"] for line in storage.read_text(path).splitlines() if '"loss"' in line]


def test_a_run_on_gs_completes_is_killed_resumes_exactly_and_leaves_its_files_there(bucket, tmp_path):
    overrides = [*SMALL, "--config.train.total_steps=24", "--config.train.checkpoint_every=4",
                 "--config.data.synthetic.val_samples=32", "--config.eval.tasks=zeroshot",
                 "--config.export.open_clip=True", "--config.export.loss_plot=True"]
    run(tmp_path / "local", *overrides)  # the same run on a local disk: the reference
    workdir = f"{bucket}/run"
    process = subprocess.Popen(command(workdir, *overrides), env=env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 300
    while not storage.exists(f"{workdir}/checkpoints/4/commit_success.txt"):
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.time() < deadline, "no checkpoint reached the bucket in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not storage.exists(f"{workdir}/results.json") and max(remote_steps(workdir)) < 24

    run(workdir, *overrides)
    step, params = final_params(workdir)
    assert step == 24
    assert_bit_identical(final_params(tmp_path / "local")[1], params)
    assert remote_steps(workdir) == list(range(1, 25))  # steps redone after the resume are logged once
    results = json.loads(storage.read_text(f"{workdir}/results.json"))
    assert results["eval"]["EuroSAT-zeroshot-acc"] >= 0 and np.isfinite(results["eval"]["val_loss"])
    assert results["open_clip_export"] == f"{workdir}/open_clip"
    for name in ("loss.png", "open_clip/open_clip_config.json", "open_clip/open_clip_model.safetensors",
                 "data/COMPLETE"):
        assert storage.isfile(f"{workdir}/{name}"), name
    assert storage.glob(f"{workdir}/tensorboard/events.out.tfevents.*")
    assert sorted(int(os.path.basename(p)) for p in storage.glob(f"{workdir}/checkpoints/*")) == [16, 20, 24]


def test_a_workdir_orbax_cannot_write_stops_with_one_line(tmp_path):
    result = subprocess.run(command("s3://bucket/run"), env=env(), capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --workdir: s3://bucket/run: Orbax writes")

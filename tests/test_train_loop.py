"""The training entry point end to end, each run a fresh `python -m georsclip_jax.main` process:
the demo learns; SIGTERM saves the current step; bad configs stop with one line; LoRA on fsdp over
2 processes x 4 devices equals 1 process x 8 devices. Kill and resume bit for bit: test_multihost_training.py (2 processes) and test_object_storage.py
(1 process, gs:// workdir)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import numpy as np
import pytest

from runs import (ROOT, SMALL, assert_close_across_topologies, command, env, final_params, load_recipe,
                  logged_steps, results, run, run_processes, start_processes, wait_for_step)


def start_and_wait_for_step(workdir, step, *overrides):
    processes = start_processes(workdir, *overrides, processes=1, devices=8)
    wait_for_step(processes, workdir, step)
    return processes[0]


def test_demo_learns_and_writes_its_results(tmp_path):
    result = run(tmp_path, devices=1)  # as README's first command runs it: one CPU device (8 cost 20 % more time)
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    # It ends with a summary: steps and loss, the evaluation table `evaluate` prints, where everything is.
    summary = result.stdout[result.stdout.index("trained 100 steps, final loss"):].splitlines()
    evaluation = results["eval"]
    assert f"validation loss: {evaluation['val_loss']:.4f}" in summary
    header = next(line for line in summary if line.startswith("| Model | EuroSAT_acc | RESISC45_acc | AID_acc |"))
    row = summary[summary.index(header) + 2]
    assert row.startswith(f"| tiny | {evaluation['EuroSAT-zeroshot-acc']:.2f} | ")
    assert f" {evaluation['retrieval-mean-recall-rsitmd']:.2f} |" in row
    for name, path in (("checkpoints:", "checkpoints"), ("loss curve:", "loss.png"),
                       ("open_clip export:", "open_clip"), ("TensorBoard:", "tensorboard")):
        line = next(line for line in summary if line.startswith(name))
        assert line.endswith(str(tmp_path / path)) and os.path.exists(tmp_path / path), line
    assert "tensorboard --logdir" in summary[-1]
    for name in ("EuroSAT", "RESISC45", "AID"):
        assert results["eval"][f"{name}-zeroshot-acc"] >= 80.0, results["eval"]  # chance: 10%
    assert results["eval"]["retrieval-mean-recall-rsitmd"] > 50.0
    assert results["eval"]["val_loss"] < 0.75 * np.log(64)  # held-out loss well below chance (batch 64)
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert (tmp_path / "open_clip" / "open_clip_config.json").exists()
    assert os.listdir(tmp_path / "tensorboard")
    assert results["compile"]["flops_per_step_per_device"] > 0 and results["last"]["images_per_s"] > 0


def test_sigterm_saves_the_current_step_and_exits_cleanly(tmp_path):
    process = start_and_wait_for_step(tmp_path, 3, *SMALL, "--config.train.total_steps=100000",
                                      "--config.train.checkpoint_every=100000")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    step, _ = final_params(tmp_path)
    assert step == max(logged_steps(tmp_path)) >= 3


def test_a_second_start_loads_its_train_step_from_the_workdirs_compilation_cache(tmp_path):
    """The same config re-run in its workdir (as after a preemption) compiles no train step: JAX's
    persistent cache lives in WORKDIR/compilation_cache by default (the suite's shared cache is hidden)."""
    own_cache = {"JAX_COMPILATION_CACHE_DIR": ""}
    overrides = (*SMALL, "--config.train.total_steps=2")
    first = run(tmp_path, *overrides, extra_env=own_cache)
    assert results(tmp_path)["compile"]["from_compilation_cache"] is False
    assert "train step compiled in" in first.stdout and (tmp_path / "compilation_cache").is_dir()
    second = run(tmp_path, *overrides, extra_env=own_cache)
    assert results(tmp_path)["compile"]["from_compilation_cache"] is True
    assert "train step loaded from the compilation cache in" in second.stdout
    assert "MiB (arguments" in second.stdout and "GFLOP of matmuls per device per step" in second.stdout


# Each bad value's line, as `validate` raises it; the CLI prints it after "error: " (the CLI cases below).
BAD_VALUES = [
    ("train.global_batch_size", 12, "config.train.global_batch_size: 12 is not divisible by the data-parallel size 8"),
    ("data.train", "/nope/x-{0000..0001}.tar", "config.data.train: not found: /nope/x-0000.tar"),
    ("mesh.data", 16, "config.mesh: {'data': 16, 'fsdp': 1} needs 16 devices, but 8 are available"),
    ("peft.trainable", "lora", "config.peft.lora.rank: 'lora' is trainable but no adapters are attached"),
    ("optim.lr", -0.001, "config.optim.lr: -0.001 must be positive"),
    ("train.total_steps", -10, "config.train.total_steps: -10 must be at least 1"),
    ("data.read_threads", 0, "config.data.read_threads: 0 must be at least 1"),
    ("train.global_batch_size", 0, "config.train.global_batch_size: 0 must be at least 1"),
    ("model.name", "ViT-B-32-quickgleu",
     "config.model.name: unknown 'ViT-B-32-quickgleu' (did you mean ViT-B-32-quickgelu?)"),
]


@pytest.mark.parametrize("path,value,message", BAD_VALUES)
def test_bad_config_values_are_named_in_one_line(tmp_path, path, value, message):
    from georsclip_jax.train.config import validate

    config = load_recipe("demo", "quick")
    with config.unlocked():
        section, key = path.rsplit(".", 1)
        config[section][key] = value
        if path == "data.train":
            config.data.synthetic.train_samples = 0
    with pytest.raises(ValueError) as error:
        validate(config, 8, workdir=str(tmp_path))
    assert str(error.value).splitlines() == [str(error.value)] and str(error.value).startswith(message)


@pytest.mark.parametrize("override,message", [
    ("--config.train.foo=1", "error: config.train.foo: unknown config key"),  # absl's parser, not validate
    ("--config.train.global_batch_size=12", "error: " + BAD_VALUES[0][2]),  # validate's ValueError
    ("--workdir=/sys/georsclip/run", "error: --workdir: /sys/georsclip/run: cannot write there"),
])
def test_bad_configs_stop_the_cli_with_one_line(tmp_path, override, message):
    result = subprocess.run(command(tmp_path, override), env=env(), capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == \
        [result.stderr.strip().splitlines()[-1]]
    assert result.stderr.strip().splitlines()[-1].startswith(message)


def test_a_disk_that_fills_during_a_save_stops_in_one_line_and_keeps_no_partial_checkpoint(tmp_path):
    """A file-size limit makes every write past 2 MB fail as a full disk does (the checkpoint's data file
    is ~9 MB; the data shards are smaller). The step-2 write fails in the background and is reported
    once, at the next save; nothing half-written counts as a checkpoint; a re-run on a good disk finishes."""
    import resource

    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))
    overrides = (*SMALL, "--config.train.total_steps=4", "--config.train.checkpoint_every=2")
    result = subprocess.run(command(tmp_path, *overrides), env=env(), capture_output=True, text=True, timeout=300,
                            cwd=ROOT, preexec_fn=limit)
    lines = [line for line in result.stderr.splitlines() if line.strip() and "TPU" not in line and "tpu" not in line]
    errors = [line for line in lines if line.startswith("error:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith("error: saving step 2: cannot write ") and \
        errors[0].endswith("File too large"), errors
    assert len(lines) < 15, lines  # not the same failure from every Orbax thread
    from georsclip_jax.checkpoint import Checkpointer

    checkpoints = Checkpointer(str(tmp_path / "checkpoints"))
    assert checkpoints.latest_step() is None
    checkpoints.close()
    run(tmp_path, *overrides)
    assert final_params(tmp_path)[0] == 4


def test_unknown_key_in_a_recipe_file_is_named(tmp_path):
    recipe = tmp_path / "recipe.py"
    recipe.write_text("from georsclip_jax.train.config import base_config\n"
                      "def get_config():\n    c = base_config()\n    c.optim.learning_rate = 1e-3\n    return c\n")
    result = subprocess.run(command(tmp_path / "w", config=str(recipe)), env=env(), capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: config.optim.learning_rate: unknown config key"


LORA_ON_FSDP = ["--config.peft.trainable=lora", "--config.peft.lora.rank=4", "--config.peft.lora.dropout=0.1",
                "--config.mesh.data=1", "--config.mesh.fsdp=-1", "--config.sharding.rules=fsdp",
                "--config.sharding.fsdp_min_size=1"]


def saved_base(directory, seed: int) -> str:
    import georsclip_jax as gj

    return str(gj.save_pretrained(gj.create_model("tiny", seed=seed), directory))


def test_lora_on_fsdp_two_processes_equal_one_process(tmp_path):
    """LoRA on a converted base, every base weight and adapter split over an fsdp axis spanning both
    processes: 2 processes x 4 devices equal 1 process x 8 devices; the checkpoints hold the adapters
    only, the adapter files load onto that base, and resuming with another base stops with one line.
    (Full training on 2 processes, killed and resumed, is in test_multihost_training.py.)"""
    base = [f"--config.model.init_from={saved_base(tmp_path / 'base', seed=7)}"]
    overrides = [*SMALL, "--config.train.total_steps=2", "--config.train.checkpoint_every=2", *LORA_ON_FSDP, *base]
    run(tmp_path / "one", *overrides)
    run_processes(tmp_path / "two", *overrides)
    _, one = final_params(tmp_path / "one")
    _, two = final_params(tmp_path / "two")
    assert_close_across_topologies(one, two)
    import georsclip_jax as gj

    assert all("['lora']" in key for key in one)
    for run_dir in ("one", "two"):
        gj.load_adapter(gj.create_model(pretrained=tmp_path / "base"), tmp_path / run_dir / "adapter")
    other_base = f"--config.model.init_from={saved_base(tmp_path / 'other', seed=8)}"
    result = subprocess.run(command(tmp_path / "one", *overrides, other_base, "--config.train.total_steps=4"),
                            env=env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: config.model.init_from: the checkpoint") and "another base model" in result.stderr

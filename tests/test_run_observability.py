"""A long run explains itself: a diverging run stops at the log step that shows it, with a finite
newest checkpoint and the command to resume from it; so does a run whose parameters explode while
every number is still finite; a profiler window writes a trace that XProf (the
TensorBoard profile plugin) opens, with one marker per step; each log interval is split into waiting
for data and the step; parameter and update norms are logged; the run's figure marks its resumes."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from runs import ROOT, SMALL, command, env, final_params, run

xprof = pytest.importorskip("xprof.convert.raw_to_tool_data", reason="xprof (the trace reader) is a test dependency")


def metric_lines(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def params_at(workdir, step: int) -> list[np.ndarray]:
    import jax

    from georsclip_jax.checkpoint import read_state

    _, state = read_state(os.path.join(str(workdir), "checkpoints"), step)
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(state["params"])]


def norm(arrays) -> float:
    return float(np.sqrt(sum((a**2).sum() for a in arrays)))


SANE = [*SMALL, "--config.train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    """Four healthy steps with checkpoints at 2 and 4: where each failing run below starts."""
    workdir = tmp_path_factory.mktemp("healthy")
    run(workdir, *SANE, "--config.train.total_steps=4")
    return workdir


def test_a_diverging_run_stops_with_a_finite_checkpoint_and_resumes_from_it_timing_steps_from_there(healthy, tmp_path):
    absurd, message = stopped_after_healthy_steps(healthy, tmp_path, 8, "1e30")
    assert message.startswith("error: training diverged at step 5: ") and "Traceback" not in absurd.stderr
    assert f"the newest checkpoint, step 4 in {tmp_path}/checkpoints, is finite" in message
    assert "re-run to resume from it: python -m georsclip_jax.main --config" in message
    logged = metric_lines(tmp_path)[-1]  # the step that showed it was logged, then the run stopped
    assert logged["step"] == 5 and not np.isfinite([logged["l2_params"], logged["l2_updates"]]).all()
    step, params = final_params(tmp_path)
    assert step == 4 and all(np.isfinite(p).all() for p in params.values())  # the NaN state was never saved

    run(tmp_path, *SANE, "--config.train.total_steps=8", "--config.train.log_every=3", "--config.export.loss_plot=True")
    lines = metric_lines(tmp_path)
    assert {"step": 4, "resumed": True} in lines
    logged = [line for line in lines if "loss" in line]
    assert [line["step"] for line in logged] == [1, 2, 3, 4, 6, 8]  # the NaN step 5 dropped, trained again
    # Resumed at step 4, between log steps: the step-6 interval ran steps 5 and 6, not log_every = 3 of them
    # (per-step times, images/s and MFU are divided by the steps counted).
    assert [line["time/interval_steps"] for line in logged[-2:]] == [2, 2]
    assert final_params(tmp_path)[0] == 8 and (tmp_path / "loss.png").stat().st_size > 20_000

    from georsclip_jax.train.plot import read_series
    series, resumed = read_series(str(tmp_path / "metrics.jsonl"))
    assert resumed == [4] and len(series["lr"]) == 6


def stopped_after_healthy_steps(healthy, workdir, total_steps: int, lr: str):
    """The healthy run's 4 steps continued at learning rate `lr`, checkpointing every step, until the guard
    stops it: (the finished process, its last line)."""
    shutil.copytree(healthy, workdir, dirs_exist_ok=True)
    result = subprocess.run(command(workdir, *SANE, f"--config.train.total_steps={total_steps}",
                                    f"--config.optim.lr={lr}", "--config.train.checkpoint_every=1"),
                            env=env(), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 1, result.stderr[-3000:]
    return result, result.stderr.strip().splitlines()[-1]


def test_a_finite_explosion_stops_before_its_state_is_saved(healthy, tmp_path):
    """lr = 1e2: Adam moves every parameter by ~lr per step and weight decay multiplies them by 1 - lr * wd,
    so ||params|| grows by orders of magnitude while loss, gradients and norms stay finite (the NaN-only
    guard trained on, and saved, such states). It stops at the first check, naming the last good checkpoint."""
    result, message = stopped_after_healthy_steps(healthy, tmp_path, 12, "1e2")
    assert message.startswith("error: training exploded at step 5: l2_params is ") and "Traceback" not in result.stderr
    assert f"the newest checkpoint, step 4 in {tmp_path}/checkpoints, is from before the explosion" in message
    logged = metric_lines(tmp_path)[-1]
    assert logged["step"] == 5 and np.isfinite([logged[k] for k in ("loss", "grad_norm", "l2_params")]).all()
    healthy_norm = next(line["l2_params"] for line in metric_lines(tmp_path) if line.get("step") == 4 and "loss" in line)
    assert logged["l2_params"] > 10 * healthy_norm
    step, params = final_params(tmp_path)
    assert step == 4 and norm(params.values()) == pytest.approx(healthy_norm, rel=1e-5)  # never saved past it


def test_profile_window_time_split_and_norms(tmp_path):
    result = run(tmp_path, *SMALL, "--config.train.total_steps=6", "--config.train.checkpoint_every=1",
                 "--config.train.profile_steps=(2, 4)")
    traces = glob.glob(str(tmp_path / "tensorboard" / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert len(traces) == 1
    assert "trace_viewer@" in xprof.xspace_to_tool_names(traces)
    data, _ = xprof.xspace_to_tool_data(traces, "trace_viewer", {})
    steps = {int(e["args"]["step_num"]) for e in json.loads(data)["traceEvents"]
             if e.get("args", {}).get("step_name", "").startswith("train ")}
    assert steps == {2, 3}

    lines = [line for line in metric_lines(tmp_path) if "loss" in line]
    for line in lines:
        assert 0 <= line["time/data_wait_fraction"] <= 1 and line["time/data_wait_s"] >= 0 and line["time/step_s"] > 0
        assert line["time/data_wait_s"] + line["time/step_s"] == pytest.approx(line["images_per_s"] ** -1 * 16)
    assert "data_wait=" in result.stderr  # the progress bar says where the time goes

    before, after = params_at(tmp_path, 5), params_at(tmp_path, 6)
    last = lines[-1]
    assert last["l2_params"] == pytest.approx(norm(after), rel=1e-5)
    assert last["l2_updates"] == pytest.approx(norm([b - a for a, b in zip(before, after)]), rel=1e-3)

"""Helpers for tests that run the trainer as real processes (`python -m georsclip_jax.main`): one
process, or several joined by jax.distributed over localhost (gloo collectives), started, waited
for, killed and re-run. Not collected by pytest."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The quick demo cut to what a run's mechanics need: no validation set (the demo's own test and the gs://
# run evaluate one), few samples, logging at every step.
SMALL = ["--config.data.synthetic.train_samples=256", "--config.data.synthetic.samples_per_shard=64",
         "--config.data.synthetic.val_samples=0",
         "--config.data.synthetic.eval_per_class=1", "--config.data.synthetic.retrieval_images=2",
         "--config.train.global_batch_size=16", "--config.train.log_every=1", "--config.eval.tasks=",
         "--config.export.open_clip=False", "--config.export.loss_plot=False"]


def load_recipe(name: str, arg: str = ""):
    """configs/<name>.py's config (get_config(arg)), as `--config configs/<name>.py[:arg]` loads it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def command(workdir, *overrides, config="configs/demo.py:quick"):
    return [sys.executable, "-m", "georsclip_jax.main", "--config", os.path.join(ROOT, config), "--workdir",
            str(workdir), *overrides]


def env(devices=8, **extra):
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **extra}


def run(workdir, *overrides, devices=8, timeout=600, extra_env=None, config="configs/demo.py:quick"):
    result = subprocess.run(command(workdir, *overrides, config=config), env=env(devices, **(extra_env or {})),
                            capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_processes(workdir, *overrides, processes=2, devices=4) -> list[subprocess.Popen]:
    """`processes` trainer processes of one run, each with `devices` CPU devices (one process runs
    without jax.distributed, as a single-host run does)."""
    port = free_port()
    join = lambda i: ["--coordinator", f"localhost:{port}", "--num_processes", str(processes),
                      "--process_id", str(i)] if processes > 1 else []
    return [subprocess.Popen(command(workdir, *overrides, *join(i)), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env=env(devices, JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo"))
            for i in range(processes)]


def wait_all(processes, timeout=600) -> list[str]:
    """Every process's stderr, once all have exited 0."""
    errors = [p.communicate(timeout=timeout)[1] for p in processes]
    assert all(p.returncode == 0 for p in processes), "\n".join(e[-3000:] for e in errors)
    return errors


def run_processes(workdir, *overrides, processes=2, devices=4) -> list[str]:
    return wait_all(start_processes(workdir, *overrides, processes=processes, devices=devices))


def logged_steps(workdir) -> list[int]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line)["step"] for line in f if '"loss"' in line]


def wait_for_step(processes, workdir, step, timeout=300):
    deadline = time.time() + timeout
    while not any(s >= step for s in logged_steps(workdir)):
        for p in processes:
            assert p.poll() is None, p.stderr.read()[-3000:]
        assert time.time() < deadline, "training did not reach the step in time"
        time.sleep(0.1)


def final_params(workdir) -> tuple[int, dict]:
    import jax

    from georsclip_jax.checkpoint import read_state
    step, state = read_state(os.path.join(str(workdir), "checkpoints") if "://" not in str(workdir)
                             else f"{workdir}/checkpoints")
    return step, {jax.tree_util.keystr(k): np.asarray(v)
                  for k, v in jax.tree_util.tree_flatten_with_path(state["params"])[0]}


def assert_bit_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, f"{len(different)} parameters differ, e.g. {different[:3]}"


def assert_close_across_topologies(one: dict, two: dict):
    """Parameters trained on the same global batches by different process/device layouts: gradients
    are reduced in another order, so they agree to float32 rounding, not bit for bit."""
    assert one.keys() == two.keys()
    for key in one:
        a, b = one[key], two[key]
        if key.endswith("['attn']['in_proj']['bias']['value']"):
            # The key bias gets no gradient in exact arithmetic (softmax ignores a per-query constant),
            # so Adam turns float noise there into steps: both runs keep it tiny; neither can agree.
            key_bias = np.arange(a.shape[0] // 3, 2 * a.shape[0] // 3)
            assert np.abs(a[key_bias]).max() < 1e-3 and np.abs(b[key_bias]).max() < 1e-3
            a, b = np.delete(a, key_bias), np.delete(b, key_bias)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=key)


def results(workdir) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)

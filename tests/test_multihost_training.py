"""Multi-host training as a pod runs it: 2 real processes x 4 CPU devices (jax.distributed, gloo),
reading shards with bad samples placed so that the two processes skip different counts.

- SIGKILL both at a random step after a checkpoint, re-run the same commands: the final parameters
  and the skip totals equal an uninterrupted 2-process run bit for bit;
- SIGTERM to one process: both save the same step and exit 0;
- the same checkpoint resumed by 1 process x 8 devices: a process-count change keeps the data
  position and the skip totals (parameters agree to float32 reduction order);
- SIGKILL one process: the other exits within seconds, status 1, in one line naming the lost
  process and the command to resume (no traceback, no abort by JAX's heartbeat 100 s later)."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest

from georsclip_jax.checkpoint import read_data_states
from messy_shards import write_messy_shards
from runs import (assert_bit_identical, assert_close_across_topologies, final_params, logged_steps, results, run,
                  run_processes, start_processes, wait_all, wait_for_step)

TOTAL = 12


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_messy_shards(str(tmp_path_factory.mktemp("messy")))


def overrides(shards) -> list[str]:
    return ["--config.data.synthetic.train_samples=0", f"--config.data.train={'::'.join(shards)}",
            "--config.train.global_batch_size=16", f"--config.train.total_steps={TOTAL}",
            "--config.train.checkpoint_every=4", "--config.train.log_every=1", "--config.eval.tasks=",
            "--config.eval.every_steps=0", "--config.export.open_clip=False", "--config.export.loss_plot=False"]


@pytest.fixture(scope="module")
def straight(shards, tmp_path_factory):
    """The uninterrupted 2-process run everything is compared with."""
    workdir = tmp_path_factory.mktemp("straight")
    run_processes(workdir, *overrides(shards))
    return workdir


def skip_totals(workdir) -> dict:
    return {k: v for k, v in results(workdir)["last"].items() if k.startswith("skipped/")}


def test_the_processes_skip_different_counts(straight):
    states = read_data_states(straight / "checkpoints", TOTAL)
    assert sorted(states) == [0, 1] and states[0]["position"] == states[1]["position"] == TOTAL
    assert states[0]["skipped"] != states[1]["skipped"]  # else the per-process state would be untested
    totals = skip_totals(straight)
    assert totals == {f"skipped/{r}": states[0]["skipped"][r] + states[1]["skipped"][r] for r in states[0]["skipped"]}
    assert sum(totals.values()) > 0


def test_sigkill_both_then_rerun_equals_an_uninterrupted_run(straight, shards, tmp_path):
    kill_at = random.Random().randint(5, TOTAL - 2)  # after the step-4 checkpoint, before the end
    processes = start_processes(tmp_path, *overrides(shards))
    wait_for_step(processes, tmp_path, kill_at)
    for p in processes:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert max(logged_steps(tmp_path)) < TOTAL, f"killed at step {kill_at} too late"
    run_processes(tmp_path, *overrides(shards))
    assert final_params(tmp_path)[0] == TOTAL
    assert_bit_identical(final_params(straight)[1], final_params(tmp_path)[1])
    assert skip_totals(tmp_path) == skip_totals(straight), f"killed at step {kill_at}"
    assert read_data_states(tmp_path / "checkpoints", TOTAL) == read_data_states(straight / "checkpoints", TOTAL)


def test_sigterm_to_one_process_saves_one_agreed_step_that_resumes_on_another_process_count(straight, shards, tmp_path):
    term = tmp_path / "term"
    processes = start_processes(term, *overrides(shards))
    wait_for_step(processes, term, 5)
    processes[1].send_signal(signal.SIGTERM)
    errors = wait_all(processes, timeout=300)  # both exit 0: no deadlock
    saved = final_params(term)[0]
    # The agreed step may fall on a periodic checkpoint step (8); the log line proves the preemption chose it.
    assert 5 <= saved < TOTAL, f"expected a preemption save before the end, got {saved}"
    states = read_data_states(term / "checkpoints", saved)
    assert sorted(states) == [0, 1] and states[0]["position"] == states[1]["position"] == saved
    assert all(f"all processes save step {saved}" in e for e in errors), [e[-500:] for e in errors]
    assert json.loads((term / "checkpoints" / str(saved) / "meta" / "metadata").read_text())["step"] == saved

    # Resumed by 1 process with 8 devices: the agreed step's data position and skip counts carry over (a
    # 2-process resume is bit-exact: the SIGKILL test resumes the same way from a periodic checkpoint).
    run(term, *overrides(shards))
    assert final_params(term)[0] == TOTAL
    assert skip_totals(term) == skip_totals(straight)
    assert_close_across_topologies(final_params(straight)[1], final_params(term)[1])


def test_a_lost_peer_ends_the_survivor_promptly_in_one_line(shards, tmp_path):
    """(Process 0's death takes JAX's coordination service with it; jaxlib then aborts the others at once:
    train/peers.py.)"""
    victim = 1
    processes = start_processes(tmp_path, *overrides(shards), "--config.train.total_steps=100000", "--peer_timeout=5")
    wait_for_step(processes, tmp_path, 3)
    processes[victim].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    survivor = processes[1 - victim]
    stderr = survivor.communicate(timeout=120)[1]
    waited = time.monotonic() - killed
    assert survivor.returncode == 1, stderr[-3000:]
    assert waited < 20, f"the survivor took {waited:.0f} s"
    assert "Traceback" not in stderr and "Fatal Python error" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: lost process {victim} of 2") and "python -m georsclip_jax.main --config" in last
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [last]

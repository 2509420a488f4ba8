"""≥ 1,000 damaged and crafted checkpoints (torch zip, TorchScript, safetensors), each loaded by our readers
in a worker process (tests/checkpoint_fuzz.py): no crash, no signal, no command run or module imported,
and either the correct load or one CheckpointError (`wrong_results` states what "correct" means)."""

from __future__ import annotations

import collections

import pytest

from checkpoint_fuzz import fuzz, run_workers

CASES, SEED = 1200, 20261123


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    return directory, fuzz(directory, CASES, SEED)


def test_no_reader_crashes_or_runs_code(fuzzed):
    _, result = fuzzed
    assert not result["crashes"] and not result["code_was_run"]
    ours = result["ours"]
    assert len(ours) == CASES + 3
    assert {line.get("error") for line in ours.values()} <= {None, "CheckpointError"}, \
        {i: line for i, line in ours.items() if line.get("error") not in (None, "CheckpointError")}
    malicious = [i for i, case in enumerate(result["corpus"]) if case.mutation == "malicious"]
    assert malicious and all("refusing to load" in ours[i]["message"] for i in malicious)


def test_the_guard_stops_a_reader_that_runs_code(fuzzed):
    """The audit hook is what proves "no code executed"; an unrestricted unpickler must trip it."""
    _, result = fuzzed
    malicious = [case for case in result["corpus"] if case.mutation == "malicious"][:2]
    _, _, crashes = run_workers(malicious, env={"FUZZ_UNSAFE_READER": "1"})
    assert len(crashes) == 2 and all("forbidden event" in c and "status 97" in c for c in crashes), crashes


def test_every_load_is_correct_and_every_refusal_is_justified(fuzzed):
    _, result = fuzzed
    assert all(result["base"].values())
    assert not result["wrong"], result["wrong"][:5]
    # The corpus exercises every branch: loads, refusals, and both readers disagreeing each way.
    agreement = collections.Counter((ours == "ours ok", ref == "reference ok") for _, ours, ref in result["outcomes"].elements())
    assert all(agreement[k] > 0 for k in [(True, True), (False, False), (True, False), (False, True)]), agreement

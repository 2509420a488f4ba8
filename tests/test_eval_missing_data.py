"""Evaluation never reports a silent NaN: a task whose data is missing or empty stops with one line
naming the folder or file and what was expected; a partially present tree evaluates what is there
and says what it skipped."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

import georsclip_jax as gj
from georsclip_jax.data.synthetic import write_test_data
from georsclip_jax.evals.suite import Suite


@pytest.fixture(scope="module")
def model():
    return gj.create_model("tiny")


@pytest.fixture
def tree(tmp_path):
    return write_test_data(str(tmp_path / "rs5m_test_data"), per_class=1, retrieval_images=3, selo_images=1)


def remove(root, *relative):
    for path in relative:
        shutil.rmtree(os.path.join(root, path))


def empty_class_folders(root, *relative):
    for path in relative:
        for dirpath, _, filenames in os.walk(os.path.join(root, path)):
            for name in filenames:
                os.remove(os.path.join(dirpath, name))


def anno_path(root) -> str:
    return os.path.join(root, "AIR-SLT", "annotations", "anno.json")


def empty_annotations(root):
    with open(anno_path(root), "w") as f:
        json.dump([], f)


def zero_byte_annotations(root):
    open(anno_path(root), "w").close()


def edit_first_sample(root, **fields):
    with open(anno_path(root)) as f:
        samples = json.load(f)
    samples[0].update(fields)
    with open(anno_path(root), "w") as f:
        json.dump(samples, f)


CASES = {
    "zeroshot missing": ("zeroshot", lambda r: remove(r, "eurosat-rgb", "RESISC45", "AID"),
                         "zeroshot: no dataset to evaluate: class-folder dataset not found: {root}/eurosat-rgb/2750; "),
    "zeroshot empty": ("zeroshot", lambda r: empty_class_folders(r, "eurosat-rgb", "RESISC45", "AID"),
                       "zeroshot: no dataset to evaluate: {root}/eurosat-rgb/2750: 10 class folders but no images"),
    "retrieval missing": ("retrieval", lambda r: remove(r, "rsitmd", "rsicd"),
                          "retrieval: no dataset to evaluate: retrieval CSV not found: {root}/rsitmd/rsitmd_test.csv"),
    "selo missing": ("selo", lambda r: remove(r, "AIR-SLT"),
                     "AIR-SLT annotations not found: {root}/AIR-SLT/annotations/anno.json"),
    "selo empty": ("selo", empty_annotations,
                   "{root}/AIR-SLT/annotations/anno.json lists no samples (expected AIR-SLT's query / polygon"),
    "selo 0 bytes": ("selo", zero_byte_annotations,
                     "{root}/AIR-SLT/annotations/anno.json is empty (0 bytes); expected AIR-SLT's query / polygon"),
    "selo malformed polygons": ("selo", lambda r: edit_first_sample(r, points=[[1, 2, 3]]),
                                "{root}/AIR-SLT/annotations/anno.json: sample 0: \"points\" is not a list of polygons"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_task_without_data_stops_naming_what_is_missing(model, tree, case):
    task, damage, expected = CASES[case]
    damage(tree)
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        Suite(model, tree, [task])
    assert str(error.value).startswith(expected.format(root=tree))


def test_a_partial_tree_evaluates_what_is_there_and_names_what_it_skipped(model, tree, caplog):
    remove(tree, "AID")
    empty_class_folders(tree, "RESISC45")
    with caplog.at_level(logging.WARNING):
        suite = Suite(model, tree, ["zeroshot", "retrieval"], batch_size=16)
    results = suite()
    assert {k for k in results if "zeroshot" in k} == {"EuroSAT-zeroshot-acc"}
    assert "retrieval-mean-recall-rsicd" in results
    assert set(suite.details["skipped"]) == {"AID", "RESISC45"}
    assert f"zeroshot: skipped AID: class-folder dataset not found: {tree}/AID" in caplog.text


def test_a_selo_sample_without_polygons_is_skipped_counted_and_named(model, tmp_path, caplog):
    """Its Rsu divides by the ground-truth area: it used to end `evaluate` in a ZeroDivisionError."""
    tree = write_test_data(str(tmp_path / "rs5m_test_data"), per_class=1, retrieval_images=3, selo_images=2)
    edit_first_sample(tree, points=[])
    with caplog.at_level(logging.WARNING):
        suite = Suite(model, tree, ["selo"], batch_size=64)
        results = suite()
    assert all(0 <= results[f"Selo_{name}"] <= 1 for name in ("Rsu", "Ras", "Rda", "Rmi"))
    assert len(suite.details["selo_samples"]) == 1 and suite.details["selo_samples"][0]["jpg_name"] == "1.jpg"
    assert suite.details["selo_skipped"] == [caplog.records[-1].getMessage().removeprefix("selo: skipped ")]
    assert suite.details["selo_skipped"][0].startswith("sample 0 (0.jpg, ") and \
        suite.details["selo_skipped"][0].endswith("): it has no polygons")


def test_the_cli_on_the_demos_tree_without_selo_images_exits_with_one_line(tmp_path):
    """The demo writes AIR-SLT without samples; `--tasks selo` on it used to print NaNs and exit 0."""
    tree = write_test_data(str(tmp_path / "rs5m_test_data"), per_class=1, retrieval_images=3, selo_images=0)
    pretrained = gj.save_pretrained(gj.create_model("tiny"), tmp_path / "tiny")
    result = subprocess.run([sys.executable, "-m", "georsclip_jax.evaluate", "--pretrained", str(pretrained),
                             "--data-root", tree, "--tasks", "selo", "--out", str(tmp_path / "out.json")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "nan" not in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tree}/AIR-SLT/annotations/anno.json lists no samples (expected AIR-SLT's query / polygon "
        "annotations)")
    assert not os.path.exists(tmp_path / "out.json")

"""The converters in convert/: help text, a full round trip, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from transformers import CLIPModel

import georsclip_jax as gj

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args):
    return subprocess.run([sys.executable, str(ROOT / "convert" / script), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", ["to_jax.py", "to_open_clip.py", "to_hf.py", "to_array_record.py"])
def test_help(script):
    result = _run(script, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout and "Example" in result.stdout


def test_round_trip_through_every_converter(tmp_path):
    torch.manual_seed(0)
    ref = open_clip.model.CLIP(**gj.get_model_config("tiny-quickgelu").to_open_clip_json()).eval()
    torch.save({"state_dict": ref.state_dict(), "epoch": 1}, tmp_path / "georsclip.pt")
    (tmp_path / "results.json").write_text('{"model": "tiny", "results": {"AID-zeroshot-acc": 74.42}}')  # evaluate's
    steps = [
        ("to_jax.py", tmp_path / "georsclip.pt", tmp_path / "ours", "--model", "tiny-quickgelu"),
        ("to_open_clip.py", tmp_path / "ours", tmp_path / "oc"),
        ("to_hf.py", tmp_path / "oc", tmp_path / "hf", "--results", tmp_path / "results.json", "--name", "tiny-rs"),
        ("to_jax.py", tmp_path / "hf", tmp_path / "ours2"),
    ]
    for script, *args in steps:
        result = _run(script, *args)
        assert result.returncode == 0, result.stderr
        assert "act=quick_gelu" in result.stdout
    first, last = gj.create_model(pretrained=tmp_path / "ours"), gj.create_model(pretrained=tmp_path / "ours2")
    for key, value in gj.factory.flat_params(first).items():
        np.testing.assert_array_equal(value, gj.factory.flat_params(last)[key], err_msg=key)
    hf = CLIPModel.from_pretrained(tmp_path / "hf").eval()
    tokens = gj.get_tokenizer()(["a harbour"])
    with torch.no_grad():
        theirs = hf.get_text_features(input_ids=torch.from_numpy(tokens.astype(np.int64))).numpy()
    np.testing.assert_allclose(np.asarray(last.encode_text(tokens)), theirs, atol=1e-5)
    card = (tmp_path / "hf" / "README.md").read_text()  # the model card, with the evaluation it was given
    assert "# tiny-rs" in card and 'dataset:\n          name: "AID"' in card and "value: 74.42" in card


def test_bad_input_is_one_line(tmp_path):
    torch.manual_seed(0)
    ref = open_clip.model.CLIP(**gj.get_model_config("tiny").to_open_clip_json())
    torch.save(ref.state_dict(), tmp_path / "tiny.pt")
    result = _run("to_jax.py", tmp_path / "tiny.pt", tmp_path / "out", "--model", "tiny-h80")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "missing" not in result.stderr and "shape mismatch (" in result.stderr
    result = _run("to_jax.py", tmp_path / "tiny.pt", tmp_path / "out")
    assert result.returncode == 2 and "act=" in result.stderr


def test_tar_and_metafile_to_array_record(tmp_path):
    from georsclip_jax.data.array_record import ArrayRecordSource
    from georsclip_jax.data.synthetic import write_rs5m_shards
    from georsclip_jax.data.tar_shards import TarShardSource

    write_rs5m_shards(str(tmp_path / "tars"), 12, samples_per_shard=4)
    result = _run("to_array_record.py", "--tar", str(tmp_path / "tars" / "{pub11,rs3}-train-0000.tar") + "::"
                  + str(tmp_path / "tars" / "pub11-train-0001.tar"), "--out", tmp_path / "ar", "--records-per-shard", 5)
    assert result.returncode == 0 and "wrote 12 records in 3 shards" in result.stdout, result.stderr
    converted = ArrayRecordSource(sorted(str(p) for p in (tmp_path / "ar").glob("*.array_record")))
    original = TarShardSource(str(tmp_path / "tars" / "{pub11,rs3}-train-0000.tar") + "::"
                              + str(tmp_path / "tars" / "pub11-train-0001.tar"))
    assert [converted[i] for i in range(12)] == [original[i] for i in range(12)]

    (tmp_path / "img.jpg").write_bytes(original[0]["image"])
    (tmp_path / "meta.csv").write_text("name,caption\nimg.jpg,a forest\nmissing.jpg,a sea\n")
    result = _run("to_array_record.py", "--metafile", tmp_path / "meta.csv", "--image-root", tmp_path,
                  "--image-column", "0", "--caption-columns", "1", "--out", tmp_path / "ar_csv")
    assert result.returncode == 0 and "wrote 1 records" in result.stdout and "'missing_image': 1" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--tar", "nope-{0000..0001}.tar"], "tar shard not found: nope-0000.tar"),
    (["--metafile", "m.csv"], "--metafile needs --image-root"),
    ([], "give exactly one of --tar or --metafile"),
])
def test_array_record_converter_errors_are_one_line(tmp_path, args, message):
    result = _run("to_array_record.py", *args, "--out", tmp_path / "o")
    assert result.returncode == 2 and result.stderr.strip() == f"error: {message}"

"""SigLIP end to end: `train.loss=siglip` adds the logit bias (open_clip's SigLIP init: scale log 10,
bias -10), the demo learns with it to the softmax demo's zero-shot bar, and the bias survives the
checkpoint, our format, open_clip's format (strict load) and a fine-tune from weights that lack it."""

from __future__ import annotations

import json
import math

import numpy as np
import open_clip
import pytest
import torch

import georsclip_jax as gj
from georsclip_jax.checkpoint import read_state
from runs import run


@pytest.fixture(scope="module")
def siglip_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("siglip")
    run(workdir, "--config.train.loss=siglip", "--config.eval.tasks=zeroshot", devices=1)
    return workdir


def test_the_demo_learns_with_siglip(siglip_run):
    results = json.loads((siglip_run / "results.json").read_text())
    for name in ("EuroSAT", "RESISC45", "AID"):
        assert results["eval"][f"{name}-zeroshot-acc"] >= 80.0, results["eval"]  # the softmax demo's bar


def test_the_bias_is_trained_saved_and_exported(siglip_run):
    step, state = read_state(str(siglip_run / "checkpoints"))
    bias, scale = (float(state["params"][name]["value"]) for name in ("logit_bias", "logit_scale"))
    assert bias != -10.0 and scale != math.log(10)  # both moved from the SigLIP init
    ref, _ = open_clip.create_model_from_pretrained(f"local-dir:{siglip_run / 'open_clip'}")  # strict load
    assert ref.logit_bias is not None and abs(ref.logit_bias.item() - bias) < 1e-6
    ours = gj.create_model(None, siglip_run / "open_clip")
    assert float(ours.logit_bias[...]) == pytest.approx(bias, abs=1e-6)
    saved = gj.save_pretrained(ours, siglip_run / "ours")
    assert float(gj.create_model(None, saved).logit_bias[...]) == float(ours.logit_bias[...])


def test_siglip_init_and_a_fine_tune_from_weights_without_a_bias(tmp_path):
    fresh = gj.create_model("tiny", init_logit_scale=math.log(10), init_logit_bias=-10.0)
    assert float(fresh.logit_bias[...]) == -10.0 and float(fresh.logit_scale[...]) == pytest.approx(math.log(10))
    reference = open_clip.model.CLIP(**gj.get_model_config("tiny").to_open_clip_json())
    torch.save(reference.state_dict(), tmp_path / "clip.pt")
    tuned = gj.create_model("tiny", tmp_path / "clip.pt", init_logit_bias=-10.0)
    assert float(tuned.logit_bias[...]) == 0.0  # as open_clip's load_checkpoint starts a missing bias
    np.testing.assert_array_equal(np.asarray(tuned.logit_scale[...]), reference.logit_scale.detach().numpy())


def test_hf_export_of_a_siglip_model_stops_in_one_line(tmp_path):
    model = gj.create_model("tiny", init_logit_bias=-10.0)
    with pytest.raises(ValueError, match="no logit_bias"):
        gj.export_hf(model, tmp_path / "hf")

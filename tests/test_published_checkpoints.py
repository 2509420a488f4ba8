"""Published checkpoints by file name (interop/registry.py): SkyCLIP's open_clip training checkpoints
(`module.` keys, optimizer and scaler state) load with the activation they were trained with, equal to
open_clip's own loading of the same file with that activation; the same file under another name is
refused without act=; the optimizer state is never read. Full-size ViT-B/32 and ViT-L/14 files:
benchmarks/check_published_checkpoints.py (BENCHMARKS.md)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import open_clip
import pytest

import georsclip_jax as gj
from conftest import perturbed_open_clip
from georsclip_jax.interop import checkpoints
from reference_embeddings import embeddings
from skyclip_format import save_training_checkpoint

# Widths of 64 (one 64-wide head) so that shapes tell the architecture, as they do for ViT-B/32 and L/14.
SMALL = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}


@pytest.mark.parametrize("folder,act", [("SkyCLIP_ViT_L14_top30pct", "quick_gelu"),
                                        ("SkyCLIP_ViT_B32_top50pct", "gelu")])
def test_a_skyclip_checkpoint_loads_by_its_published_name_with_its_activation(tmp_path, folder, act):
    trained = perturbed_open_clip({**SMALL, "quick_gelu": act == "quick_gelu"}, seed=7)
    path = tmp_path / folder / "epoch_20.pt"
    save_training_checkpoint(trained, path)
    with pytest.warns(UserWarning, match="shapes are not those of ViT-"):  # tiny, not the published size
        ours = gj.create_model(pretrained=path)
    assert ours.config.act == act
    reference = open_clip.model.CLIP(**SMALL, quick_gelu=act == "quick_gelu").eval()  # open_clip's own loading:
    open_clip.load_checkpoint(reference, str(path))  # state_dict, `module.` stripped, strict
    for a, b in zip(embeddings(ours, False), embeddings(reference, True), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    wrong = open_clip.model.CLIP(**SMALL, quick_gelu=act != "quick_gelu").eval()  # what a wrong activation
    open_clip.load_checkpoint(wrong, str(path))  # gives: no error, other embeddings
    assert np.abs(embeddings(ours, False)[0] - embeddings(wrong, True)[0]).max() > 1e-4  # 10x the tolerance


def test_the_same_file_under_another_name_needs_act(tmp_path):
    path = tmp_path / "my_run" / "epoch_20.pt"
    save_training_checkpoint(perturbed_open_clip({**SMALL, "quick_gelu": True}, seed=1), path)
    with pytest.raises(ValueError, match="pass a model name .* or act=") as error:
        gj.create_model(pretrained=path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    assert gj.create_model(pretrained=path, act="quick_gelu").config.act == "quick_gelu"


def test_optimizer_state_is_never_read(tmp_path):
    path = tmp_path / "SkyCLIP_ViT_B32_top50pct" / "epoch_20.pt"
    weights = save_training_checkpoint(perturbed_open_clip({**SMALL, "quick_gelu": False}, seed=2), path)
    assert path.stat().st_size > 2.9 * weights  # the file holds the weights and twice as much optimizer state
    tracemalloc.start()
    try:
        checkpoint = checkpoints.read_checkpoint(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(v.nbytes for v in checkpoint.state_dict.values()) == weights
    assert peak < 1.2 * weights, f"peak {peak / weights:.2f}x the weights while reading"

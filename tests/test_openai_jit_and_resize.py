"""OpenAI TorchScript archives (fp16 parts, activation from the code) and positional-embedding resizing."""

from __future__ import annotations

import dataclasses

import numpy as np
import open_clip
import pytest
import torch

import georsclip_jax as gj
from georsclip_jax.models.configs import TextConfig, VisionConfig
from conftest import perturbed_open_clip


def _script_archive(cfg: gj.CLIPConfig, path, seed=0):
    """An archive shaped like OpenAI's release: a scripted CLIP with Linear/conv/projections in fp16."""
    ref = perturbed_open_clip(cfg.to_open_clip_json(), seed)
    open_clip.model.convert_weights_to_lp(ref, dtype=torch.float16)
    torch.jit.save(torch.jit.script(ref), path)
    return ref.float()  # fp16 values are exact in fp32: this is what open_clip loads too


@pytest.mark.parametrize("name", ["tiny-quickgelu", "tiny"])
def test_torchscript_archive(name, tmp_path):
    cfg = gj.get_model_config(name)
    ref = _script_archive(cfg, tmp_path / "jit.pt")
    ours = gj.create_model(cfg.replace(act="gelu"), tmp_path / "jit.pt")  # the archive's code decides
    assert ours.config.act == cfg.act
    pixels = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    tokens = gj.get_tokenizer()(["an airport", "a river"])
    with torch.no_grad():
        ref_img = ref.encode_image(torch.from_numpy(pixels.transpose(0, 3, 1, 2)), normalize=True).numpy()
        ref_txt = ref.encode_text(torch.from_numpy(tokens.astype(np.int64)), normalize=True).numpy()
    np.testing.assert_allclose(np.asarray(ours.encode_image(pixels, normalize=True)), ref_img, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(ours.encode_text(tokens, normalize=True)), ref_txt, atol=1e-5, rtol=0)


def test_torchscript_archive_infers_architecture(tmp_path):
    cfg = gj.CLIPConfig(
        embed_dim=64,
        vision=VisionConfig(image_size=64, patch_size=16, width=128, layers=2),
        text=TextConfig(width=128, heads=2, layers=2),
        act="quick_gelu",
    )
    _script_archive(cfg, tmp_path / "jit.pt")
    assert gj.create_model(pretrained=tmp_path / "jit.pt").config == cfg


@pytest.mark.parametrize("new_size", [48, 24])
def test_positional_embedding_resize_equals_open_clip(new_size, tmp_path):
    cfg = gj.get_model_config("tiny")
    ref = perturbed_open_clip(cfg.to_open_clip_json())
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    ours = gj.create_model("tiny", tmp_path / "w.pt", image_size=new_size)
    resized_cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, image_size=new_size))
    target = open_clip.model.CLIP(**resized_cfg.to_open_clip_json()).eval()
    sd = ref.state_dict()
    open_clip.model.resize_pos_embed(sd, target)  # bicubic, antialias=True, in place
    target.load_state_dict(sd)
    np.testing.assert_allclose(np.asarray(ours.visual.positional_embedding[...]),
                               target.visual.positional_embedding.detach().numpy(), atol=1e-6, rtol=0)
    assert ours.preprocess.image_size == new_size
    pixels = np.random.default_rng(0).normal(size=(2, new_size, new_size, 3)).astype(np.float32)
    with torch.no_grad():
        ref_img = target.encode_image(torch.from_numpy(pixels.transpose(0, 3, 1, 2)), normalize=True).numpy()
    np.testing.assert_allclose(np.asarray(ours.encode_image(pixels, normalize=True)), ref_img, atol=1e-5, rtol=0)

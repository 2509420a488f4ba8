"""Export to open_clip (strict loading, same embeddings), bit-exact round trips, our own format."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

import georsclip_jax as gj
from georsclip_jax.models.configs import TextConfig, VisionConfig
from georsclip_jax.interop.params import flat_params

TOL = 1e-5


def _inputs(model):
    size = model.config.vision.image_size
    pixels = np.random.default_rng(1).normal(size=(2, size, size, 3)).astype(np.float32)
    return pixels, gj.get_tokenizer()(["a harbour with boats", "a dense forest"])


def _assert_same_embeddings(ours, ref):
    pixels, tokens = _inputs(ours)
    with torch.no_grad():
        ref_img = ref.encode_image(torch.from_numpy(pixels.transpose(0, 3, 1, 2)), normalize=True).numpy()
        ref_txt = ref.encode_text(torch.from_numpy(tokens.astype(np.int64)), normalize=True).numpy()
    np.testing.assert_allclose(np.asarray(ours.encode_image(pixels, normalize=True)), ref_img, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(ours.encode_text(tokens, normalize=True)), ref_txt, atol=TOL, rtol=0)


def _assert_bit_exact(a, b):
    pa, pb = flat_params(a), flat_params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        assert pa[key].dtype == pb[key].dtype, key
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


def test_local_dir_export_loads_in_open_clip_strictly(tmp_path):
    ours = gj.create_model("tiny-quickgelu", seed=3)
    gj.export_open_clip(ours, tmp_path / "oc")
    ref, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{tmp_path / 'oc'}")  # strict=True inside
    assert isinstance(ref.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert preprocess.transforms[0].size == 32
    _assert_same_embeddings(ours, ref.eval())
    _assert_bit_exact(ours, gj.create_model(pretrained=tmp_path / "oc"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_file_export_loads_with_model_config(suffix, tmp_path):
    ours = gj.create_model("tiny-h80", seed=5)
    out = gj.export_open_clip(ours, tmp_path / f"model{suffix}")
    ref = open_clip.model.CLIP(**ours.config.to_open_clip_json()).eval()
    if suffix == ".pt":
        state = torch.load(out, weights_only=True)
    else:
        from safetensors.torch import load_file

        state = load_file(out)
    assert state["logit_scale"].shape == torch.Size([])
    ref.load_state_dict(state, strict=True)
    _assert_same_embeddings(ours, ref)
    _assert_bit_exact(ours, gj.create_model("tiny-h80", out))
    assert (tmp_path / "model_config.json").is_file()


def test_open_clip_round_trip_is_bit_exact(tmp_path):
    """open_clip -> ours -> open_clip returns the very same tensors."""
    torch.manual_seed(0)
    ref = open_clip.model.CLIP(**gj.get_model_config("tiny").to_open_clip_json())
    torch.save(ref.state_dict(), tmp_path / "ref.pt")
    ours = gj.create_model("tiny", tmp_path / "ref.pt")
    gj.export_open_clip(ours, tmp_path / "back.safetensors")
    from safetensors.torch import load_file

    back = load_file(tmp_path / "back.safetensors")
    original = ref.state_dict()
    original = {k: v for k, v in original.items() if k != "attn_mask"}
    assert back.keys() == original.keys()
    for key in original:
        assert torch.equal(back[key], original[key]), key


def test_save_pretrained_round_trip_keeps_everything(tmp_path):
    ours = gj.create_model("tiny-quickgelu", seed=9)
    gj.save_pretrained(ours, tmp_path / "ours")
    loaded = gj.create_model(pretrained=tmp_path / "ours")
    assert loaded.config == ours.config and loaded.preprocess == ours.preprocess
    _assert_bit_exact(ours, loaded)


def test_itra_and_custom_text_prefixes(tmp_path):
    """GeoRSCLIP's ITRA checkpoints (image_backbone./text_backbone.) and CustomTextCLIP's text. prefix."""
    torch.manual_seed(0)
    ref = open_clip.model.CLIP(**gj.get_model_config("tiny").to_open_clip_json()).eval()
    sd = ref.state_dict()
    itra = {("image_backbone." + k[len("visual."):]) if k.startswith("visual.") else "text_backbone." + k: v
            for k, v in sd.items()}
    torch.save({"state_dict": itra, "epoch": 5}, tmp_path / "itra.pt")
    _assert_same_embeddings(gj.create_model("tiny", tmp_path / "itra.pt"), ref)
    custom = {k if k.startswith(("visual.", "logit")) else "text." + k: v for k, v in sd.items()}
    custom["logit_scale"] = custom["logit_scale"].reshape(1)
    torch.save(custom, tmp_path / "custom.bin")
    _assert_same_embeddings(gj.create_model("tiny", tmp_path / "custom.bin"), ref)


def test_architecture_inferred_from_shapes(tmp_path):
    cfg = gj.CLIPConfig(
        embed_dim=64,
        vision=VisionConfig(image_size=64, patch_size=16, width=128, layers=2),
        text=TextConfig(width=128, heads=2, layers=3),
    )
    torch.manual_seed(0)
    ref = open_clip.model.CLIP(**cfg.to_open_clip_json()).eval()
    torch.save(ref.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="activation cannot be read"):
        gj.create_model(pretrained=tmp_path / "bare.pt")
    ours = gj.create_model(pretrained=tmp_path / "bare.pt", act="gelu")
    assert ours.config == cfg
    _assert_same_embeddings(ours, ref)

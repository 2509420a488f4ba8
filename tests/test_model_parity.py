"""Converted random-init open_clip models give open_clip's embeddings (float32, 1e-5 max abs).

Images go through each side's own preprocessing (real JPEG decodes), captions through each side's own
tokenizer, so the comparison covers the whole path a user runs.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from flax import nnx

import georsclip_jax as gj
from conftest import perturbed_open_clip

TOL = 1e-5


def _reference_embeddings(ref, images, captions, image_size):
    preprocess = open_clip.image_transform(image_size, is_train=False)
    pixels = torch.stack([preprocess(im) for im in images])
    tokens = open_clip.get_tokenizer("ViT-B-32")(captions)
    with torch.no_grad():
        return ref.encode_image(pixels, normalize=True).numpy(), ref.encode_text(tokens, normalize=True).numpy()


def _our_embeddings(model, images, captions):
    preprocess = gj.image_transform(model.config.vision.image_size)
    pixels = np.stack([preprocess(im) for im in images])
    tokens = gj.get_tokenizer()(captions)
    encode_image = nnx.jit(lambda m, x: m.encode_image(x, normalize=True))
    encode_text = nnx.jit(lambda m, t: m.encode_text(t, normalize=True))
    return np.asarray(encode_image(model, pixels)), np.asarray(encode_text(model, tokens))


@pytest.mark.parametrize("name", ["tiny", "tiny-quickgelu", "tiny-h80"])
def test_tiny_configs_match_open_clip(name, tmp_path, jpeg_images, captions):
    cfg = gj.get_model_config(name)
    ref = perturbed_open_clip(cfg.to_open_clip_json())
    torch.save(ref.state_dict(), tmp_path / "ref.pt")
    ours = gj.create_model(name, tmp_path / "ref.pt")
    ref_img, ref_txt = _reference_embeddings(ref, jpeg_images, captions, cfg.vision.image_size)
    our_img, our_txt = _our_embeddings(ours, jpeg_images, captions)
    np.testing.assert_allclose(our_img, ref_img, atol=TOL, rtol=0)
    np.testing.assert_allclose(our_txt, ref_txt, atol=TOL, rtol=0)


@pytest.mark.parametrize("name,suffix", [("ViT-B-32", ".safetensors"), ("ViT-B-32-quickgelu", ".pt")])
def test_full_size_vit_b_32_matches_open_clip(name, suffix, tmp_path, jpeg_images, captions):
    torch.manual_seed(1)
    ref = open_clip.create_model(name).eval()  # open_clip's own registry config, random init
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    if suffix == ".pt":
        torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / f"w{suffix}")
    else:
        from safetensors.torch import save_file

        save_file(sd, tmp_path / f"w{suffix}")
    ours = gj.create_model(name, tmp_path / f"w{suffix}")
    assert ours.config.act == ("quick_gelu" if "quickgelu" in name else "gelu")
    ref_img, ref_txt = _reference_embeddings(ref, jpeg_images, captions, 224)
    our_img, our_txt = _our_embeddings(ours, jpeg_images, captions)
    np.testing.assert_allclose(our_img, ref_img, atol=TOL, rtol=0)
    np.testing.assert_allclose(our_txt, ref_txt, atol=TOL, rtol=0)


def test_activation_matters(tmp_path, jpeg_images, captions):
    """Loading QuickGELU weights as GELU must change the outputs (the field is not decorative)."""
    cfg = gj.get_model_config("tiny-quickgelu")
    ref = perturbed_open_clip(cfg.to_open_clip_json())
    torch.save(ref.state_dict(), tmp_path / "ref.pt")
    wrong = gj.create_model("tiny", tmp_path / "ref.pt")
    ref_img, _ = _reference_embeddings(ref, jpeg_images, captions, 32)
    our_img, _ = _our_embeddings(wrong, jpeg_images, captions)
    assert np.abs(our_img - ref_img).max() > 1e-3


def test_registry_equals_open_clip_json():
    """Every named config equals open_clip's own model_configs JSON (v3.3.0)."""
    config_dir = Path(open_clip.__file__).parent / "model_configs"
    for name in gj.list_models():
        if name.startswith("tiny"):
            continue
        json_name = name if (config_dir / f"{name}.json").is_file() else name.removesuffix("-quickgelu")
        theirs = json.loads((config_dir / f"{json_name}.json").read_text())
        if name.endswith("-quickgelu"):
            theirs["quick_gelu"] = True
        ours = gj.get_model_config(name)
        assert gj.CLIPConfig.from_open_clip_json(theirs) == ours, name
        ref_mlp = int(theirs["vision_cfg"]["width"] * theirs["vision_cfg"].get("mlp_ratio", 4.0))
        assert ours.vision.mlp_width == ref_mlp, name


@functools.cache
def open_clip_shapes(name: str) -> dict[str, tuple]:
    """Our abstract model's parameters under open_clip's state-dict names, as shapes (the activation does not
    change them: `-quickgelu` names share their base's entry)."""
    from georsclip_jax.interop import open_clip as oc_interop
    from georsclip_jax.interop.params import abstract_model

    shapes = {}
    for path, variable in nnx.to_flat_state(nnx.state(abstract_model(gj.get_model_config(name)), nnx.Param)):
        key, transform = oc_interop.open_clip_key("/".join(map(str, path)))
        shapes[key] = transform(np.broadcast_to(np.float32(0), variable.get_value().shape)).shape
    return shapes


def test_param_shapes_equal_open_clip_for_big_configs():
    """Parameter shapes of ViT-H/g/bigG (head dims 80/88/104) equal open_clip's, without allocating."""
    for name in ["ViT-L-14-336", "ViT-H-14", "ViT-g-14", "ViT-bigG-14"]:
        with torch.device("meta"):
            ref = open_clip.model.CLIP(**open_clip.get_model_config(name))
        assert open_clip_shapes(name) == {k: tuple(v.shape) for k, v in ref.state_dict().items()}, name


def test_architecture_inference_recovers_every_registry_config():
    """From tensor shapes alone (as for OpenAI files), every named ViT config is recovered exactly."""
    from georsclip_jax.interop import open_clip as oc_interop

    for name in gj.list_models():
        if name.startswith("tiny"):
            continue
        cfg = gj.get_model_config(name)
        shapes_only = {k: np.broadcast_to(np.float32(0), shape)
                       for k, shape in open_clip_shapes(name.removesuffix("-quickgelu")).items()}
        assert oc_interop.infer_config(shapes_only, cfg.act) == cfg, name

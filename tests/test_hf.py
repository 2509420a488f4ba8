"""Hugging Face CLIPModel <-> ours, both directions, against transformers itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flax import nnx
from transformers import CLIPConfig as HFConfig
from transformers import CLIPModel

import georsclip_jax as gj
from conftest import hf_embeddings

TOL = 1e-5


def _random_hf_model(act: str, seed: int = 0) -> CLIPModel:
    torch.manual_seed(seed)
    config = HFConfig(
        projection_dim=32,
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         hidden_act=act, layer_norm_eps=1e-5, eos_token_id=2, bos_token_id=49406, pad_token_id=1),
        vision_config=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=2, num_attention_heads=3,
                           image_size=48, patch_size=16, hidden_act=act, layer_norm_eps=1e-5),
    )
    model = CLIPModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _inputs(captions, image_size):
    pixels = np.random.default_rng(0).normal(size=(3, image_size, image_size, 3)).astype(np.float32)
    return pixels, gj.get_tokenizer()(captions[:3])


def _our_embeddings(model, pixels, tokens):
    return [np.asarray(model.encode_image(pixels, normalize=True)), np.asarray(model.encode_text(tokens, normalize=True))]


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_hf_to_ours(act, tmp_path, captions):
    ref = _random_hf_model(act)
    ref.save_pretrained(tmp_path / "hf")
    ours = gj.create_model(pretrained=tmp_path / "hf")
    assert ours.config.act == act and ours.config.vision.heads == 3
    pixels, tokens = _inputs(captions, 48)
    for a, b in zip(_our_embeddings(ours, pixels, tokens), hf_embeddings(ref, pixels, tokens)):
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0)


def test_hf_bin_format(tmp_path, captions):
    ref = _random_hf_model("gelu", seed=3)
    ref.save_pretrained(tmp_path / "hf", safe_serialization=False)
    assert (tmp_path / "hf" / "pytorch_model.bin").is_file()
    ours = gj.create_model(pretrained=tmp_path / "hf")
    pixels, tokens = _inputs(captions, 48)
    np.testing.assert_allclose(_our_embeddings(ours, pixels, tokens)[1], hf_embeddings(ref, pixels, tokens)[1],
                               atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["tiny", "tiny-quickgelu"])
def test_ours_to_hf(name, tmp_path, captions):
    ours = gj.create_model(name, seed=4)
    gj.export_hf(ours, tmp_path / "export")
    loaded = CLIPModel.from_pretrained(tmp_path / "export").eval()
    pixels, tokens = _inputs(captions, ours.config.vision.image_size)
    for a, b in zip(_our_embeddings(ours, pixels, tokens), hf_embeddings(loaded, pixels, tokens)):
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0)
    np.testing.assert_allclose(loaded.logit_scale.item(), float(ours.logit_scale[...]), rtol=1e-7)


def test_hf_round_trip_is_bit_exact(tmp_path):
    ours = gj.create_model("tiny-h80", seed=2)
    gj.export_hf(ours, tmp_path / "export")
    back = gj.create_model(pretrained=tmp_path / "export")
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(ours, nnx.Param)), nnx.to_flat_state(nnx.state(back, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()), err_msg=str(path))


def test_the_export_carries_a_model_card_with_the_evaluation(tmp_path):
    """README.md parses as a Hub model card; its model-index holds every evaluation number we report."""
    from huggingface_hub import ModelCard

    results = {"EuroSAT-zeroshot-acc": 61.4, "EuroSAT-knn-acc": 80.25, "EuroSAT-4shot-acc": 55.5,
               "EuroSAT-4shot-std": 1.5, "retrieval-image2text-R@1-rsitmd": 17.92,
               "retrieval-text2image-R@10-rsitmd": 57.52, "retrieval-mean-recall-rsitmd": 35.33,
               "Selo_Rsu": 0.755636, "val_loss": 1.25}
    (tmp_path / "results.json").write_text(json.dumps({"steps": 10, "preempted": False, "eval": results}))
    model = gj.create_model("tiny-quickgelu", seed=1)
    gj.export_hf(model, tmp_path / "export", str(tmp_path / "results.json"), training_data="RS5M (5M pairs)",
                 name="GeoRSCLIP-tiny")
    card = ModelCard.load(tmp_path / "export" / "README.md")
    assert card.data.model_name == "GeoRSCLIP-tiny" and card.data.library_name == "transformers"
    carried = {(r.task_type, r.dataset_name, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert carried == {
        ("zero-shot-image-classification", "EuroSAT", "top-1 accuracy (%)"): 61.4,
        ("image-classification", "EuroSAT", "k-NN top-1 accuracy (%)"): 80.25,
        ("image-classification", "EuroSAT", "4-shot top-1 accuracy (%)"): 55.5,
        ("image-to-text", "rsitmd", "R@1 (%)"): 17.92, ("text-to-image", "rsitmd", "R@10 (%)"): 57.52,
        ("image-text-retrieval", "rsitmd", "mR (%)"): 35.33, ("semantic-localization", "AIR-SLT", "Rsu"): 0.755636}
    assert "quick_gelu" in card.text and "RS5M (5M pairs)" in card.text and "| GeoRSCLIP-tiny | 61.40 |" in card.text
    bare = gj.export_hf(model, tmp_path / "bare")  # no evaluation: a card without a model-index
    assert ModelCard.load(bare / "README.md").data.eval_results is None

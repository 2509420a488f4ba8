"""Checkpoints named by Hub id (`hf-hub:`), offline against a Hub cache this test builds in
huggingface_hub's own layout (models--ORG--NAME/snapshots/<revision>/..., refs/main), HF_HUB_OFFLINE=1:
an open_clip-format repo loads equal to open_clip's own `hf-hub:` loading of the same cache; a file inside
a repo loads by path; a pinned revision picks its snapshot; whatever is missing ends in one line; a run
starts from a Hub id in the cache."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import safetensors.torch
import torch
from open_clip.push_to_hf_hub import save_config_for_hf

import georsclip_jax as gj
from conftest import cache_snapshot
from georsclip_jax.train.config import validate_init_from
from reference_embeddings import embeddings

MAIN, OLD = "a" * 40, "b" * 40  # commit hashes of two snapshots


def open_clip_repo_files(model: torch.nn.Module, config: dict) -> dict:
    """What open_clip's push_to_hf_hub uploads: its config file and the safetensors weights."""
    return {"open_clip_config.json": lambda path: save_config_for_hf(model, path, config),
            "open_clip_model.safetensors": lambda path: safetensors.torch.save_file(model.state_dict(), path)}


def tiny_open_clip(seed: int):
    torch.manual_seed(seed)
    config = gj.get_model_config("tiny").to_open_clip_json()
    model = open_clip.model.CLIP(**config).eval()
    model.visual.image_mean, model.visual.image_std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    return model, config  # (the preprocessing attributes open_clip's create_model sets, which the config saves)


def test_an_open_clip_repo_loads_as_open_clip_loads_it(hub_cache):
    model, config = tiny_open_clip(seed=0)
    cache_snapshot(hub_cache, "laion/tiny-clip", MAIN, open_clip_repo_files(model, config))
    ours = gj.create_model(pretrained="hf-hub:laion/tiny-clip")
    reference, _, _ = open_clip.create_model_and_transforms("hf-hub:laion/tiny-clip")
    for a, b in zip(embeddings(ours, False), embeddings(reference.eval(), True), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert ours.preprocess.image_size == 32


def test_a_file_inside_a_repo_and_a_pinned_revision(hub_cache):
    new, config = tiny_open_clip(seed=0)
    old, _ = tiny_open_clip(seed=1)
    save = lambda model: lambda path: torch.save(model.state_dict(), path)  # noqa: E731
    cache_snapshot(hub_cache, "Zilun/GeoRSCLIP", MAIN, {"ckpt/RS5M_tiny.pt": save(new)})
    cache_snapshot(hub_cache, "Zilun/GeoRSCLIP", OLD, {"ckpt/RS5M_tiny.pt": save(old)}, ref=None)
    latest = gj.create_model("tiny", "hf-hub:Zilun/GeoRSCLIP/ckpt/RS5M_tiny.pt")
    pinned = gj.create_model("tiny", f"hf-hub:Zilun/GeoRSCLIP@{OLD}/ckpt/RS5M_tiny.pt")
    for model, reference in ((latest, new), (pinned, old)):
        for a, b in zip(embeddings(model, False), embeddings(reference, True), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,message", [
    ("hf-hub:nobody/nothing", "hf-hub:nobody/nothing: open_clip_config.json of nobody/nothing is not in the Hub cache"),
    ("hf-hub:Zilun/GeoRSCLIP/ckpt/missing.pt", "ckpt/missing.pt of Zilun/GeoRSCLIP is not in the Hub cache"),
    (f"hf-hub:Zilun/GeoRSCLIP@{'c' * 40}/ckpt/RS5M_tiny.pt", f"RS5M_tiny.pt of Zilun/GeoRSCLIP@{'c' * 40} is not"),
    ("hf-hub:just-a-name", "hf-hub:just-a-name: a Hub id is hf-hub:ORG/NAME[@REVISION][/path/in/repo]"),
])
def test_what_is_missing_ends_in_one_line(hub_cache, name, message):
    model, _ = tiny_open_clip(seed=0)
    state = model.state_dict()
    cache_snapshot(hub_cache, "Zilun/GeoRSCLIP", MAIN, {"ckpt/RS5M_tiny.pt": lambda path: torch.save(state, path)})
    with pytest.raises(ValueError) as error:
        gj.create_model("tiny", name)
    assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"^config\.model\.init_from: "):  # a run stops before it starts
        validate_init_from(name)


def test_a_run_starts_from_a_hub_id_in_the_cache(hub_cache, tmp_path):
    from runs import SMALL, final_params, run

    model, config = tiny_open_clip(seed=0)
    cache_snapshot(hub_cache, "laion/tiny-clip", MAIN, open_clip_repo_files(model, config))
    run(tmp_path / "run", *SMALL, "--config.train.total_steps=2", "--config.model.init_from=hf-hub:laion/tiny-clip",
        extra_env={"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"})
    step, params = final_params(tmp_path / "run")
    start = gj.create_model(pretrained="hf-hub:laion/tiny-clip")
    proj = next(k for k in params if k.endswith("['visual']['proj']['value']"))
    assert step == 2  # two small steps from the Hub weights, not from a fresh initialization:
    assert np.abs(params[proj] - np.asarray(start.visual.proj[...])).max() < 0.05

"""The GeoRSCLIP and SkyCLIP recipes are valid configs (on data laid out where they expect it), and the RET-2 recipe trains end to end on the generated
retrieval sets (Karpathy JSON, epochs -> steps), shrunk to the tiny model."""

from __future__ import annotations

import json

import pytest
import torch

import georsclip_jax as gj
from georsclip_jax.data.synthetic import write_rs5m_shards, write_test_data
from georsclip_jax.data.synthetic_skyscript import write_training_csv
from georsclip_jax.train.config import validate
from runs import load_recipe, run

RECIPES = ["demo", "georsclip_rs5m_vitb32", "georsclip_rs5m_vith14", "ret2_finetune_vitb32", "lora_rs5m_vitb32",
           "skyclip_vitl14"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    write_rs5m_shards(str(root / "RS5M" / "train"), 64, samples_per_shard=1)  # 32 pub11 + 32 rs3 shards
    test_data = write_test_data(str(root / "rs5m_test_data"), per_class=1, retrieval_images=8, selo_images=0)
    torch.save(__import__("open_clip").model.CLIP(**gj.get_model_config("tiny").to_open_clip_json()).state_dict(),
               root / "tiny.pt")
    write_training_csv(str(root / "SkyScript"), 4, name="dataframe/SkyScript_train_top30pct_filtered_by_CLIP_openai.csv")
    write_training_csv(str(root / "SkyScript"), 4, name="dataframe/SkyScript_val_5K_filtered_by_CLIP_openai.csv")
    return root, test_data


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_validate(data, name, monkeypatch):
    root, test_data = data
    monkeypatch.chdir(root)
    config = load_recipe(name)
    with config.unlocked():
        if config.model.init_from:
            config.model.init_from = str(root / "tiny.pt")
        if config.data.kind == "karpathy":
            config.data.train = f"{test_data}/rsicd/dataset_rsicd.json::{test_data}/rsitmd/dataset_RSITMD.json"
            config.data.image_root = f"{test_data}/rsicd/RSICD_images::{test_data}/rsitmd/images"
    validate(config, 8)


def test_ret2_recipe_trains_on_karpathy_json_without_the_dedup_tools_duplicates(data, tmp_path):
    from georsclip_jax.dedup import deduplicate

    root, test_data = data
    rsicd, rsitmd = f"{test_data}/rsicd", f"{test_data}/rsitmd"
    summary = deduplicate({"rsicd": f"{rsicd}/dataset_rsicd.json,{rsicd}/RSICD_images",
                           "rsitmd": f"{rsitmd}/dataset_RSITMD.json,{rsitmd}/images"}, str(tmp_path / "lists"))
    assert summary["removed"] == {"rsicd": 4, "rsitmd": 4}  # the planted copies of the other set's test images
    lists = tmp_path / "lists"
    overrides = ["--config.model.name=tiny", f"--config.model.init_from={root / 'tiny.pt'}",
                 f"--config.data.train={rsicd}/dataset_rsicd.json::{rsitmd}/dataset_RSITMD.json",
                 f"--config.data.image_root={rsicd}/RSICD_images::{rsitmd}/images",
                 f"--config.data.exclude={lists / 'rsicd_duplicate.txt'}::{lists / 'rsitmd_duplicate.txt'}",
                 "--config.train.global_batch_size=8", "--config.train.epochs=2", "--config.optim.warmup_steps=1",
                 f"--config.eval.data_root={test_data}", "--config.eval.every_steps=0"]
    run(tmp_path / "run", *overrides, config="configs/ret2_finetune_vitb32.py")
    with open(tmp_path / "run" / "results.json") as f:
        results = json.load(f)
    assert results["steps"] == 2  # 2 epochs x (16 train images - 8 duplicates) / batch 8
    assert "retrieval-mean-recall-rsitmd" in results["eval"]

"""TFDS zero-shot sets through tensorflow-datasets itself: a fixture prepared by TFDS's own builder and
writer (ArrayRecord, no TensorFlow), read by index with its data-source API; zero-shot over it equals
the same images evaluated from an ImageFolder tree; the newest complete version is picked."""

from __future__ import annotations

import json
import os

import pytest

import georsclip_jax as gj
from georsclip_jax.data import eval_sets
from georsclip_jax.data.synthetic import write_test_data

tfds = pytest.importorskip("tensorflow_datasets")  # a requirements-test pin: never skipped in CI


def prepare(data_dir: str, folder: str, version: str, classes: list[str]) -> None:
    """EuroSAT's TFDS layout (eurosat/rgb/<version>) written by TFDS from an ImageFolder tree's files;
    `classes` is the ClassLabel order, which need not be ImageFolder's sorted order."""
    with tfds.core.registered.skip_registration():
        class EuroSat(tfds.core.GeneratorBasedBuilder):
            name = "eurosat"
            VERSION = tfds.core.Version(version)
            BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="rgb")]

            def _info(self):
                return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(None, None, 3)), "filename": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=classes)}))

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples()}

            def _generate_examples(self):
                for cls in sorted(os.listdir(folder)):
                    for name in sorted(os.listdir(os.path.join(folder, cls))):
                        path = os.path.join(folder, cls, name)
                        yield path, {"image": path, "filename": name, "label": classes.index(cls)}

    EuroSat(data_dir=data_dir, config="rgb", file_format="array_record").download_and_prepare()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    data = write_test_data(str(root / "rs5m_test_data"), per_class=3, retrieval_images=2, selo_images=0)
    folder = os.path.join(data, "eurosat-rgb", "2750")
    classes = sorted(os.listdir(folder))
    data_dir = str(root / "tensorflow_datasets")
    prepare(data_dir, folder, "1.0.0", classes)                      # an older complete version
    prepare(data_dir, folder, "2.0.0", classes[::-1])                # the newest complete one
    os.makedirs(os.path.join(data_dir, "eurosat", "rgb", "3.0.0"))   # an interrupted preparation
    os.makedirs(os.path.join(data_dir, "eurosat", "rgb", "incomplete.AB12_3.1.0"))
    return data, folder, classes, data_dir


def test_the_newest_complete_version_is_read_with_its_own_class_names(prepared):
    data, folder, classes, data_dir = prepared
    assert eval_sets.newest_complete_version(data_dir, "eurosat/rgb").endswith(os.path.join("rgb", "2.0.0"))
    tfds_set = eval_sets.tfds_set(data_dir, "eurosat/rgb")
    assert tfds_set.classnames == tuple(eval_sets.georsclip_classname(c) for c in classes[::-1])
    folder_set = eval_sets.class_folder_set(folder)
    assert len(tfds_set) == len(folder_set)
    # The same files under the same class names (TFDS stores records in its own shuffled order).
    in_folder = sorted((open(p, "rb").read(), folder_set.classnames[label])
                       for p, label in zip(folder_set.images, folder_set.labels))
    in_tfds = sorted((tfds_set.images[i], tfds_set.classnames[tfds_set.labels[i]]) for i in range(len(tfds_set)))
    assert in_tfds == in_folder


def test_zero_shot_over_tfds_equals_the_image_folder_tree(prepared, tmp_path, capsys):
    from georsclip_jax import evaluate

    data, _, _, data_dir = prepared
    gj.save_pretrained(gj.create_model("tiny", seed=2), tmp_path / "tiny")
    out = tmp_path / "results.json"
    evaluate.main(["--pretrained", str(tmp_path / "tiny"), "--data-root", data, "--tasks", "zeroshot",
                   "--tfds", "eurosat/rgb", "--tfds-data-dir", data_dir, "--batch-size", "16", "--out", str(out)])
    results = json.loads(out.read_text())["results"]
    details = json.loads(out.read_text())["details"]
    assert results["EuroSAT-tfds-zeroshot-acc"] == results["EuroSAT-zeroshot-acc"]
    assert details["EuroSAT-tfds"] == details["EuroSAT"]
    assert "EuroSAT-tfds_acc" in capsys.readouterr().out


def test_missing_datasets_and_splits_are_named(prepared, tmp_path):
    _, _, _, data_dir = prepared
    with pytest.raises(FileNotFoundError, match=r"resisc45.*expected .*resisc45/<version>/dataset_info.json"):
        eval_sets.tfds_set(data_dir, "resisc45")
    with pytest.raises(FileNotFoundError, match=r"no split 'test'"):
        eval_sets.tfds_set(data_dir, "eurosat/rgb", split="test")


def test_the_trainer_config_names_tfds_sets_from_the_registry():
    from georsclip_jax.train.config import base_config, validate_values

    config = base_config()
    config.eval.tfds = "eurosat/rgb,uc_merced"
    validate_values(config)
    config.eval.tfds = "eurosat/rbg"
    with pytest.raises(ValueError, match=r"config.eval.tfds: unknown 'eurosat/rbg' \(did you mean eurosat/rgb\?\)"):
        validate_values(config)


def test_the_trainer_eval_hook_evaluates_tfds_sets(prepared):
    from georsclip_jax.train.config import base_config
    from georsclip_jax.train.loop import make_suite

    _, _, _, data_dir = prepared
    config = base_config()
    config.eval.update(tasks="zeroshot", tfds="eurosat/rgb", tfds_data_dir=data_dir, batch_size=16)
    results = make_suite(config, gj.create_model("tiny", seed=2), "")()
    assert 0 <= results["EuroSAT-tfds-zeroshot-acc"] <= 100 and "EuroSAT-zeroshot-acc" not in results

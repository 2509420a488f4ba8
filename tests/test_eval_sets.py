"""Eval-set readers against torchvision's ImageFolder and against each other (CSV vs Karpathy JSON),
on a generated `rs5m_test_data` tree."""

from __future__ import annotations

import os

import numpy as np
import pytest

from georsclip_jax.data import eval_sets
from georsclip_jax.data.synthetic import CLASSES, write_test_data


@pytest.fixture(scope="module")
def test_data(tmp_path_factory):
    return write_test_data(str(tmp_path_factory.mktemp("rs5m_test_data")), per_class=3, retrieval_images=6,
                           selo_images=1)


@pytest.mark.parametrize("name", ["EuroSAT", "RESISC45", "AID"])
def test_class_folders_match_torchvision_imagefolder(test_data, name):
    from torchvision.datasets import ImageFolder

    ours = eval_sets.rs5m_test_data(test_data)[name]()
    reference = ImageFolder(os.path.dirname(ours.images[0]).rsplit(os.sep, 1)[0])
    assert list(ours.images) == [p for p, _ in reference.samples]
    assert ours.labels.tolist() == [label for _, label in reference.samples]
    assert len(ours.classnames) == len(CLASSES) and len(ours) == 3 * len(CLASSES)


def test_classnames_follow_georsclips_rule(test_data):
    sets = eval_sets.rs5m_test_data(test_data)
    assert "parkinglot" in sets["EuroSAT"]().classnames          # CamelCase folders collapse, as in GeoRSCLIP
    assert "parking lot" in sets["AID"]().classnames              # "Parking Lot"
    assert "parking lot" in sets["RESISC45"]().classnames         # "parking_lot"
    assert eval_sets.georsclip_classname("Storage_Tanks/x") == "storage tanks x"


@pytest.mark.parametrize("name,json_name,image_dir", [("rsitmd", "dataset_RSITMD.json", "images"),
                                                     ("rsicd", "dataset_rsicd.json", "RSICD_images")])
def test_retrieval_csv_and_karpathy_json_agree(test_data, name, json_name, image_dir):
    from_csv = eval_sets.rs5m_test_data(test_data)[name]()
    from_json = eval_sets.karpathy_json_set(os.path.join(test_data, name, json_name),
                                            os.path.join(test_data, name, image_dir))
    assert from_csv.image_paths == from_json.image_paths and from_csv.captions == from_json.captions
    assert np.array_equal(from_csv.caption_image, np.repeat(np.arange(6), 5))


def test_csv_groups_by_sorted_filename_keeping_duplicates(tmp_path):
    for f in ("b.jpg", "a.jpg"):
        (tmp_path / f).write_bytes(b"")
    (tmp_path / "x_test.csv").write_text("filename,title\nb.jpg,one\na.jpg,two\nb.jpg,one\na.jpg,three\n")
    got = eval_sets.retrieval_csv_set(str(tmp_path / "x_test.csv"), str(tmp_path))
    assert [os.path.basename(p) for p in got.image_paths] == ["a.jpg", "b.jpg"]
    assert got.captions == ("two", "three", "one", "one") and got.caption_image.tolist() == [0, 0, 1, 1]


def test_rsicd_csv_is_read_as_gb18030(tmp_path):
    (tmp_path / "rsicd").mkdir()
    (tmp_path / "rsicd" / "a.jpg").write_bytes(b"")
    (tmp_path / "rsicd" / "rsicd_test.csv").write_bytes("filename,title\na.jpg,机场 airport\n".encode("gb18030"))
    got = eval_sets.retrieval_csv_set(str(tmp_path / "rsicd" / "rsicd_test.csv"), str(tmp_path / "rsicd"))
    assert got.captions == ("机场 airport",)


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="2750"):
        eval_sets.rs5m_test_data(str(tmp_path))["EuroSAT"]()
    (tmp_path / "t.csv").write_text("filename,title\nnope.jpg,x\n")
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        eval_sets.retrieval_csv_set(str(tmp_path / "t.csv"), str(tmp_path))
    (tmp_path / "u.csv").write_text("file,title\nnope.jpg,x\n")
    with pytest.raises(KeyError, match="'filename'"):
        eval_sets.retrieval_csv_set(str(tmp_path / "u.csv"), str(tmp_path))

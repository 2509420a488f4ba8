"""SkyScript's evaluation protocol (evals/skyscript.py) against PyTorch implementations written here from
specs/skyscript.md §4: its test_zero_shot_classification (CsvDatasetForClassification, zero_shot_classifier,
run) and its cross_modal_retrieval notebook, on real photos laid out as SkyScript's benchmark, with a
random open_clip model; both protocols from one evaluate command."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import georsclip_jax as gj
from conftest import perturbed_open_clip
from georsclip_jax import evaluate
from georsclip_jax.data.synthetic import write_test_data
from georsclip_jax.data.synthetic_skyscript import write_skyscript_benchmark
from georsclip_jax.evals.skyscript import linked_recall
from photos import photo_scene

# specs/skyscript.md §4.3, verbatim: two templates per set; "building, " / "road, " for fine-grained tasks
SCENE_TEMPLATES = ("a satellite photo of {c}.", "a satellite image of {c}")
FINE_TEMPLATES = {"roof_shape": ("a satellite photo of building, {c}.", "a satellite image of building, {c}"),
                  "smoothness": ("a satellite photo of road, {c}.", "a satellite image of road, {c}"),
                  "surface": ("a satellite photo of road, {c}.", "a satellite image of road, {c}")}
SCENE_CSVS = {"aid": "aid/aid_img_txt_pairs_test.csv", "eurosat": "eurosat/eurosat_img_txt_pairs_test.csv",
              "fmow": "fmow/fmow_img_txt_pairs_val.csv", "millionaid": "millionaid/img_txt_pairs_train.csv",
              "patternnet": "patternnet/img_txt_pairs_train.csv", "nwpu": "nwpu/img_txt_pairs_train.csv",
              "rsicb256": "rsicb256/img_txt_pairs_train.csv", "SkyScript_cls": "SkyScript_cls/img_txt_pairs_val.csv"}


def photo(label: int, rng: np.random.Generator) -> Image.Image:
    """A crop of real photographs, 40-120 px a side (the label does not show: the model is random)."""
    return photo_scene(int(rng.integers(40, 121)), int(rng.integers(40, 121)), rng)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("skyscript")
    benchmark = write_skyscript_benchmark(str(root / "benchmark"), per_class=2, retrieval_images=8, draw=photo)
    data = write_test_data(str(root / "rs5m_test_data"), per_class=1, retrieval_images=4, selo_images=0,
                           near_duplicates=0)
    reference = perturbed_open_clip(gj.get_model_config("tiny").to_open_clip_json(), seed=5)
    torch.save(reference.state_dict(), root / "tiny.pt")
    out = root / "out" / "results.json"
    evaluate.main(["--model", "tiny", "--pretrained", str(root / "tiny.pt"), "--protocol", "georsclip,skyscript",
                   "--data-root", data, "--tasks", "zeroshot,retrieval", "--skyscript-root", benchmark,
                   "--batch-size", "32", "--out", str(out)])
    return benchmark, reference, json.loads(out.read_text()), (root / "out" / "results.md").read_text()


def torch_zero_shot_classification(model, root, csv_path, classnames_path, label_column, templates):
    """SkyScript's CsvDatasetForClassification + zero_shot_classifier + run(), in PyTorch (float32)."""
    import open_clip

    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r[label_column] != ""]  # df[label_key].isnull() == False
    with open(classnames_path) as f:
        classnames = [line.strip() for line in f]
    labels = [r[label_column] for r in rows]
    targets = [int(x) for x in labels] if all(x.isdigit() for x in labels) else [classnames.index(x) for x in labels]
    preprocess = open_clip.image_transform(model.visual.image_size[0], is_train=False)
    with torch.no_grad():
        weights = []
        for c in classnames:
            embeddings = F.normalize(model.encode_text(open_clip.tokenize([t.format(c=c) for t in templates])), dim=-1)
            mean = embeddings.mean(dim=0)
            weights.append(mean / mean.norm())
        classifier = torch.stack(weights, dim=1)
        images = torch.stack([preprocess(Image.open(os.path.join(root, r["filepath"]))) for r in rows])
        logits = 100.0 * F.normalize(model.encode_image(images), dim=-1) @ classifier
    target = torch.tensor(targets)
    k = min(5, len(classnames))
    correct = logits.topk(k, 1, True, True)[1].t().eq(target.view(1, -1))
    out = {"top1": correct[:1].float().sum().item() / len(rows), "predictions": logits.argmax(1).tolist()}
    if k == 5:
        out["top5"] = correct[:5].float().sum().item() / len(rows)
    return out


def notebook_retrieval(text_features, image_features, texts, images, rows, ks=(1, 5, 10, 100)) -> dict:
    """cross_modal_retrieval.ipynb: ground truth from every row, argsort of 100 x similarity, any-hit."""
    text_ids, image_ids = {t: i for i, t in enumerate(texts)}, {p: i for i, p in enumerate(images)}
    image2texts, text2images = {}, {}
    for text, path in rows:
        image2texts.setdefault(path, set()).add(text_ids[text])
        text2images.setdefault(text, set()).add(image_ids[path])
    res = {}
    for name, queries, gallery, keys, truth in (("text2image", text_features, image_features, texts, text2images),
                                                ("image2text", image_features, text_features, images, image2texts)):
        for k in ks:
            hits = sum(bool(set(torch.argsort(100 * q @ gallery.T, descending=True).numpy()[:k]) & truth[key])
                       for q, key in zip(queries, keys))
            res[f"{name}-R@{k}"] = hits / len(keys)
    return res


def torch_retrieval(model, root, csv_path, caption_column, prefix) -> dict:
    import open_clip

    with open(csv_path, newline="") as f:
        rows = [(prefix + r[caption_column], os.path.join(root, r["filepath"])) for r in csv.DictReader(f)
                if r[caption_column]]
    images, texts = sorted({p for _, p in rows}), sorted({t for t, _ in rows})  # df.groupby(...) order
    preprocess = open_clip.image_transform(model.visual.image_size[0], is_train=False)
    with torch.no_grad():
        image_features = F.normalize(model.encode_image(torch.stack([preprocess(Image.open(p)) for p in images])), dim=-1)
        text_features = F.normalize(model.encode_text(open_clip.tokenize(texts)), dim=-1)
    return notebook_retrieval(text_features, image_features, texts, images, rows)


@pytest.mark.parametrize("name", list(SCENE_CSVS))
def test_scene_classification_equals_skyscripts_code(run, name):
    benchmark, reference, results, _ = run
    folder = os.path.dirname(SCENE_CSVS[name])
    expected = torch_zero_shot_classification(reference, benchmark, os.path.join(benchmark, SCENE_CSVS[name]),
                                              os.path.join(benchmark, folder, "classnames.txt"), "label",
                                              SCENE_TEMPLATES)
    assert results["details"]["skyscript"][f"{name}-predictions"] == expected["predictions"]
    assert results["results"][f"skyscript/{name}-top1"] == pytest.approx(expected["top1"], abs=1e-12)
    assert results["results"][f"skyscript/{name}-top5"] == pytest.approx(expected["top5"], abs=1e-12)


@pytest.mark.parametrize("task", list(FINE_TEMPLATES))
@pytest.mark.parametrize("column", ["label_v1", "label_v2"])
def test_fine_grained_classification_equals_skyscripts_code(run, task, column):
    benchmark, reference, results, _ = run
    expected = torch_zero_shot_classification(
        reference, benchmark, os.path.join(benchmark, task, "img_txt_pairs_test.csv"),
        os.path.join(benchmark, task, f"classnames_{column[-2:]}.txt"), column, FINE_TEMPLATES[task])
    assert results["details"]["skyscript"][f"{task}-{column}-predictions"] == expected["predictions"]
    assert results["results"][f"skyscript/{task}-{column}-top1"] == pytest.approx(expected["top1"], abs=1e-12)
    assert (f"skyscript/{task}-{column}-top5" in results["results"]) == ("top5" in expected)  # v2: < 5 classes


@pytest.mark.parametrize("name,csv_name,column,prefix", [
    ("RSICD", "RSICD/RSICD_img_txt_pairs_test.csv", "title", "a satellite image. "),
    ("ucmcaptions", "ucmcaptions/ucmcaptions_img_txt_pairs_test.csv", "title", "a satellite image. "),
    ("SkyScript", "SkyScript_test_30K_filtered_by_CLIP_openai.csv", "title_multi_objects", "")])
def test_retrieval_equals_skyscripts_notebook(run, name, csv_name, column, prefix):
    benchmark, reference, results, _ = run
    expected = torch_retrieval(reference, benchmark, os.path.join(benchmark, csv_name), column, prefix)
    for key, value in expected.items():
        assert results["results"][f"skyscript/retrieval-{key}-{name}"] == pytest.approx(value, abs=1e-12), key


def test_both_protocols_in_one_command(run):
    _, _, results, table = run
    keys = results["results"]
    seven = ["aid", "eurosat", "fmow", "millionaid", "patternnet", "nwpu", "rsicb256"]
    assert keys["skyscript/average-top1"] == pytest.approx(np.mean([keys[f"skyscript/{n}-top1"] for n in seven]))
    assert "AID-zeroshot-acc" in keys and "retrieval-mean-recall-rsicd" in keys  # GeoRSCLIP's, same run
    assert not any(k.startswith("skyscript/") and "mean-recall" in k for k in keys)  # SkyScript reports no mR
    assert "| Model | EuroSAT_acc" in table and "SkyScript protocol: scene classification" in table
    assert "nwpu† top-1" in table and "aid top-1" in table and "avg of 7 top-1" in table and "train CSV" in table
    row = next(line for line in table.splitlines() if line.startswith("| AID top-1 |"))  # side by side
    assert row == f"| AID top-1 | {keys['AID-zeroshot-acc']:.2f} | {100 * keys['skyscript/aid-top1']:.2f} |"


@pytest.mark.parametrize("num_images,num_texts,links_per_text", [(7, 30, 1), (150, 40, 3), (120, 400, 2)])
def test_linked_recall_equals_the_notebook_rule_on_varied_sets(num_images, num_texts, links_per_text):
    rng = np.random.default_rng(num_images)
    images = F.normalize(torch.from_numpy(rng.normal(size=(num_images, 16)).astype(np.float32)), dim=-1)
    texts = F.normalize(torch.from_numpy(rng.normal(size=(num_texts, 16)).astype(np.float32)), dim=-1)
    rows = [(t, int(i)) for t in range(num_texts) for i in rng.choice(num_images, links_per_text, replace=False)]
    rows += [(int(rng.integers(num_texts)), i) for i in range(num_images)]  # every image is in some row
    rows += [rows[0]]  # a repeated row: one link
    expected = notebook_retrieval(texts, images, list(range(num_texts)), list(range(num_images)), rows)
    links = np.unique(np.asarray(rows, np.int32), axis=0)
    ours = {f"text2image-{k}": v for k, v in linked_recall(texts.numpy(), images.numpy(), links).items()}
    ours.update({f"image2text-{k}": v for k, v in linked_recall(images.numpy(), texts.numpy(), links[:, ::-1]).items()})
    assert ours == pytest.approx(expected, abs=1e-12)


def test_a_missing_set_is_skipped_with_its_reason_and_bad_labels_are_named(tmp_path):
    from georsclip_jax.data import skyscript_benchmark as layout

    root = write_skyscript_benchmark(str(tmp_path / "b"), per_class=1, retrieval_images=2)
    os.remove(os.path.join(root, "fmow", "classnames.txt"))
    csv_path = os.path.join(root, "aid", "aid_img_txt_pairs_test.csv")
    with open(csv_path, "a") as f:
        f.write("aid/images/sea_0.jpg,volcano\n")
    with pytest.raises(ValueError, match=r"aid_img_txt_pairs_test.csv column label: label 'volcano' is not in"):
        layout.scene_set(root, "aid")
    from georsclip_jax.evals.encoders import Encoders
    from georsclip_jax.evals.skyscript import SkyScriptSuite

    suite = SkyScriptSuite(Encoders(gj.create_model("tiny"), 8), root, ["scene"])
    assert set(suite.skipped) == {"aid", "fmow"} and "classnames.txt" in suite.skipped["fmow"]
    assert set(suite.classification) == set(SCENE_CSVS) - {"aid", "fmow"}

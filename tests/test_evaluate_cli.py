"""End to end: the evaluate CLI on a generated rs5m_test_data tree gives the full GeoRSCLIP table, and
a converted open_clip model scores exactly what the same protocol computed in PyTorch scores; the
embed CLI; the suite as a training hook evaluates new parameters without recompiling."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import georsclip_jax as gj
from conftest import perturbed_open_clip
from georsclip_jax.data.synthetic import write_test_data
from georsclip_jax.evals.prompts import GEORSCLIP_TEMPLATES, fill


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_test_data(str(root / "rs5m_test_data"), per_class=4, retrieval_images=12, selo_images=1)
    reference = perturbed_open_clip(gj.get_model_config("tiny").to_open_clip_json(), seed=3)
    torch.save(reference.state_dict(), root / "tiny.pt")
    out = root / "out" / "results.json"
    result = subprocess.run([sys.executable, "-m", "georsclip_jax.evaluate", "--model", "tiny", "--pretrained",
                             str(root / "tiny.pt"), "--data-root", data, "--out", str(out), "--batch-size", "32"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as f:
        return root, data, reference, json.load(f), result.stdout, result.stderr


def torch_zeroshot_acc(model, root) -> float:
    """GeoRSCLIP's zeroshot_evaluation, in PyTorch: ImageFolder, mean of raw prompt embeddings."""
    import open_clip
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(root, transform=open_clip.image_transform(32, is_train=False))
    classnames = [c.replace("_", " ").replace("/", " ").lower() for c in dataset.classes]
    with torch.no_grad():
        weights = []
        for name in classnames:
            emb = model.encode_text(open_clip.tokenize([fill(t, name) for t in GEORSCLIP_TEMPLATES])).mean(0)
            weights.append(emb / emb.norm())
        images = torch.stack([x for x, _ in dataset])
        features = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        predictions = (100 * features @ torch.stack(weights).T).argmax(1)
    return 100 * (predictions == torch.tensor(dataset.targets)).float().mean().item()


def torch_retrieval(model, csv_path, image_dir, encoding) -> dict:
    """GeoRSCLIP's CsvDataset + duplicate() + clip_benchmark's recall_at_k, in PyTorch."""
    import open_clip
    from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k
    from PIL import Image

    with open(csv_path, encoding=encoding, newline="") as f:
        rows = list(csv.DictReader(f))
    files = np.unique([r["filename"] for r in rows])
    captions, owner = [], []
    for i, name in enumerate(files):
        for r in rows:
            if r["filename"] == name:
                captions.append(r["title"])
                owner.append(i)
    preprocess = open_clip.image_transform(32, is_train=False)
    with torch.no_grad():
        images = torch.stack([preprocess(Image.open(os.path.join(image_dir, f))) for f in files])
        image_features = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        text_features = torch.nn.functional.normalize(model.encode_text(open_clip.tokenize(captions)), dim=-1)
    scores = text_features @ image_features.T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(captions)), torch.tensor(owner)] = True
    out = {}
    for k in (1, 5, 10):
        out[f"image2text-R@{k}"] = 100 * (recall_at_k(scores.T, positive.T, k) > 0).float().mean().item()
        out[f"text2image-R@{k}"] = 100 * (recall_at_k(scores, positive, k) > 0).float().mean().item()
    out["mean-recall"] = float(np.mean(list(out.values())))
    return out


def test_cli_prints_and_writes_the_full_table(setup):
    root, _, _, results, stdout, stderr = setup
    keys = results["results"]
    assert {"EuroSAT-zeroshot-acc", "RESISC45-zeroshot-acc", "AID-zeroshot-acc", "retrieval-mean-recall-rsitmd",
            "retrieval-image2text-R@10-rsicd", "Selo_Rsu", "Selo_Rda", "Selo_Ras", "Selo_Rmi"} <= set(keys)
    assert len(keys) == 3 + 2 * 7 + 4
    header = stdout.strip().splitlines()[0]
    assert header.startswith("| Model | EuroSAT_acc | RESISC45_acc | AID_acc | rsitmd I2T R@1") and "Selo_Rmi" in header
    assert (root / "out" / "results.md").read_text().strip() == stdout.strip()
    sample = results["details"]["selo_samples"][0]
    assert sample["jpg_name"] == "0.jpg"
    overlay = Image.open(root / "out" / "results_selo" / "selo_000.png")
    assert overlay.size == (700, 640) and len(overlay.getcolors(2**24)) > 1000  # a figure, not a blank page
    index = (root / "out" / "results_selo" / "index.html").read_text()
    assert 'src="selo_000.png"' in index and html.escape(sample["caption"]) in index and f"{sample['Rmi']:.4f}" in index
    assert not re.search(r"\w+Warning: ", stderr), stderr  # e.g. NumPy's "Mean of empty slice"


@pytest.mark.parametrize("name,folder", [("EuroSAT", "eurosat-rgb/2750"), ("RESISC45", "RESISC45"), ("AID", "AID")])
def test_zeroshot_equals_the_protocol_in_pytorch(setup, name, folder):
    _, data, reference, results, _, _ = setup
    expected = torch_zeroshot_acc(reference, os.path.join(data, folder))
    assert results["results"][f"{name}-zeroshot-acc"] == pytest.approx(expected, abs=1e-4)  # torch means in float32


@pytest.mark.parametrize("name,csv_name,images,encoding", [("rsitmd", "rsitmd_test.csv", "images", "utf-8"),
                                                           ("rsicd", "rsicd_test.csv", "RSICD_images", "gb18030")])
def test_retrieval_equals_the_protocol_in_pytorch(setup, name, csv_name, images, encoding):
    _, data, reference, results, _, _ = setup
    expected = torch_retrieval(reference, os.path.join(data, name, csv_name), os.path.join(data, name, images), encoding)
    for key, value in expected.items():
        assert results["results"][f"retrieval-{key}-{name}"] == pytest.approx(value, abs=1e-4), key


def test_embed_cli_writes_ids_and_normalized_embeddings(setup, tmp_path):
    import open_clip
    from PIL import Image

    root, data, reference, _, _, _ = setup
    folder = os.path.join(data, "AID")
    out = tmp_path / "aid.npy"
    result = subprocess.run([sys.executable, "-m", "georsclip_jax.embed", "--model", "tiny", "--pretrained",
                             str(root / "tiny.pt"), "--images", folder, "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    ids = (tmp_path / "aid.ids.txt").read_text().splitlines()
    embeddings = np.load(out)
    assert len(ids) == len(embeddings) == 40 and ids[0] == "Beach/Beach_0.jpg"
    preprocess = open_clip.image_transform(32, is_train=False)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(reference.encode_image(torch.stack(
            [preprocess(Image.open(os.path.join(folder, i)).convert("RGB")) for i in ids])), dim=-1).numpy()
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)


def test_suite_evaluates_new_parameters_without_recompiling(setup):
    import jax
    from flax import nnx

    from georsclip_jax.evals.suite import Suite

    root, data, _, results, _, _ = setup
    model = gj.create_model("tiny", str(root / "tiny.pt"))
    suite = Suite(model, data, tasks=("zeroshot", "retrieval"), batch_size=32)
    first = suite()
    assert first["AID-zeroshot-acc"] == results["results"]["AID-zeroshot-acc"]
    _, params, _ = nnx.split(model, nnx.Param, ...)
    shifted = jax.tree.map(lambda p: p * 1.5, params)
    second = suite(shifted)
    assert suite.encoders._image_fn._cache_size() == 1 and suite.encoders._text_fn._cache_size() <= 2
    assert second != first


def test_cli_reads_retrieval_sets_from_karpathy_json(setup, tmp_path, capsys):
    """--karpathy replaces a CSV set (same numbers: same images and captions) or adds a new one."""
    from georsclip_jax import evaluate

    root, data, _, results, _, _ = setup
    rsitmd = f"{data}/rsitmd/dataset_RSITMD.json,{data}/rsitmd/images"
    out = tmp_path / "karpathy.json"
    evaluate.main(["--model", "tiny", "--pretrained", str(root / "tiny.pt"), "--data-root", data, "--tasks",
                   "retrieval", "--batch-size", "32", "--out", str(out), "--karpathy", f"rsitmd={rsitmd}",
                   "--karpathy", f"rsitmd-again={rsitmd}"])
    got = json.loads(out.read_text())["results"]
    for key, value in results["results"].items():
        if key.startswith("retrieval-") and key.endswith("-rsitmd"):
            assert got[key] == pytest.approx(value, abs=1e-9) == got[key.replace("rsitmd", "rsitmd-again")], key
    assert "rsitmd-again mR" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        evaluate.main(["--pretrained", "x", "--data-root", data, "--karpathy", "rsitmd=only-a-json"])


def test_embed_decodes_each_shard_image_once_and_skips_bad_ones(tmp_path, monkeypatch):
    """Shards are embedded a batch at a time; every image is decoded exactly once (it was twice)."""
    from georsclip_jax import embed
    from georsclip_jax.data import decode
    from georsclip_jax.data.tar_shards import TarShardSource
    from georsclip_jax.evals.encoders import Encoders
    from messy_shards import write_messy_shards

    pattern = "::".join(write_messy_shards(str(tmp_path / "shards")))
    source = TarShardSource(pattern)
    decoded = []
    real = decode.decode_image
    monkeypatch.setattr(decode, "decode_image", lambda data, *a, **k: decoded.append(data) or real(data, *a, **k))
    encoders = Encoders(gj.create_model("tiny", seed=1), batch_size=8)
    ids, embeddings = embed.shard_embeddings(pattern, encoders)
    unproblematic = [i for i in range(len(source)) if not source[i]["problem"]]
    assert len(decoded) == len(unproblematic)  # once each (the old listing pass decoded every image twice)
    good = [str(source[i]["origin"]) for i in unproblematic if str(source[i]["origin"]).split(":")[-1].startswith("good-")]
    assert set(good) <= set(ids) and not any(":bad-corrupt_image" in i or ":bad-image_too_large" in i for i in ids)
    by_id = dict(zip(ids, embeddings))
    first = next(i for i in unproblematic if str(source[i]["origin"]) == good[0])
    expected = encoders.images([lambda: real(source[first]["image"])])[0]
    np.testing.assert_allclose(by_id[good[0]], expected, atol=1e-6)


def test_cli_probe_tasks_print_the_table_and_write_json_and_markdown(setup, tmp_path):
    from test_probes import knn_oracle

    from georsclip_jax.data.eval_sets import class_folder_set
    from georsclip_jax.evals.encoders import Encoders
    from georsclip_jax.evals.probes import split_per_class
    from georsclip_jax.evals.zeroshot import image_embeddings

    root, data, _, _, _, _ = setup
    out = tmp_path / "probes.json"
    result = subprocess.run([sys.executable, "-m", "georsclip_jax.evaluate", "--model", "tiny", "--pretrained",
                             str(root / "tiny.pt"), "--data-root", data, "--out", str(out), "--batch-size", "32",
                             "--tasks", "fewshot,linear_probe,knn", "--knn-k", "3", "--shots", "1,2",
                             "--fewshot-draws", "3"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    per_set = ["knn-acc", "1shot-acc", "1shot-std", "2shot-acc", "2shot-std", "linear-probe-acc"]
    assert set(results) == {f"{n}-{k}" for n in ("EuroSAT", "RESISC45", "AID") for k in per_set}
    lines = result.stdout.strip().splitlines()
    assert lines[0] == ("| Model | " + " | ".join(f"{n} kNN | {n} 1-shot | {n} 2-shot | {n} LP"
                                                for n in ("EuroSAT", "RESISC45", "AID")) + " |")
    assert f"{results['AID-2shot-acc']:.2f} ± {results['AID-2shot-std']:.2f}" in lines[2]
    assert (tmp_path / "probes.md").read_text().strip() == result.stdout.strip()
    # k-NN on the same embeddings, split by RemoteCLIP's rule, voted by the NumPy oracle
    dataset = class_folder_set(os.path.join(data, "AID"))
    images = image_embeddings(Encoders(gj.create_model("tiny", str(root / "tiny.pt")), 32), dataset)
    train, test = split_per_class(dataset.labels, [os.path.basename(p) for p in dataset.images])
    predicted = knn_oracle(images[train], dataset.labels[train], images[test], len(dataset.classnames), 3, False)
    assert results["AID-knn-acc"] == pytest.approx(100 * np.mean(predicted == dataset.labels[test]), abs=1e-9)


def test_probe_tasks_evaluate_new_parameters_without_recompiling(setup):
    import jax
    from flax import nnx

    from georsclip_jax.evals import probes
    from georsclip_jax.evals.suite import Suite

    root, data, _, _, _, _ = setup
    model = gj.create_model("tiny", str(root / "tiny.pt"))
    suite = Suite(model, data, tasks=("knn", "fewshot", "linear_probe"), batch_size=32, knn_k=3, shots=(2,),
                  fewshot_draws=2)
    first = suite()
    compiled = [fn._cache_size() for fn in (probes.fit_logistic, probes.ridge_solutions, probes._vote)]
    _, params, _ = nnx.split(model, nnx.Param, ...)
    second = suite(jax.tree.map(lambda p: p * 1.5, params))
    assert [fn._cache_size() for fn in (probes.fit_logistic, probes.ridge_solutions, probes._vote)] == compiled
    assert second.keys() == first.keys() and second != first

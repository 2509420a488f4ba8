"""An `export_hf` folder works with transformers end to end: CLIPProcessor + CLIPModel on real photos
(scikit-image's bundled samples) give our embeddings within 1e-5, its tokenizer gives our tokens on
hundreds of varied captions, and pipeline("zero-shot-image-classification") runs on it. Loading an HF
folder reads its image size and normalization from preprocessor_config.json."""

from __future__ import annotations

import html
import json
import random

import numpy as np
import pytest
import skimage.data
import torch
import transformers
from PIL import Image

import georsclip_jax as gj
from georsclip_jax.transforms import eval_transform, resize_shortest, to_normalized_array
from conftest import CAPTIONS

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = gj.create_model("tiny", seed=3)
    directory = gj.export_hf(model, tmp_path_factory.mktemp("hf") / "tiny")
    return model, directory, transformers.CLIPProcessor.from_pretrained(directory), \
        transformers.CLIPModel.from_pretrained(directory).eval()


def varied_captions(count: int, seed: int = 0) -> list[str]:
    """RS-style captions with case, digits, punctuation, accents, CJK, emoji and long runs (truncation)."""
    rng = random.Random(seed)
    words = ("airport runway harbour pier farmland river bridge stadium forest residential industrial "
             "parking lot roundabout desert beach meadow church dense sparse storage tanks viaduct").split()
    extras = ["2024", "#3", "(north)", "—", "café", "Zürich", "地图", "🌍", "don't", "it's", "x2.5", "!!", "...",
              "O'Hare", "e-mail", "   spaced   out  ", "UPPER", "tab\tseparated"]
    out = list(CAPTIONS)
    while len(out) < count:
        n = rng.choice([3, 8, 15, 90])  # 90 words overflow the 77-token context
        out.append(" ".join(rng.choice(words + extras) if rng.random() < 0.2 else rng.choice(words)
                            for _ in range(n)).capitalize())
    return out


def test_hf_tokenizer_gives_our_tokens(exported):
    model, _, processor, _ = exported
    captions = varied_captions(400)
    ours = gj.get_tokenizer()(captions)
    # HF's tokenizers skip open_clip's html.unescape; unescaped first, they agree on every caption.
    theirs = processor.tokenizer([html.unescape(html.unescape(c)) for c in captions], padding="max_length",
                                 max_length=model.config.text.context_length, truncation=True)
    for caption, row, ids, mask in zip(captions, ours, theirs["input_ids"], theirs["attention_mask"]):
        assert [i for i, m in zip(ids, mask) if m] == [int(t) for t in row if t], caption
    assert any(len([t for t in row if t]) == 77 for row in ours)  # truncation was exercised
    escaped = processor.tokenizer(["a &amp; b"])["input_ids"][0]
    assert escaped != processor.tokenizer(["a & b"])["input_ids"][0]  # the one difference, shown
    assert gj.get_tokenizer()(["a &amp; b"]).tolist() == gj.get_tokenizer()(["a & b"]).tolist()


def floor_crop_offset(photo: Image.Image, size: int) -> bool:
    """True where HF's center crop (offset floored) and open_clip's (rounded half to even) part ways."""
    return any(round((side - size) / 2) != (side - size) // 2 for side in resize_shortest(photo, size).size)


def test_hf_processor_and_model_give_our_embeddings_on_real_photos(exported):
    model, _, processor, hf_model = exported
    size = model.preprocess.image_size
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS]
    assert len({p.size for p in photos}) > 3  # several sizes and aspect ratios
    inputs = processor(images=photos, return_tensors="pt")
    with torch.no_grad():
        theirs = torch.nn.functional.normalize(hf_model.get_image_features(**inputs), dim=-1).numpy()
    pixels = np.stack([eval_transform(model.preprocess)(p) for p in photos])
    ours = np.asarray(model.encode_image(pixels, normalize=True))
    same_crop = np.array([not floor_crop_offset(p, size) for p in photos])
    assert same_crop.sum() >= 4 and (~same_crop).sum() >= 1, same_crop
    np.testing.assert_allclose(theirs[same_crop], ours[same_crop], atol=1e-5)
    # Where the crop offset is a half pixel, HF floors it and open_clip (and we) round it half to even.
    # That one-pixel shift is the whole difference: our pixels cropped HF's way give HF's embeddings.
    for i in np.flatnonzero(~same_crop):
        resized = resize_shortest(photos[i], size)
        left, top = (resized.size[0] - size) // 2, (resized.size[1] - size) // 2
        floored = to_normalized_array(resized.crop((left, top, left + size, top + size)), model.preprocess.mean,
                                      model.preprocess.std)
        np.testing.assert_allclose(inputs["pixel_values"][i].numpy().transpose(1, 2, 0), floored, atol=1e-6)
        np.testing.assert_allclose(theirs[i], np.asarray(model.encode_image(floored[None], normalize=True))[0],
                                   atol=1e-5)
        assert np.abs(theirs[i] - ours[i]).max() > 1e-5  # the shift is real, not a tolerance artefact

    captions = varied_captions(64, seed=1)
    text = processor(text=[html.unescape(html.unescape(c)) for c in captions], return_tensors="pt", padding="max_length", max_length=77, truncation=True)
    with torch.no_grad():
        theirs = torch.nn.functional.normalize(hf_model.get_text_features(**text), dim=-1).numpy()
    np.testing.assert_allclose(theirs, np.asarray(model.encode_text(gj.get_tokenizer()(captions), normalize=True)),
                               atol=1e-5)


def test_zero_shot_pipeline_runs_on_the_export(exported):
    model, directory, _, _ = exported
    classify = transformers.pipeline("zero-shot-image-classification", model=str(directory))
    photo = Image.fromarray(skimage.data.coffee())
    labels = ["a photo of a cup of coffee", "a photo of an airport", "a photo of a cat"]
    scores = {r["label"]: r["score"] for r in classify(photo, candidate_labels=labels, hypothesis_template="{}")}
    image = model.encode_image(eval_transform(model.preprocess)(photo)[None], normalize=True)
    texts = model.encode_text(gj.get_tokenizer()(labels), normalize=True)
    logits = float(np.exp(np.asarray(model.logit_scale[...]))) * np.asarray(image @ texts.T)[0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose([scores[label] for label in labels], expected, atol=1e-4)


def test_loading_an_hf_folder_reads_its_preprocessor_config(exported, tmp_path):
    _, directory, _, _ = exported
    folder = tmp_path / "custom"
    folder.mkdir()
    for f in directory.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config.update(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25])
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    loaded = gj.create_model(None, folder)
    assert loaded.preprocess.mean == (0.5, 0.5, 0.5) and loaded.preprocess.std == (0.25, 0.25, 0.25)
    assert loaded.preprocess.image_size == config["crop_size"]["height"]

"""Eval preprocessing equals open_clip's (1e-6) on every image kind; train crops equal torchvision's."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

import georsclip_jax as gj
from conftest import encode_decode, synthetic_photo
from georsclip_jax import transforms


def _image(kind: str) -> Image.Image:
    rgb = synthetic_photo(317, 241, seed=7)  # non-square, odd sizes: exercises rounding of the crop
    if kind == "jpeg":
        return encode_decode(rgb, "JPEG", quality=85)
    if kind == "png":
        return encode_decode(rgb, "PNG")
    if kind == "palette":
        return Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=64)
    if kind == "rgba":
        alpha = np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2]).astype(np.uint8)
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    if kind == "grayscale":
        return Image.fromarray(rgb).convert("L")
    if kind == "portrait":
        return encode_decode(synthetic_photo(199, 403, seed=3), "JPEG")
    if kind == "small":
        return encode_decode(synthetic_photo(64, 64, seed=4), "PNG")  # EuroSAT-sized: upsampled
    if kind == "cmyk":
        return Image.fromarray(rgb).convert("CMYK")
    raise AssertionError(kind)


KINDS = ["jpeg", "png", "palette", "rgba", "grayscale", "portrait", "small", "cmyk"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [224, 336])
def test_eval_transform_equals_open_clip(kind, size):
    img = _image(kind)
    theirs = open_clip.image_transform(size, is_train=False)(img).numpy().transpose(1, 2, 0)
    ours = gj.image_transform(size)(img)
    assert ours.shape == (size, size, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["squash", "shortest"])
def test_resize_modes_and_inception_stats(mode):
    img = _image("jpeg")
    mean = std = (0.5, 0.5, 0.5)
    theirs = open_clip.image_transform(224, is_train=False, mean=mean, std=std, resize_mode=mode)(img)
    ours = gj.image_transform(224, mean=mean, std=std, resize_mode=mode)(img)
    np.testing.assert_allclose(ours, theirs.numpy().transpose(1, 2, 0), atol=1e-6, rtol=0)


def test_center_crop_rounds_half_to_even():
    # (H - size) = 75: torchvision rounds 37.5 to 38; floor division would give 37.
    img = Image.fromarray(synthetic_photo(224, 299, seed=1))
    np.testing.assert_array_equal(np.asarray(transforms.center_crop(img, 224)),
                                  np.asarray(TF.center_crop(img, [224, 224])))


@pytest.mark.parametrize("kind", ["jpeg", "portrait", "small"])
def test_resized_crop_equals_torchvision(kind):
    img = _image(kind).convert("RGB")
    torch.manual_seed(0)
    for _ in range(5):
        top, left, h, w = torch_params = open_clip.transform.RandomResizedCrop.get_params(img, (0.9, 1.0), (3 / 4, 4 / 3))
        theirs = TF.resized_crop(img, top, left, h, w, [224, 224], TF.InterpolationMode.BICUBIC)
        ours = transforms.resized_crop(img, *torch_params, 224)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_random_resized_crop_params_follow_torchvision_distribution():
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(2000):
        top, left, h, w = transforms.random_resized_crop_params(rng, 400, 300)
        assert 0 <= top <= 300 - h and 0 <= left <= 400 - w
        areas.append(h * w / (400 * 300))
        ratios.append(w / h)
    assert 0.88 <= min(areas) and max(areas) <= 1.0
    assert 3 / 4 - 0.02 <= min(ratios) and max(ratios) <= 4 / 3 + 0.02


def test_train_transform_is_seeded_and_shaped():
    img = _image("jpeg")
    augment = gj.image_transform(224, train=True, hflip=True, rotate=True)
    a = augment(img, np.random.default_rng(5))
    b = augment(img, np.random.default_rng(5))
    c = augment(img, np.random.default_rng(6))
    assert a.shape == (224, 224, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1

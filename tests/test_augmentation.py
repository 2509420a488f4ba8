"""GeoRSCLIP's train augmentation: the exact path equals torchvision, the fast path (DCT-scaled JPEG
decode) stays within 1.5 levels / 35 dB of it on real photos, and the draws follow the specified
distribution (RandomResizedCrop scale 0.9-1 with torchvision's aspect sampling, flip p=0.5,
rotation uniform in [0, 360))."""

from __future__ import annotations

import io

import numpy as np
import open_clip
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from scipy import stats

from georsclip_jax import transforms
from photos import fast_path_quality, photo_sample
from georsclip_jax.data.synthetic import jpeg_bytes


@pytest.fixture(scope="module")
def photo_jpegs():
    return [jpeg_bytes(photo_sample(0, i)) for i in range(16)]


def test_exact_path_equals_torchvision_crop_flip_and_rotation(photo_jpegs):
    for i, data in enumerate(photo_jpegs[:6]):
        img = Image.open(io.BytesIO(data)).convert("RGB")
        draw = transforms.draw_augmentation(np.random.default_rng(i), img.width, img.height, hflip=True, rotate=True)
        draw = transforms.AugmentDraw(draw.top, draw.left, draw.height, draw.width, flip=i % 2 == 0, angle=draw.angle)
        theirs = TF.resized_crop(img, draw.top, draw.left, draw.height, draw.width, [224, 224],
                                 TF.InterpolationMode.BICUBIC)
        theirs = TF.rotate(TF.hflip(theirs) if draw.flip else theirs, draw.angle, TF.InterpolationMode.NEAREST, fill=0)
        ours = transforms.apply_augmentation(Image.open(io.BytesIO(data)), draw, 224)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_jpeg_draft_decodes_at_the_chosen_dct_scale():
    # Asking PIL's draft for ceil(side / k) made it fall back to k / 2 (or no scaling) for most
    # sizes: 1621 // 406 == 3, so a 1/4 draft decoded at 1/2.
    data = jpeg_bytes(photo_sample(0, 1))
    img = Image.open(io.BytesIO(data))
    assert img.size == (1621, 1769)
    draw = transforms.AugmentDraw(top=20, left=10, height=1700, width=1600)
    assert transforms.jpeg_draft_factor(img, draw, 224) == 4
    decoded = transforms.decode_drafted(img, 4, transforms.to_rgb)
    assert decoded.size == (406, 443)


def test_fast_path_is_within_1_5_levels_and_35_db_of_the_exact_path(photo_jpegs):
    quality = fast_path_quality(photo_jpegs)
    assert quality["drafted"] >= 10, quality  # the comparison must exercise the scaled decode
    assert quality["mean_abs_diff"] <= 1.5, quality
    assert quality["psnr_db"] >= 35.0, quality


def test_fast_path_is_the_exact_path_for_images_too_small_to_draft():
    data = jpeg_bytes(photo_sample(0, 0))  # 304 x 336: crops under 2 x 224
    draw = transforms.draw_augmentation(np.random.default_rng(0), 304, 336, hflip=True, rotate=True)
    fast = transforms.apply_augmentation(Image.open(io.BytesIO(data)), draw, 224, jpeg_draft=True)
    exact = transforms.apply_augmentation(Image.open(io.BytesIO(data)), draw, 224)
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(exact))


@pytest.mark.parametrize("width, height", [(256, 256), (400, 300), (1000, 1400)])
def test_augmentation_draws_follow_the_specified_distribution(width, height):
    """10,000 draws against torchvision's own samplers (two-sample KS) and the stated laws."""
    n = 10_000
    rng = np.random.default_rng(0)
    ours = [transforms.draw_augmentation(rng, width, height, hflip=True, rotate=True) for _ in range(n)]
    torch.manual_seed(0)
    image = Image.new("RGB", (width, height))
    theirs = [open_clip.transform.RandomResizedCrop.get_params(image, (0.9, 1.0), (3 / 4, 4 / 3)) for _ in range(n)]
    for ours_stat, theirs_stat in [
        ([d.height * d.width / (width * height) for d in ours], [h * w / (width * height) for _, _, h, w in theirs]),
        ([np.log(d.width / d.height) for d in ours], [np.log(w / h) for _, _, h, w in theirs]),
        ([(d.left + d.width / 2) / width for d in ours], [(left + w / 2) / width for _, left, _, w in theirs]),
    ]:
        assert stats.ks_2samp(ours_stat, theirs_stat).pvalue > 1e-3
    assert all(0.88 <= d.height * d.width / (width * height) <= 1.0 for d in ours)
    flips = np.mean([d.flip for d in ours])
    assert abs(flips - 0.5) < 4 * np.sqrt(0.25 / n), flips
    angles = np.array([d.angle for d in ours])
    assert stats.kstest(angles, stats.uniform(0, 360).cdf).pvalue > 1e-3
    torchvision_angles = [T.RandomRotation.get_params([0.0, 360.0]) for _ in range(n)]
    assert stats.ks_2samp(angles, torchvision_angles).pvalue > 1e-3


def test_skyscript_augmentation_equals_torchvision_per_draw(photo_jpegs):
    """augment="skyscript": each draw's crop + bilinear/bicubic resize, colour jitter in its drawn order and
    quarter turn equal torchvision's functional ops with the same parameters (what timm's transforms call)."""
    modes = {Image.BILINEAR: TF.InterpolationMode.BILINEAR, Image.BICUBIC: TF.InterpolationMode.BICUBIC}
    adjust = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast, "saturation": TF.adjust_saturation}
    filters, turns = set(), set()
    for i, data in enumerate(photo_jpegs[:8]):
        img = Image.open(io.BytesIO(data)).convert("RGB")
        draw = transforms.draw_augmentation(np.random.default_rng(i), img.width, img.height,
                                            **transforms.AUGMENTATIONS["skyscript"])
        filters.add(draw.interpolation)
        turns.add(draw.quarter_turns)
        theirs = TF.resized_crop(img, draw.top, draw.left, draw.height, draw.width, [224, 224],
                                 modes[draw.interpolation])
        for op, factor in draw.jitter:
            theirs = adjust[op](theirs, factor)
        theirs = TF.rotate(theirs, 90.0 * draw.quarter_turns)
        ours = transforms.apply_augmentation(Image.open(io.BytesIO(data)), draw, 224)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert filters == {Image.BILINEAR, Image.BICUBIC} and len(turns) >= 3  # the draws exercise every branch


def test_skyscript_draws_follow_timms_transform_in_distribution():
    """10,000 draws against the samplers of the transform timm builds from SkyScript's --aug-cfg
    (RandomResizedCropAndInterpolation, ColorJitter), and the stated laws for the rest."""
    from timm.data import create_transform

    n, width, height = 10_000, 400, 300
    timm_transform = create_transform(224, is_training=True, scale=(0.67, 1.0), ratio=(0.5, 2.0), hflip=0.0,
                                      color_jitter=0.4, interpolation="random")
    crop, jitter = timm_transform.transforms[:2]
    assert type(jitter).__name__ == "ColorJitter" and jitter.hue is None and len(timm_transform.transforms) == 4
    rng = np.random.default_rng(0)
    ours = [transforms.draw_augmentation(rng, width, height, **transforms.AUGMENTATIONS["skyscript"]) for _ in range(n)]
    import random

    random.seed(0)
    torch.manual_seed(0)
    image = Image.new("RGB", (width, height))
    theirs = [crop.get_params(image, crop.scale, crop.ratio) for _ in range(n)]
    for ours_stat, theirs_stat in [
        ([d.height * d.width / (width * height) for d in ours], [h * w / (width * height) for _, _, h, w in theirs]),
        ([np.log(d.width / d.height) for d in ours], [np.log(w / h) for _, _, h, w in theirs]),
    ]:
        assert stats.ks_2samp(ours_stat, theirs_stat).pvalue > 1e-3
    their_jitter = [T.ColorJitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
                    for _ in range(n)]
    for k, op in enumerate(transforms.JITTER_OPS):
        factors = [dict(d.jitter)[op] for d in ours]
        assert stats.ks_2samp(factors, [float(j[1 + k]) for j in their_jitter]).pvalue > 1e-3
    orders = [tuple(op for op, _ in d.jitter) for d in ours]
    their_orders = [tuple(transforms.JITTER_OPS[i] for i in j[0].tolist() if i < 3) for j in their_jitter]
    counts = lambda seq: np.array([seq.count(o) for o in sorted(set(their_orders))])  # 6 orders
    assert len(set(orders)) == 6 and stats.chi2_contingency([counts(orders), counts(their_orders)]).pvalue > 1e-3
    assert not any(d.flip or d.angle for d in ours)
    turns = np.bincount([d.quarter_turns for d in ours], minlength=4)
    assert stats.chisquare(turns).pvalue > 1e-3  # uniform over 0, 90, 180, 270 degrees
    bicubic = np.mean([d.interpolation == Image.BICUBIC for d in ours])
    assert abs(bicubic - 0.5) < 4 * np.sqrt(0.25 / n)

"""SeLo: the crop grid and the SLM metrics on constructed probability maps, against values worked
out by hand from the definitions in the eval spec §4 (a hit, a miss, several centres, no centre)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from georsclip_jax.evals import selo

SQUARE = [[[300.0, 300.0], [500.0, 300.0], [500.0, 500.0], [300.0, 500.0]]]  # centre (400, 400)
RADIUS = int(1.5 * math.hypot(100, 100))  # 212


def disks(centres, radius, value=1.0, shape=(800, 800)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    prob = np.zeros(shape)
    for x, y in centres:
        prob[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = value
    return np.floor(prob * 255) / 255  # a map as it comes back from the JPEG: uint8 / 255


def ras_of(offset_fraction):
    return (math.exp(3 * offset_fraction) - 1) / (math.exp(3) - 1)


def test_crop_grid_follows_the_two_pass_clamped_layout():
    assert selo.window_starts(1000, 256, 0) == [0, 256, 512, 744]
    assert selo.window_starts(1000, 256, 128) == [128, 384, 640, 744]
    assert selo.window_starts(600, 512, 256) == [88]
    boxes = selo.crop_boxes(1000, 600)
    # 256: 4x3 + 4x2 - 1 shared (744, 344); 512: 2x2 + 2x1 - 1 shared (488, 88); 768 > width: none
    assert len(boxes) == 24 and len(set(boxes)) == 24
    assert (744, 1000, 344, 600) in boxes and (488, 1000, 88, 600) in boxes
    assert all(r1 - r0 == c1 - c0 for r0, r1, c0, c1 in boxes)


def test_heat_map_is_the_per_pixel_mean_of_covering_crops():
    heat = selo.heat_map(4, 6, [(0, 4, 0, 4), (0, 4, 2, 6)], [1.0, 3.0])
    assert heat[0].tolist() == [1, 1, 2, 2, 3, 3]


def test_probability_map_scales_blurs_and_quantizes():
    assert not selo.probability_map(np.full((300, 300), 0.3)).any()  # flat heat: zero map, no NaN
    prob = selo.probability_map(np.random.default_rng(0).normal(size=(300, 300)))
    assert prob.min() >= 0 and prob.max() <= 1 and np.allclose(prob * 255, np.round(prob * 255))


def test_perfect_hit():
    prob = disks([(400, 400)], 80)
    metrics = selo.selo_metrics(prob, SQUARE)
    assert selo.regions(SQUARE) == [(400, 400, RADIUS)]
    assert metrics["Rsu"] == 1.0                       # all attention inside: L = S_in / eps
    assert metrics["Rda"] == 1.0                       # exactly one centre near the target
    # the one centre sits at the disk centre up to the even-kernel box filters' few-pixel drift
    assert 0 <= metrics["Ras"] <= ras_of(5 / RADIUS)
    assert metrics["Rmi"] == pytest.approx(0.4 + 0.35 * (1 - metrics["Ras"]) + 0.25)


def test_miss():
    metrics = selo.selo_metrics(disks([(100, 100)], 60), SQUARE)  # 424 px from the target > r = 212
    assert metrics == {"Rsu": 0.0, "Ras": 1.0, "Rda": 0.0, "Rmi": pytest.approx(0.0)}


def test_several_centres():
    prob = disks([(340, 400), (460, 400)], 30)
    centres = selo.attention_centres(prob)
    assert len(centres) == 2 and centres[1][0] - centres[0][0] == 120  # equal drift for both
    metrics = selo.selo_metrics(prob, SQUARE)
    # two centres 120 px apart: spread = 60 / r, Rda = 0.5 (1 - spread) + exp(-0.5 (2 + 2))
    assert metrics["Rda"] == pytest.approx(0.5 * (1 - 60 / RADIUS) + math.exp(-2.0), abs=1e-12)
    assert metrics["Ras"] == pytest.approx(ras_of(60 / RADIUS), abs=2e-3)


def test_no_centre_corner_cases():
    for prob in (np.zeros((800, 800)), disks([(400, 400)], 80, value=0.4)):  # nothing, or all below 0.5
        assert selo.attention_centres(prob) == []
        metrics = selo.selo_metrics(prob, SQUARE + [[[10, 10], [50, 10], [50, 50]]])
        assert metrics["Ras"] == 1.0 and metrics["Rda"] == 0.0


def test_rsu_of_a_uniform_map():
    area, total = 201 * 201, 800 * 800  # fillPoly includes the border pixels of [300, 500]^2
    inside = 0.5 * area
    expected = 1 - math.exp(-0.707 * (inside / (0.5 * total - inside + 1e-7)) * ((total - area) / area))
    assert selo.selo_metrics(np.full((800, 800), 0.5), SQUARE)["Rsu"] == pytest.approx(expected, abs=1e-12)

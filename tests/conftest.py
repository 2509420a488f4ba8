"""Shared fixtures: random-init reference models (built offline), real JPEG images, RS captions."""

from __future__ import annotations

import io
import os
import shutil
import tempfile

import jax
import numpy as np
import pytest
from PIL import Image

jax.config.update("jax_default_matmul_precision", "highest")  # float32 parity, as the spec requires
jax.config.update("jax_num_cpu_devices", 8)  # sharded code paths run over 8 simulated devices

# One persistent compilation cache for this process and every process the suite starts (trainers, CLIs):
# the same tiny programs are otherwise compiled again in dozens of subprocesses. A JAX_COMPILATION_CACHE_DIR
# set by the caller is kept (and reused by the next run); else a fresh folder, removed at the end.
SUITE_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR") or tempfile.mkdtemp(prefix="georsclip_suite_jax_cache_")
OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
os.environ.update(JAX_COMPILATION_CACHE_DIR=SUITE_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
jax.config.update("jax_compilation_cache_dir", SUITE_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


# The files that take longest (docs/test_suite.md, `--durations`), run first: with two xdist workers taking
# whole files (--dist loadfile), a long file started last would leave one worker alone at the end.
LONGEST_FIRST = ["test_train_loop.py", "test_multihost_training.py", "test_lora.py", "test_run_observability.py",
                 "test_siglip.py", "test_remote_reads.py", "test_object_storage.py", "test_scan_layers.py",
                 "test_model_parity.py", "test_plan.py", "test_data_multihost.py", "test_evaluate_cli.py"]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def pytest_sessionfinish(session, exitstatus):
    if OWN_CACHE:
        shutil.rmtree(SUITE_CACHE, ignore_errors=True)

CAPTIONS = [
    "a satellite image of a residential area with many buildings and green trees",
    "Several boats are parked in the harbour next to a long pier.",
    "an airport with two runways &amp; a terminal building",
    "farmland strips in yellow and green, separated by narrow roads",
    "",
    "A river winds through the desert 2024 — 地图 🌍",
]


def take(iterator, n=None) -> list[dict]:
    """The first `n` batches of a data iterator (all without `n`), as NumPy arrays."""
    out = []
    for batch in iterator:
        out.append({k: np.array(v) for k, v in batch.items()})
        if len(out) == n:
            break
    return out


def perturbed_open_clip(model_cfg: dict, seed: int = 0):
    """open_clip CLIP with every parameter perturbed, so LayerNorms and biases are not trivial."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**model_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def hf_embeddings(model, pixels: np.ndarray, tokens: np.ndarray) -> list[np.ndarray]:
    """Normalized image and text embeddings of a transformers CLIPModel for NHWC pixels and tokens."""
    import torch

    with torch.no_grad():
        img = model.get_image_features(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)))
        txt = model.get_text_features(input_ids=torch.from_numpy(tokens.astype(np.int64)))
    return [np.asarray(torch.nn.functional.normalize(t, dim=-1)) for t in (img, txt)]


def synthetic_photo(width: int, height: int, seed: int) -> np.ndarray:
    """Smooth colour fields with edges and noise: a JPEG-friendly stand-in for an aerial photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    img = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in rng.uniform(0, 3, 3)], -1)
    img = 127 + 100 * img + rng.normal(0, 12, img.shape)
    img[height // 3 : height // 2, width // 4 : width // 2] = rng.uniform(0, 255, 3)  # a "building"
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_decode(array: np.ndarray, fmt: str, **save_kwargs) -> Image.Image:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **save_kwargs)
    buf.seek(0)
    img = Image.open(buf)
    img.load()
    return img


@pytest.fixture(scope="session")
def jpeg_images() -> list[Image.Image]:
    sizes = [(256, 256), (600, 400), (300, 517), (224, 224), (64, 64)]
    return [encode_decode(synthetic_photo(w, h, i), "JPEG", quality=90) for i, (w, h) in enumerate(sizes)]


@pytest.fixture(scope="session")
def captions() -> list[str]:
    return list(CAPTIONS)


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An empty offline Hub cache (huggingface_hub's layout, HF_HUB_OFFLINE=1). huggingface_hub reads
    its settings at import, so they are patched too."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_snapshot(cache, repo: str, revision: str, files: dict, ref: str | None = "main"):
    """A snapshot of `repo` at commit `revision` in the cache: {path in repo: write(path)}; `ref` points at it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    for name, write in files.items():
        path = folder / "snapshots" / revision / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    if ref:
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(revision)

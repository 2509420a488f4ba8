"""Batched, sharded image and text embedding with fixed shapes: the `predict_fn` of every evaluator.

The model is split once into (graphdef, params, rest); the jitted encoders take `params` as an
argument, so the trainer can evaluate its current parameters at any step without a recompile.
Images are decoded and preprocessed on host threads (PIL releases the GIL), batches are padded to a
fixed size and sharded over all devices along the batch axis.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from typing import Callable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from PIL import Image
from tqdm import tqdm

from georsclip_jax.evals.topk import AXIS, device_mesh, pad_rows
from georsclip_jax.tokenizer import get_tokenizer
from georsclip_jax.transforms import eval_transform


def _encode_images(graphdef, params, rest, images):
    return nnx.merge(graphdef, params, rest).encode_image(images, normalize=True)


def _encode_texts(graphdef, params, rest, tokens, normalize):
    return nnx.merge(graphdef, params, rest).encode_text(tokens, normalize=normalize)


class Encoders:
    """Embeds images (PIL loaders) and texts (strings) with a CLIP, `batch_size` at a time."""

    def __init__(self, model, batch_size: int = 256, mesh=None, workers: int | None = None):
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        self.embed_dim = model.config.embed_dim
        self.mesh = mesh or device_mesh()
        devices = self.mesh.devices.size
        self.batch_size = -(-batch_size // devices) * devices
        self.preprocess = eval_transform(model.preprocess)
        self.tokenizer = get_tokenizer(context_length=model.config.text.context_length)
        self.workers = workers or os.cpu_count()
        self._batch = NamedSharding(self.mesh, P(AXIS))
        self._image_fn = jax.jit(functools.partial(_encode_images, self.graphdef))
        self._text_fn = jax.jit(functools.partial(_encode_texts, self.graphdef), static_argnames="normalize")

    def _run(self, fn, batches: np.ndarray, params, **kw) -> np.ndarray:
        n = len(batches)
        padded = jax.device_put(pad_rows(batches, self.batch_size), self._batch)
        return np.asarray(fn(self.params if params is None else params, self.rest, padded, **kw))[:n]

    def images(self, loaders: Sequence[Callable[[], Image.Image]], params=None, desc: str | None = None) -> np.ndarray:
        """L2-normalized embeddings [N, D] of the images the loaders open (PIL, any mode)."""
        out = []
        load = lambda loader: self.preprocess(loader())
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            for start in tqdm(range(0, len(loaders), self.batch_size), desc=desc, disable=desc is None, leave=False):
                pixels = np.stack(list(pool.map(load, loaders[start:start + self.batch_size])))
                out.append(self._run(self._image_fn, pixels, params))
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    def texts(self, texts: Sequence[str], params=None, normalize: bool = True, desc: str | None = None) -> np.ndarray:
        """Text embeddings [N, D]; `normalize=False` gives the raw projections (GeoRSCLIP's classifier)."""
        out = []
        for start in tqdm(range(0, len(texts), self.batch_size), desc=desc, disable=desc is None, leave=False):
            tokens = self.tokenizer(list(texts[start:start + self.batch_size]))
            out.append(self._run(self._text_fn, tokens, params, normalize=normalize))
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)


def path_loader(path: str, convert_rgb: bool = True) -> Callable[[], Image.Image]:
    """ImageFolder's loader converts to RGB first; GeoRSCLIP's CSV datasets open the file as is."""
    def load():
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB") if convert_rgb else img.copy()
    return load

"""Validation loss on a held-out stream, evaluated with the current parameters.

Eval preprocessing, no shuffling, one pass. Every process walks the same number of global batches
(ceil(samples / batch)); a process whose share ran out contributes all-padding rows, which the
masked loss ignores, so multi-host runs never wait on each other. The result is the mean of the
per-batch losses weighted by their real rows.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from georsclip_jax import sharding
from georsclip_jax.data.pipeline import DataIterator, PipelineOptions, SampleTransform, build_dataset, to_global
from georsclip_jax.train.step import contrastive_loss, make_forward


class ValidationLoss:
    def __init__(self, config, source, preprocess, mesh, graphdef):
        self.batch = config.train.global_batch_size
        self.local = self.batch // jax.process_count()
        self.num_batches = math.ceil(len(source) / self.batch)
        self.size, self.uint8 = preprocess.image_size, config.data.image_dtype == "uint8"
        transform = SampleTransform(preprocess, augment=None, max_pixels=config.data.max_pixels,
                                    image_dtype=config.data.image_dtype)
        options = PipelineOptions(global_batch_size=self.batch, num_epochs=1, shuffle=False, drop_remainder=False,
                                  process_index=jax.process_index(), process_count=jax.process_count())
        self.dataset = build_dataset(source, transform, options)
        self.sharding = sharding.batch_sharding(mesh)
        forward = make_forward(graphdef, preprocess.mean, preprocess.std)

        def weighted_loss(params, frozen, batch):
            out = forward(params, frozen, batch)
            rows = batch["mask"].sum()
            value = contrastive_loss(config.train.loss, out, out["image_features"], out["text_features"], batch["mask"])
            return value * rows, rows
        self._loss = jax.jit(weighted_loss)

    def padding(self) -> dict:
        image = np.zeros((self.local, self.size, self.size, 3), np.uint8 if self.uint8 else np.float32)
        return {"image": image, "tokens": np.zeros((self.local, 77), np.int32), "mask": np.zeros(self.local, bool)}

    def __call__(self, params, frozen) -> float:
        """params, frozen: the trainer's two partitions of the model state."""
        batches = DataIterator(self.dataset)
        total, rows = 0.0, 0
        for _ in range(self.num_batches):
            batch = next(batches, None)
            batch = self.padding() if batch is None else {k: batch[k] for k in ("image", "tokens", "mask")}
            value, count = self._loss(params, frozen, to_global(batch, self.sharding))
            total, rows = total + float(value), rows + int(count)
        batches.close()
        return total / max(rows, 1)

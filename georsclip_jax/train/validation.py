"""Validation loss on a held-out stream, evaluated with the current parameters.

Eval preprocessing, no shuffling, one pass. Batches are positional (data/pipeline.py), so every
process walks the same ceil(samples / batch) global batches; rows past the end are padding, which
the masked loss ignores. The result is the mean of the per-batch losses weighted by their real rows.
"""

from __future__ import annotations

import jax

from georsclip_jax import sharding
from georsclip_jax.data.pipeline import DataIterator, PipelineOptions, SampleTransform, build_dataset
from georsclip_jax.train.step import contrastive_loss, make_forward


class ValidationLoss:
    def __init__(self, config, source, preprocess, mesh, graphdef):
        transform = SampleTransform(preprocess, augment=None, max_pixels=config.data.max_pixels,
                                    image_dtype=config.data.image_dtype)
        options = PipelineOptions(global_batch_size=config.train.global_batch_size, num_epochs=1, shuffle=False,
                                  drop_remainder=False, process_index=jax.process_index(),
                                  process_count=jax.process_count())
        self.dataset = build_dataset(source, transform, options)
        self.sharding = sharding.batch_sharding(mesh)
        forward = make_forward(graphdef, preprocess.mean, preprocess.std)

        def weighted_loss(params, frozen, batch):
            out = forward(params, frozen, batch)
            rows = batch["mask"].sum()
            value = contrastive_loss(config.train.loss, out, out["image_features"], out["text_features"], batch["mask"])
            return value * rows, rows
        self._loss = jax.jit(weighted_loss)

    def __call__(self, params, frozen) -> float:
        """params, frozen: the trainer's two partitions of the model state."""
        batches = DataIterator(self.dataset, sharding=self.sharding)
        total, rows = 0.0, 0
        for batch in batches:
            value, count = self._loss(params, frozen, {k: batch[k] for k in ("image", "tokens", "mask")})
            total, rows = total + float(value), rows + int(count)
        batches.close()
        return total / max(rows, 1)

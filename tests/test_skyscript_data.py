"""SkyScript's training data as published (a CSV of filepath, title, title_multi_objects under an image
root) alone and mixed with RS5M's shards by weight: rows without a caption are skipped and counted, the
mixture holds the requested proportions in every stretch of batches, and resumes bit-exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

import runs
from conftest import take
from georsclip_jax.data.metafile import MetafileSource
from georsclip_jax.data.pipeline import DataIterator, PipelineOptions, SampleTransform, build_dataset
from georsclip_jax.data.synthetic import write_rs5m_shards
from georsclip_jax.data.synthetic_skyscript import write_training_csv
from georsclip_jax.data.tar_shards import TarShardSource
from georsclip_jax.models.configs import PreprocessConfig

TRANSFORM = SampleTransform(PreprocessConfig(image_size=32), augment="georsclip")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    rs5m = TarShardSource(write_rs5m_shards(str(root / "rs5m"), 50, samples_per_shard=25))
    csv_path = write_training_csv(str(root / "skyscript"), 30, missing_every=10)
    return rs5m, MetafileSource(csv_path, str(root / "skyscript"), "filepath", ("title",)), csv_path


def test_rows_without_a_caption_are_skipped_and_counted(corpora):
    _, skyscript, _ = corpora
    iterator = DataIterator(build_dataset(skyscript, TRANSFORM, PipelineOptions(global_batch_size=10, num_epochs=1)))
    batches = take(iterator)
    assert iterator.skipped["missing_caption"] == 3 and sum(int(b["mask"].sum()) for b in batches) == 27
    multi = MetafileSource(skyscript.path, skyscript.image_root, "filepath", ("title_multi_objects",))
    assert all(captions for captions in multi.captions)  # the other caption column has none missing


@pytest.mark.parametrize("weight", [0.3, 0.5])
def test_a_mixture_holds_its_proportions_and_resumes_bit_exactly(corpora, weight):
    rs5m, skyscript, _ = corpora
    options = PipelineOptions(global_batch_size=20, seed=3)
    build = lambda: DataIterator(build_dataset([rs5m, skyscript], TRANSFORM, options, (1 - weight, weight)))
    straight = take(build(), 12)  # 240 rows: several epochs of the small CSV, ~5 of the shards
    from_csv = [int(((b["id"] >= len(rs5m)) | ~b["mask"]).sum()) for b in straight]  # skipped rows are the CSV's
    assert sum(from_csv) == pytest.approx(weight * 240, abs=1)  # the whole run
    assert all(abs(n - weight * 20) <= 1 for n in from_csv)  # and every batch, to within a row
    assert {int(i) for b in straight for i in b["id"] if i >= len(rs5m)} <= set(range(50, 80))
    first = build()
    head = take(first, 5)
    state = json.loads(json.dumps(first.get_state()))
    first.close()
    resumed = build()
    resumed.set_state(state)
    for a, b in zip(straight, head + take(resumed, 7), strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert resumed.skipped["missing_caption"] == sum(int((~b["mask"]).sum()) for b in straight)  # carried over


def test_training_on_rs5m_and_skyscript_counts_the_skips(tmp_path):
    csv_path = write_training_csv(str(tmp_path / "skyscript"), 20, missing_every=2)
    runs.run(tmp_path / "run", *runs.SMALL, "--config.train.total_steps=4", "--config.data.mix.weight=0.3",
             "--config.data.mix.kind=metafile", f"--config.data.mix.train={csv_path}",
             f"--config.data.mix.image_root={csv_path.rsplit('/', 1)[0]}", "--config.data.mix.caption_columns=title")
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if "loss" in m]
    assert len(train) == 4 and all(np.isfinite(m["loss"]) for m in train)
    # 4 x 16 rows at 0.3: 19 or 20 of the CSV's 20 rows, half of which have no title
    assert train[-1]["skipped/missing_caption"] >= 9

"""The Grain pipeline in one process: epochs, shuffling, exact resume (tar and ArrayRecord, with
worker processes), augmentation independent of the host count, caption picking, uint8 output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from georsclip_jax.data import array_record
from georsclip_jax.data.metafile import MetafileSource
from georsclip_jax.data.pipeline import DataIterator, PipelineOptions, SampleTransform, build_dataset
from georsclip_jax.data.synthetic import write_rs5m_shards
from georsclip_jax.data.tar_shards import TarShardSource
from georsclip_jax.models.configs import PreprocessConfig
from georsclip_jax.transforms import eval_transform
from conftest import take

TRANSFORM = SampleTransform(PreprocessConfig(image_size=32), augment="georsclip")


@pytest.fixture(scope="module")
def tar_source(tmp_path_factory):
    return TarShardSource(write_rs5m_shards(str(tmp_path_factory.mktemp("tars")), 37, samples_per_shard=10))


def ids(batches) -> list[int]:
    return [int(i) for b in batches for i, m in zip(b["id"], b["mask"]) if m]


def test_each_epoch_is_a_fresh_permutation_of_all_samples(tar_source):
    batches = take(DataIterator(build_dataset(tar_source, TRANSFORM, PipelineOptions(
        global_batch_size=37, num_epochs=3, seed=1))))
    epochs = [list(b["id"]) for b in batches]
    assert len(epochs) == 3 and all(sorted(e) == list(range(37)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]


def test_final_partial_batch_is_padded_and_masked(tar_source):
    batches = take(DataIterator(build_dataset(tar_source, TRANSFORM, PipelineOptions(
        global_batch_size=16, num_epochs=1, drop_remainder=False))))
    assert [b["mask"].sum() for b in batches] == [16, 16, 5]
    assert sorted(ids(batches)) == list(range(37)) and not batches[-1]["image"][5:].any()
    dropped = take(DataIterator(build_dataset(tar_source, TRANSFORM, PipelineOptions(global_batch_size=16, num_epochs=1))))
    assert len(dropped) == 2 and all(b["mask"].all() for b in dropped)


def test_global_batches_do_not_depend_on_the_host_count(tar_source):
    """Host i's rows of global batch k, concatenated over hosts, are the one-host batch k: same
    samples, same order, same augmented pixels, same padding."""
    def host_batches(process_index, process_count):
        return take(DataIterator(build_dataset(tar_source, TRANSFORM, PipelineOptions(
            global_batch_size=8, num_epochs=1, drop_remainder=False, process_index=process_index,
            process_count=process_count))))

    one = host_batches(0, 1)
    two = [host_batches(p, 2) for p in range(2)]
    assert len(one) == len(two[0]) == len(two[1]) == 5
    for k, batch in enumerate(one):
        for key in ("image", "tokens", "id", "mask"):
            np.testing.assert_array_equal(np.concatenate([two[0][k][key], two[1][k][key]]), batch[key])
    assert sorted(int(i) for b in one for i, m in zip(b["id"], b["mask"]) if m) == list(range(37))


def assert_resumes_exactly(source, num_workers: int, stop_after: int = 3, total: int = 8):
    options = PipelineOptions(global_batch_size=6, seed=11, num_workers=num_workers)
    straight = take(DataIterator(build_dataset(source, TRANSFORM, options)), total)
    first = DataIterator(build_dataset(source, TRANSFORM, options))
    head = take(first, stop_after)
    state = json.loads(json.dumps(first.get_state()))  # what a checkpoint stores
    first.close()
    resumed = DataIterator(build_dataset(source, TRANSFORM, options))
    resumed.set_state(state)
    tail = take(resumed, total - stop_after)
    assert len(head + tail) == total
    for a, b in zip(straight, head + tail):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_tar_stream_resumes_exactly_across_epoch_boundaries_with_workers(tar_source):
    assert_resumes_exactly(tar_source, num_workers=2, stop_after=5, total=9)  # 37 samples: epoch 2 at batch 7


def test_array_record_stream_resumes_exactly(tar_source, tmp_path):
    manifest = array_record.convert(tar_source, str(tmp_path), records_per_shard=16, progress=False)
    source = array_record.ArrayRecordSource([str(tmp_path / s["path"]) for s in manifest["shards"]])
    assert_resumes_exactly(source, num_workers=0)


def test_restored_skip_counters_continue(tmp_path):
    from messy_shards import write_messy_shards
    source = TarShardSource(write_messy_shards(str(tmp_path)))
    options = PipelineOptions(global_batch_size=4, num_epochs=1, drop_remainder=False)
    straight = DataIterator(build_dataset(source, TRANSFORM, options))
    take(straight)
    first = DataIterator(build_dataset(source, TRANSFORM, options))
    take(first, 4)
    resumed = DataIterator(build_dataset(source, TRANSFORM, options))
    resumed.set_state(first.get_state())
    take(resumed)
    assert resumed.skipped == straight.skipped and sum(straight.skipped.values()) == 10


def test_one_of_several_captions_is_drawn_per_sample_and_epoch(tmp_path):
    from PIL import Image
    Image.new("RGB", (40, 40), (9, 90, 200)).save(tmp_path / "a.jpg")
    rows = "".join(f"a.jpg,top caption {i},ssl caption {i}\n" for i in range(40))
    (tmp_path / "m.csv").write_text("name,top,ssl\n" + rows)
    source = MetafileSource(str(tmp_path / "m.csv"), str(tmp_path), 0, ("top", "ssl"))
    tokens = np.concatenate([b["tokens"] for b in take(DataIterator(build_dataset(
        source, TRANSFORM, PipelineOptions(global_batch_size=40, num_epochs=2))))])
    from georsclip_jax.tokenizer import get_tokenizer
    words = [get_tokenizer().decode(t[1:list(t).index(49407)]).split()[0] for t in tokens]
    assert 20 <= words.count("top") <= 60 and words.count("top") + words.count("ssl") == 80


@pytest.mark.parametrize("augment", [None, "georsclip"])
def test_uint8_images_normalized_on_device_equal_the_float_path(tar_source, augment):
    import jax
    import jax.numpy as jnp

    from georsclip_jax.transforms import normalize_pixels
    cfg = PreprocessConfig(image_size=32)
    as_float = SampleTransform(cfg, augment=augment)((3, tar_source[3]), np.random.default_rng(0))["image"]
    pixels = SampleTransform(cfg, augment=augment, image_dtype="uint8")((3, tar_source[3]), np.random.default_rng(0))["image"]
    assert pixels.dtype == np.uint8 and pixels.shape == (32, 32, 3)
    on_device = jax.jit(lambda x: normalize_pixels(x, cfg.mean, cfg.std))(jnp.asarray(pixels))
    np.testing.assert_array_equal(np.asarray(on_device), as_float)


def test_eval_transform_matches_the_foundation_preprocessing(tar_source):
    from georsclip_jax.data.decode import decode_image
    cfg = PreprocessConfig(image_size=32)
    example = SampleTransform(cfg, augment=None)((0, tar_source[0]), np.random.default_rng(0))
    assert np.array_equal(example["image"], eval_transform(cfg)(decode_image(tar_source[0]["image"])))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        PipelineOptions(global_batch_size=8, process_count=3)
    with pytest.raises(ValueError, match="augment"):
        SampleTransform(augment="random")


def test_batches_do_not_depend_on_the_worker_count_and_resume_under_another(tar_source):
    """The same global batches with 0, 1 and 2 worker processes; a state saved with 2 workers restores
    with 0 (a run resumed on another machine) and continues identically."""
    def batches(num_workers, n=7, state=None):
        iterator = DataIterator(build_dataset(tar_source, TRANSFORM, PipelineOptions(
            global_batch_size=6, seed=5, num_workers=num_workers)))
        if state is not None:
            iterator.set_state(state)
        out = take(iterator, n)
        saved = json.loads(json.dumps(iterator.get_state()))
        iterator.close()
        return out, saved

    reference, _ = batches(0)
    for workers in (1, 2):
        got, _ = batches(workers)
        assert all(np.array_equal(a[k], b[k]) for a, b in zip(reference, got) for k in a), workers
    head, state = batches(2, n=3)
    tail, _ = batches(0, n=4, state=state)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(reference, head + tail) for k in a)

"""Sources: brace patterns, the tar index (RS5M, old and WebDataset keys), decoding of every kind of
bad or unusual sample, metafiles, and the ArrayRecord round trip."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from georsclip_jax.data import array_record
from georsclip_jax.data.decode import BadSample, decode_caption, decode_image
from georsclip_jax.data.metafile import MetafileSource
from georsclip_jax.data.synthetic import jpeg_bytes, make_sample, write_rs5m_shards
from georsclip_jax.data.tar_shards import TarShardSource, expand_braces, resolve_shards
from messy_shards import expected, png_bomb, unusual_images, write_messy_shards, write_tar


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    return write_messy_shards(str(tmp_path_factory.mktemp("messy")))


def test_brace_expansion_matches_rs5m_patterns():
    assert expand_braces("{pub11,rs3}-train-{0000..0002}.tar") == [
        "pub11-train-0000.tar", "pub11-train-0001.tar", "pub11-train-0002.tar",
        "rs3-train-0000.tar", "rs3-train-0001.tar", "rs3-train-0002.tar"]
    assert expand_braces("x-{8..11}.tar") == ["x-8.tar", "x-9.tar", "x-10.tar", "x-11.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_missing_shard_is_named(tmp_path):
    write_rs5m_shards(str(tmp_path), 4, samples_per_shard=4)
    with pytest.raises(FileNotFoundError, match="rs3-train-0000.tar"):
        resolve_shards(str(tmp_path / "{pub11,rs3}-train-0000.tar"))


def test_tar_source_reads_rs5m_samples_in_place(tmp_path):
    paths = write_rs5m_shards(str(tmp_path), 10, samples_per_shard=4, seed=3)
    source = TarShardSource(str(tmp_path / "pub11-train-{0000..0001}.tar") + "::" + str(tmp_path / "rs3-train-0000.tar"))
    assert len(source) == 10 and sorted(source.paths) == sorted(paths)
    for i in range(len(source)):
        sample = source[i]
        shard, key = str(sample["origin"]).rsplit(":", 1)
        index = int(key.split("_")[1])
        image, caption, _ = make_sample(3, index, (64, 64))
        assert sample["image"] == jpeg_bytes(image) and sample["captions"] == [caption.encode()]
        assert sample["problem"] is None


@pytest.mark.parametrize("layout", ["old_rs5m", "webdataset_txt", "webdataset_json"])
def test_tar_source_other_key_layouts(tmp_path, layout):
    import tarfile

    from georsclip_jax.data.synthetic import add_member
    image, caption, _ = make_sample(0, 0)
    image = jpeg_bytes(image)
    members = {"old_rs5m": [("input.image", image), ("input.name", b"a.jpg"), ("input.caption", caption.encode())],
               "webdataset_txt": [("jpg", image), ("txt", caption.encode())],
               "webdataset_json": [("png", image), ("json", json.dumps({"caption": caption}).encode())]}[layout]
    path = str(tmp_path / "x.tar")
    with tarfile.open(path, "w") as tar:
        for suffix, data in members:
            add_member(tar, f"dir/sample001.{suffix}", data)
    sample = TarShardSource(path)[0]
    assert str(sample["origin"]).endswith(":dir/sample001") and sample["image"] == image
    assert decode_caption(sample["captions"][0], is_json=sample["caption_is_json"]) == caption


def test_tar_index_flags_problems_and_keeps_every_complete_sample(messy):
    source = TarShardSource(messy)
    valid, skips = expected(source)
    assert len(valid) == 3 * 9 + len(unusual_images(Image.new("RGB", (8, 8))))
    flagged = {source.origin(i).rsplit(":", 1)[1] for i in range(len(source)) if source[i]["problem"]}
    assert flagged == {"bad-missing_caption-0", "bad-missing_image-0", "bad-truncated_member-0"}
    assert sum(skips.values()) == len(source) - len(valid) == 10


def test_source_pickles_without_open_files(messy):
    import pickle

    source = TarShardSource(messy)
    source[0]
    clone = pickle.loads(pickle.dumps(source))
    assert clone[5] == source[5]


@pytest.mark.parametrize("reason,data,kw", [
    ("corrupt_image", os.urandom(500), {}),
    ("empty_image", b"", {}),
    ("missing_image", None, {}),
    ("image_too_large", png_bomb(), {}),
    ("image_too_large", None, {"max_pixels": 100}),  # our own threshold, below PIL's
], ids=["corrupt", "empty", "missing", "png_bomb", "over_max_pixels"])  # stable ids: parallel workers must agree
def test_bad_images_raise_named_reasons(reason, data, kw):
    if data is None and kw:
        data = jpeg_bytes(Image.new("RGB", (20, 20)))
    with pytest.raises(BadSample) as info:
        decode_image(data, **kw)
    assert info.value.reason == reason


def test_unusual_image_modes_decode_to_rgb():
    base = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 3), np.uint8))
    for kind, data in unusual_images(base).items():
        img = decode_image(data)
        assert img.mode == "RGB" and img.size == (40, 24), kind
    gray16 = decode_image(unusual_images(base)["gray16"])
    assert np.array_equal(np.asarray(gray16)[..., 0], np.asarray(base.convert("L")))  # v*257 >> 8 == v


@pytest.mark.parametrize("data,reason", [(b"\xff\xfe bad", "bad_utf8"), (b"", "empty_caption"),
                                         (b" \t\n", "empty_caption"), (None, "missing_caption")])
def test_bad_captions_raise_named_reasons(data, reason):
    with pytest.raises(BadSample) as info:
        decode_caption(data)
    assert info.value.reason == reason


def test_json_captions():
    assert decode_caption(b'{"text": " a river "}', is_json=True) == "a river"
    with pytest.raises(BadSample, match="missing_caption"):
        decode_caption(b'{"url": "x"}', is_json=True)


def test_metafile_sources_by_name_and_position(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"img{i}.jpg")
    (tmp_path / "openclip.csv").write_text('filepath,title\nimg0.jpg,"a sea, calm"\nimg1.jpg,forest\nnope.jpg,x\n')
    source = MetafileSource(str(tmp_path / "openclip.csv"), str(tmp_path))
    assert [source[i]["captions"] for i in range(3)] == [["a sea, calm"], ["forest"], ["x"]]
    assert source[0]["image"] == (tmp_path / "img0.jpg").read_bytes() and source[2]["problem"] == "missing_image"
    (tmp_path / "rs3_val_intermediate.csv").write_text("img_name,top-cap,ssl-cap\nimg2.jpg,a farm,\n")
    rs3 = MetafileSource(str(tmp_path / "rs3_val_intermediate.csv"), str(tmp_path), image_column=0,
                         caption_columns=(1, "ssl-cap"))
    assert rs3[0]["captions"] == ["a farm"]  # the empty second caption is not offered
    pq.write_table(pa.table({"path": ["img1.jpg"], "a": ["one"], "b": ["two"]}), tmp_path / "m.parquet")
    assert MetafileSource(str(tmp_path / "m.parquet"), str(tmp_path), "path", ("a", "b"))[0]["captions"] == ["one", "two"]
    with pytest.raises(KeyError, match="no column 'caption'"):
        MetafileSource(str(tmp_path / "m.parquet"), str(tmp_path), "path", ("caption",))


def test_array_record_round_trip_is_identical(tmp_path, messy):
    shards = write_rs5m_shards(str(tmp_path / "tars"), 23, samples_per_shard=8, seed=5) + messy
    source = TarShardSource(shards)
    manifest = array_record.convert(source, str(tmp_path / "ar"), records_per_shard=10, progress=False)
    usable = [source[i] for i in range(len(source)) if not source[i]["problem"]]
    converted = array_record.ArrayRecordSource(
        [str(tmp_path / "ar" / s["path"]) for s in manifest["shards"]])
    assert manifest["records"] == len(converted) == len(usable)
    assert [converted[i] for i in range(len(converted))] == usable
    assert sum(sum(s["skipped"].values()) for s in manifest["shards"]) == 3


def test_array_record_conversion_resumes_and_redoes_only_unfinished_shards(tmp_path):
    source = TarShardSource(write_rs5m_shards(str(tmp_path / "tars"), 30, samples_per_shard=10))
    out = str(tmp_path / "ar")
    first = array_record.convert(source, out, records_per_shard=7, progress=False)
    paths = array_record.shard_paths(out, "samples", 5)
    os.remove(paths[3] + ".done.json")                 # interrupted while finishing shard 3
    with open(paths[4], "wb") as f:                   # and shard 4 left half-written
        f.write(b"junk")
    untouched = os.stat(paths[0]).st_mtime_ns
    again = array_record.convert(source, out, records_per_shard=7, progress=False)
    assert again == first and os.stat(paths[0]).st_mtime_ns == untouched
    assert array_record.count_records(paths[4]) == 2


def test_corrupt_array_record_payload_is_named():
    record = array_record.encode_record({"image": b"abc", "captions": [b"x"], "caption_is_json": False,
                                         "origin": "o", "problem": None})
    with pytest.raises(ValueError, match="truncated"):
        array_record.decode_record(record[:-1], "record 3")
    with pytest.raises(ValueError, match="bad magic"):
        array_record.decode_record(b"nope" + record[4:], "record 3")


@pytest.mark.parametrize("layout", ["webdataset-pax", "gnu-long-names"])
def test_origins_name_the_sample_in_pax_and_gnu_tars(tmp_path, layout):
    """webdataset's TarWriter writes a PAX header before every member (its mtimes are floats); GNU tars
    put long names in a header of their own. Skip logs and converter origins must still say shard:key."""
    import tarfile

    import webdataset as wds

    from messy_shards import good

    image, caption = good(0)
    key = "x" * 120 + "/sample-é-0001" if layout == "gnu-long-names" else "dir/sample-é-0001"
    path = str(tmp_path / f"{layout}.tar")
    if layout == "webdataset-pax":
        with wds.TarWriter(path) as sink:
            sink.write({"__key__": key, "img_content": image, "caption": caption})
            sink.write({"__key__": key + "-bad", "img_content": b"not an image", "caption": caption})
    else:
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in [(f"{key}.img_content", image), (f"{key}.caption", caption.encode()),
                               (f"{key}-bad.img_content", b"not an image"), (f"{key}-bad.caption", caption.encode())]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    source = TarShardSource(path)
    assert [source.origin(i) for i in range(len(source))] == [f"{path}:{key}", f"{path}:{key}-bad"]
    assert str(source[1]["origin"]) == f"{path}:{key}-bad" and decode_image(source[0]["image"]).size
    with pytest.raises(BadSample):
        decode_image(source[1]["image"])


def test_cached_indexes_load_on_many_threads_without_parsing_two_headers_at_once(tmp_path, monkeypatch):
    """np.load parses .npy headers with ast, which CPython 3.11 does not keep per thread: two at once crashed a
    start with "SystemError: AST constructor recursion depth mismatch". The window is widened here (each parse
    waits 20 ms) so that any overlap is seen, not left to chance."""
    import ast
    import threading
    import time

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    paths = write_rs5m_shards(str(tmp_path), 32, samples_per_shard=4)
    first = TarShardSource(paths)
    inside, most = [0], [0]
    lock, real_parse = threading.Lock(), ast.literal_eval

    def slow_parse(text):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.02)
        try:
            return real_parse(text)
        finally:
            with lock:
                inside[0] -= 1
    monkeypatch.setattr(ast, "literal_eval", slow_parse)
    second = TarShardSource(paths)
    assert np.array_equal(first.index, second.index) and most == [1]


def test_shard_indexes_survive_restarts_and_follow_changes(tmp_path, monkeypatch):
    """A second source over the same shards reads no tar header; a changed shard is re-indexed; a
    damaged cache is ignored and rewritten; remote shards index into the cache dir."""
    from georsclip_jax.data import shard_index, tar_shards

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_rs5m_shards(str(tmp_path), 24, samples_per_shard=8)
    pattern = "::".join(sorted(str(p) for p in tmp_path.glob("*.tar")))
    scans = []
    real_scan = tar_shards.scan_members
    monkeypatch.setattr(tar_shards, "scan_members", lambda path: scans.append(path) or real_scan(path))
    first = TarShardSource(pattern)
    assert len(scans) == len(first.paths)
    scans.clear()
    second = TarShardSource(pattern)
    assert scans == [] and np.array_equal(first.index, second.index)

    changed = first.paths[1]
    write_tar(changed, [(f"new-{i}", jpeg_bytes(make_sample(5, i, (40, 40))[0]), "new") for i in range(3)])
    third = TarShardSource(pattern)
    assert scans == [changed] and (third.index["shard"] == 1).sum() == 3
    assert third.origin(int(np.flatnonzero(third.index["shard"] == 1)[0])) == f"{changed}:new-0"

    scans.clear()
    with open(first.paths[0] + shard_index.SUFFIX, "wb") as f:
        f.write(b"not an index")
    assert np.array_equal(TarShardSource(pattern).index, third.index) and scans == [first.paths[0]]
    scans.clear()
    TarShardSource(pattern)
    assert scans == []  # rewritten
    # beside the shard where it can be (a bucket too), under the workdir, the local cache; HTTP has no beside
    where = shard_index.locations("gs://bucket/x.tar", "v1|5:etag", "gs://bucket/run")
    assert where[0] == "gs://bucket/x.tar" + shard_index.SUFFIX and where[1].startswith("gs://bucket/run/shard_index/")
    assert where[2].startswith(str(tmp_path / "cache"))
    assert shard_index.locations("https://hf.co/d/x.tar", "v1|5:etag")[0].startswith(str(tmp_path / "cache"))

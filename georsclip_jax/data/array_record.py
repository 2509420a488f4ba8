"""ArrayRecord shards: one record per sample, for fast random access and true global shuffle.

A record is a small self-describing container (no pickle): 4-byte little-endian header length, a
JSON header {"origin", "caption_is_json", "fields": [[name, nbytes], ...]}, then the payloads.
Payloads are kept as raw bytes (the caption too) so a converted shard yields exactly what the
original source did, bad samples included, and decoding stays in the pipeline.
"""

from __future__ import annotations

import json
import os
import struct

MAGIC = b"GRS1"


def encode_record(sample: dict) -> bytes:
    fields = [("image", sample["image"])] + [(f"caption{i}", c if isinstance(c, bytes) else c.encode("utf-8"))
                                             for i, c in enumerate(sample["captions"])]
    header = json.dumps({"origin": str(sample["origin"]), "caption_is_json": sample["caption_is_json"],
                         "fields": [[name, len(data)] for name, data in fields]}).encode("utf-8")
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *(data for _, data in fields)])


def decode_record(record: bytes, where: str = "record") -> dict:
    if record[:4] != MAGIC:
        raise ValueError(f"{where} is not a georsclip_jax sample record (bad magic)")
    (header_len,) = struct.unpack("<I", record[4:8])
    header = json.loads(record[8:8 + header_len])
    position, payloads = 8 + header_len, {}
    for name, length in header["fields"]:
        payloads[name] = record[position:position + length]
        position += length
    if position != len(record):
        raise ValueError(f"{where} is truncated or has trailing bytes")
    captions = [payloads[f"caption{i}"] for i in range(len(payloads) - 1)]
    return {"image": payloads["image"], "captions": captions, "caption_is_json": header["caption_is_json"],
            "origin": header["origin"], "problem": None}


class ArrayRecordSource:
    """Random-access samples from ArrayRecord shards written by `convert` (same raw-sample dict)."""

    def __init__(self, paths: list[str]):
        import grain  # grain wraps array_record's reader with per-process file handles

        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"ArrayRecord shard not found: {missing[0]}")
        self.paths = list(paths)
        self._source = grain.sources.ArrayRecordDataSource(self.paths)

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return f"ArrayRecordSource({len(self.paths)} shards, {len(self)} records, first={self.paths[0]!r})"

    def __getitem__(self, i: int) -> dict:
        return decode_record(self._source[i], f"record {i} of {self.paths[0]}...")


def shard_paths(out_dir: str, prefix: str, num_shards: int) -> list[str]:
    return [os.path.join(out_dir, f"{prefix}-{j:05d}-of-{num_shards:05d}.array_record") for j in range(num_shards)]


def count_records(path: str) -> int:
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(path)
    try:
        return reader.num_records()
    finally:
        reader.close()


def write_shard(source, indices: range, path: str) -> dict:
    """Writes the usable samples of `indices` to `path` atomically; returns its manifest entry."""
    from array_record.python.array_record_module import ArrayRecordWriter

    skipped: dict[str, int] = {}
    tmp = path + ".tmp"
    writer = ArrayRecordWriter(tmp, "group_size:1")
    written = 0
    for i in indices:
        sample = source[i]
        if sample["problem"]:
            skipped[sample["problem"]] = skipped.get(sample["problem"], 0) + 1
            continue
        writer.write(encode_record(sample))
        written += 1
    writer.close()
    if count_records(tmp) != written:
        raise OSError(f"{tmp}: wrote {written} records but reads back {count_records(tmp)}")
    os.replace(tmp, path)
    return {"path": os.path.basename(path), "records": written, "skipped": skipped}


def shard_is_complete(path: str) -> bool:
    marker = path + ".done.json"
    if not (os.path.isfile(path) and os.path.isfile(marker)):
        return False
    try:
        with open(marker) as f:
            return json.load(f)["records"] == count_records(path)
    except (RuntimeError, OSError, ValueError, KeyError):  # damaged shard or marker: redo it
        return False


def convert(source, out_dir: str, prefix: str = "samples", records_per_shard: int = 10_000,
            progress: bool = True) -> dict:
    """Converts any raw-sample source to ArrayRecord shards; resumable, verified, with a manifest.

    Output shard j holds the usable samples among source indices [j*R, (j+1)*R), in order, so a
    re-run after an interruption redoes only the shards without a verified done-marker."""
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    num_shards = max(1, -(-len(source) // records_per_shard))
    entries = []
    with tqdm(total=len(source), unit="sample", desc="to ArrayRecord", disable=not progress) as bar:
        for j, path in enumerate(shard_paths(out_dir, prefix, num_shards)):
            indices = range(j * records_per_shard, min(len(source), (j + 1) * records_per_shard))
            if shard_is_complete(path):
                with open(path + ".done.json") as f:
                    entry = json.load(f)
            else:
                entry = write_shard(source, indices, path)
                with open(path + ".done.json.tmp", "w") as f:
                    json.dump(entry, f)
                os.replace(path + ".done.json.tmp", path + ".done.json")
            entries.append(entry)
            bar.update(len(indices))
    manifest = {"source": repr(source), "records": sum(e["records"] for e in entries), "shards": entries}
    with open(os.path.join(out_dir, f"{prefix}.manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest

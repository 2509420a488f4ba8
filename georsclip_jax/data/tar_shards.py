"""WebDataset-style tar shards read in place, as a random-access source.

Each shard's headers are scanned once (seeking over the payloads, never untarring) into a compact
NumPy index of byte ranges per sample; `__getitem__` then reads just that sample's members (`pread`
locally, one ranged GET per member in object storage: shards may be `gs://` or `s3://` URLs). Random
access is what makes global shuffling, per-host sharding and exact resume the same for tars as for
ArrayRecord. Samples follow the WebDataset rule: consecutive members sharing the path up to the first
dot of the basename form one sample, the rest of the name is the field key (`img_content`,
`caption`, `jpg`, ...). A shard cut short keeps every complete sample; the cut one is flagged.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import logging
import os
import re
import tarfile

import numpy as np

from georsclip_jax import storage

log = logging.getLogger(__name__)

PROBLEMS = (None, "truncated_member", "missing_image", "missing_caption")
INDEX_DTYPE = np.dtype([("shard", np.int32), ("problem", np.int8), ("caption_json", np.bool_), ("header", np.int64),
                        ("image", np.int64), ("image_len", np.int64),
                        ("caption", np.int64), ("caption_len", np.int64)])
ABSENT = -1


@dataclasses.dataclass(frozen=True)
class FieldKeys:
    """Which member suffixes hold the image and the caption, in order of preference.

    Defaults cover RS5M (`img_content`/`caption`), its older `input.image`/`input.caption` layout and
    the common WebDataset keys. A `json` caption is parsed and its `json_keys` looked up."""
    image: tuple[str, ...] = ("img_content", "input.image", "jpg", "jpeg", "png", "webp")
    caption: tuple[str, ...] = ("caption", "input.caption", "txt", "json")
    json_keys: tuple[str, ...] = ("caption", "text")


def expand_braces(pattern: str) -> list[str]:
    """`{a,b}` alternatives and zero-padded `{0000..0031}` ranges, as WebDataset/braceexpand do."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    body = match.group(1)
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        lo, hi = numeric.groups()
        width = len(lo) if lo.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [path for option in options for path in expand_braces(head + option + tail)]


def resolve_shards(patterns: str | list[str]) -> list[str]:
    """Brace patterns (`::`-separated or a list), globs allowed; every listed shard must exist."""
    if isinstance(patterns, str):
        patterns = patterns.split("::")
    storage.list_folders_of([path for pattern in patterns for path in expand_braces(pattern)])
    paths = []
    for pattern in patterns:
        for path in expand_braces(pattern):
            matches = storage.glob(path) if storage.has_magic(path) else [path]
            if not matches or not all(storage.isfile(p) for p in matches):
                raise FileNotFoundError(f"tar shard not found: {path}")
            paths.extend(matches)
    if not paths:
        raise FileNotFoundError(f"no tar shards match {patterns}")
    return paths


def split_key(name: str) -> tuple[str, str]:
    """WebDataset's sample key / field split: 'dir/abc.input.image' -> ('dir/abc', 'input.image')."""
    dirname, basename = os.path.split(name)
    stem, _, suffix = basename.partition(".")
    return os.path.join(dirname, stem), suffix.lower()


def scan_members(path: str) -> tuple[list[tarfile.TarInfo], bool]:
    """Regular-file members in order, and whether the shard ends abnormally (cut or corrupt)."""
    members, cut = [], False
    with storage.open_binary(path) as f, tarfile.open(fileobj=f, mode="r:") as tar:
        try:
            for member in tar:
                if member.isfile():
                    members.append(member)
        except (tarfile.TarError, EOFError, OSError) as e:
            log.warning("tar shard %s is damaged after %d members (%s); keeping what precedes it",
                        path, len(members), e)
            cut = True
    return members, cut


def read_index(path: str, keys: FieldKeys) -> np.ndarray:
    """The index rows of one shard read from its tar headers (shard number 0)."""
    try:
        members, cut = scan_members(path)
    except tarfile.ReadError as e:
        log.warning("tar shard %s is unreadable (%s); it holds no samples", path, e)
        return np.zeros(0, INDEX_DTYPE)
    size = storage.size(path)
    groups = [list(g) for _, g in itertools.groupby(members, key=lambda m: split_key(m.name)[0])]
    rows = np.zeros(len(groups), INDEX_DTYPE)
    for row, group in zip(rows, groups):
        fields = {split_key(m.name)[1]: m for m in group}
        image = next((fields[k] for k in keys.image if k in fields), None)
        caption = next((fields[k] for k in keys.caption if k in fields), None)
        row["header"] = group[0].offset
        row["image"], row["image_len"] = (image.offset_data, image.size) if image else (ABSENT, ABSENT)
        row["caption"], row["caption_len"] = (caption.offset_data, caption.size) if caption else (ABSENT, ABSENT)
        row["caption_json"] = caption is not None and split_key(caption.name)[1] == "json"
        row["problem"] = PROBLEMS.index(sample_problem(group, image, caption, size))
    if cut and len(rows) and rows[-1]["problem"] != 0:
        rows[-1]["problem"] = PROBLEMS.index("truncated_member")  # the cut went through this sample
    return rows


def sample_problem(group, image, caption, shard_size: int) -> str | None:
    if any(m.offset_data + m.size > shard_size for m in group):
        return "truncated_member"
    if image is None:
        return "missing_image"
    if caption is None:
        return "missing_caption"
    return None


EXTENDED_HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE)


def read_member_name(reader: storage.RangeReader, header_offset: int) -> str:
    """The member name at a header offset, for messages only. A member's offset is that of its first
    header, which in PAX tars (webdataset's TarWriter, Python's default format) and for GNU long names is
    an extended header; tarfile itself resolves the chain, read from just the bytes it spans."""
    end = header_offset
    while True:  # extended headers, then the member's own header
        info = tarfile.TarInfo.frombuf(reader.read(end, tarfile.BLOCKSIZE), "utf-8", "surrogateescape")
        end += tarfile.BLOCKSIZE
        if info.type not in EXTENDED_HEADERS:
            break
        end += -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    with tarfile.open(fileobj=io.BytesIO(reader.read(header_offset, end - header_offset)), mode="r:",
                      encoding="utf-8", errors="replace") as tar:
        return tar.firstmember.name


class LazyOrigin:
    """A sample's `shard:key`, read from its tar header only when turned into text (skip logs,
    converter records): most samples are never asked, so most reads skip the extra header read."""

    def __init__(self, source: "TarShardSource", index: int):
        self.source, self.index = source, index

    def __str__(self) -> str:
        return self.source.origin(self.index)

    __repr__ = __str__

    def __eq__(self, other) -> bool:
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


MAX_GAP = 1 << 20  # members further apart than this are read separately, not with the bytes between them


def member_spans(row) -> list[tuple[int, int]]:
    """The byte ranges that cover a sample's image and caption: one when they are adjacent, as the
    members of one sample are in a tar (their headers and any small member between are read along)."""
    members = sorted((int(row[field]), int(row[field]) + int(row[f"{field}_len"])) for field in ("image", "caption"))
    spans = [list(members[0])]
    for start, end in members[1:]:
        if start - spans[-1][1] <= MAX_GAP:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    return [tuple(span) for span in spans]


class TarShardSource:
    """Random-access view of the samples in a set of tar shards.

    `__getitem__` returns the raw sample: {"image": bytes | None, "captions": [bytes],
    "caption_is_json": bool, "origin": "shard:key" (lazily, see LazyOrigin), "problem": reason | None}. Decoding happens
    later, in the pipeline's workers. `_getitems` (Grain's batched read) fetches many samples at once: one
    request per sample, all in flight together (storage.read_ranges), transient failures retried for
    `retry_seconds` (default: storage.retry_seconds() when built). Shard indexes are built once per dataset
    (data/index.py; the hosts of a run, `hosts`, split the building and share it through `workdir`).
    Picklable: files are reopened per process."""

    def __init__(self, patterns: str | list[str], keys: FieldKeys = FieldKeys(),
                 retry_seconds: float | None = None, workdir: str = "", hosts=None):
        from georsclip_jax.data.index import Hosts, shard_indexes

        self.paths = resolve_shards(patterns)
        self.keys = keys
        self.retry_seconds = storage.retry_seconds() if retry_seconds is None else retry_seconds
        rows = shard_indexes(self.paths, keys, workdir, hosts or Hosts())
        self.index = np.concatenate([np.zeros(0, INDEX_DTYPE), *rows])
        self.index["shard"] = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        self._readers = [storage.RangeReader(p, self.retry_seconds) for p in self.paths]

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"TarShardSource({len(self.paths)} shards, {len(self)} samples, first={self.paths[0]!r})"

    def origin(self, i: int) -> str:
        row = self.index[i]
        name = read_member_name(self._readers[int(row["shard"])], int(row["header"]))
        return f"{self.paths[row['shard']]}:{split_key(name)[0]}"

    def __getitem__(self, i: int) -> dict:
        return self._getitems([i])[0]

    def _getitems(self, indices) -> list[dict]:
        """The raw samples at `indices`, their bytes fetched together (samples with a problem read nothing)."""
        rows = self.index[np.asarray(indices, np.int64)]
        spans = [[] if PROBLEMS[row["problem"]] else member_spans(row) for row in rows]
        requests = [(self.paths[int(row["shard"])], start, end) for row, own in zip(rows, spans) for start, end in own]
        blobs = iter(storage.read_ranges(requests, self.retry_seconds))
        return [self._sample(int(i), row, [(start, next(blobs)) for start, _ in own])
                for i, row, own in zip(indices, rows, spans)]

    def _sample(self, i: int, row, pieces: list[tuple[int, bytes]]) -> dict:
        def member(field):
            offset, length = int(row[field]), int(row[f"{field}_len"])
            start, blob = next((start, blob) for start, blob in pieces
                               if start <= offset and offset + length <= start + len(blob))
            return blob[offset - start:offset - start + length]
        problem = PROBLEMS[row["problem"]]
        return {"image": None if problem else member("image"), "captions": [] if problem else [member("caption")],
                "caption_is_json": bool(row["caption_json"]), "origin": LazyOrigin(self, i), "problem": problem}

"""A metafile (CSV, TSV or Parquet) listing image files under a root folder, with their captions.

Covers open_clip's `filepath`/`title` CSVs, RS5M's positional `*_intermediate.csv` (column 0 the
image name, column 1 the caption) and several caption columns per row (RS3's top-cap / ssl-cap):
all of a row's non-empty captions are returned and the pipeline picks one per sample and epoch.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from georsclip_jax import storage

Column = str | int  # a column name, or its position


def read_table(path: str, delimiter: str | None = None, encoding: str = "utf8") -> pa.Table:
    if not storage.isfile(path):
        raise FileNotFoundError(f"metafile not found: {path}")
    data = io.BytesIO(storage.read_bytes(path))
    if path.endswith(".parquet"):
        return pq.read_table(data)
    delimiter = delimiter or ("\t" if path.endswith((".tsv", ".tab")) else ",")
    try:
        return pa_csv.read_csv(data, read_options=pa_csv.ReadOptions(encoding=encoding),
                               parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                               convert_options=pa_csv.ConvertOptions(strings_can_be_null=True,
                                                                     column_types=None))
    except pa.ArrowInvalid as e:
        raise ValueError(f"metafile {path} cannot be parsed: {e}") from None


def column_values(table: pa.Table, column: Column, path: str) -> list:
    names = table.column_names
    if isinstance(column, int):
        if not -len(names) <= column < len(names):
            raise KeyError(f"metafile {path} has {len(names)} columns; there is no column {column}")
        column = names[column]
    if column not in names:
        raise KeyError(f"metafile {path} has no column {column!r}; columns are {names}")
    return [None if v is None else str(v) for v in table.column(column).to_pylist()]


class MetafileSource:
    """Random-access samples from a metafile + image root; same raw-sample dict as TarShardSource."""

    def __init__(self, path: str, image_root: str, image_column: Column = "filepath",
                 caption_columns: tuple[Column, ...] = ("title",), delimiter: str | None = None,
                 encoding: str = "utf8"):
        table = read_table(path, delimiter, encoding)
        self.path, self.image_root = path, image_root
        self.filenames = column_values(table, image_column, path)
        self.captions = list(zip(*(column_values(table, c, path) for c in caption_columns)))

    def __len__(self) -> int:
        return len(self.filenames)

    def __repr__(self) -> str:
        return f"MetafileSource({self.path!r}, root={self.image_root!r}, {len(self)} rows)"

    def __getitem__(self, i: int) -> dict:
        name = self.filenames[i]
        image = read_if_present(storage.join(self.image_root, name)) if name else None
        captions = [c for c in self.captions[i] if c is not None]
        return {"image": image, "captions": captions, "caption_is_json": False,
                "origin": f"{self.path}:row {i} ({name})",
                "problem": None if image is not None else "missing_image"}


class KarpathyJsonSource:
    """Image-caption training pairs from Karpathy-style `dataset_*.json` files (RSICD, RSITMD): the
    images of one split, each with all its sentences (one is drawn per sample and epoch). Several
    datasets concatenate (RET-2 = RSICD + RSITMD); filenames listed in `exclude` files (e.g.
    RemoteCLIP's deduplication lists against the other dataset's test set) are left out."""

    def __init__(self, json_paths: list[str], image_dirs: list[str], split: str = "train",
                 exclude_files: list[str] = ()):
        if len(json_paths) != len(image_dirs):
            raise ValueError(f"{len(json_paths)} Karpathy JSON files but {len(image_dirs)} image folders")
        excluded = set()
        for path in exclude_files:
            excluded |= {line.strip() for line in storage.read_text(path).splitlines() if line.strip()}
        self.items = []
        for json_path, image_dir in zip(json_paths, image_dirs):
            if not storage.isfile(json_path):
                raise FileNotFoundError(f"Karpathy JSON not found: {json_path}")
            images = json.loads(storage.read_text(json_path))["images"]
            self.items += [(storage.join(image_dir, im["filename"]), [s["raw"] for s in im["sentences"]])
                           for im in images if im["split"] == split and im["filename"] not in excluded]
        self.description = f"{json_paths} split={split}"

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"KarpathyJsonSource({self.description}, {len(self)} images)"

    def __getitem__(self, i: int) -> dict:
        path, captions = self.items[i]
        image = read_if_present(path)
        return {"image": image, "captions": captions, "caption_is_json": False, "origin": path,
                "problem": None if image is not None else "missing_image"}


def read_if_present(path: str) -> bytes | None:
    """The file's bytes, or None if it does not exist (a sample to skip as missing_image)."""
    try:
        return storage.read_bytes(path)
    except (FileNotFoundError, IsADirectoryError):
        return None

"""A metafile (CSV, TSV or Parquet) listing image files under a root folder, with their captions.

Covers open_clip's `filepath`/`title` CSVs, RS5M's positional `*_intermediate.csv` (column 0 the
image name, column 1 the caption) and several caption columns per row (RS3's top-cap / ssl-cap):
all of a row's non-empty captions are returned and the pipeline picks one per sample and epoch.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

Column = str | int  # a column name, or its position


def read_table(path: str, delimiter: str | None = None, encoding: str = "utf8") -> pa.Table:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metafile not found: {path}")
    if path.endswith(".parquet"):
        return pq.read_table(path)
    delimiter = delimiter or ("\t" if path.endswith((".tsv", ".tab")) else ",")
    try:
        return pa_csv.read_csv(path, read_options=pa_csv.ReadOptions(encoding=encoding),
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
        file = os.path.join(self.image_root, name) if name else None
        image = None
        if file and os.path.isfile(file):
            with open(file, "rb") as f:
                image = f.read()
        captions = [c for c in self.captions[i] if c is not None]
        return {"image": image, "captions": captions, "caption_is_json": False,
                "origin": f"{self.path}:row {i} ({name})",
                "problem": None if image is not None else "missing_image"}

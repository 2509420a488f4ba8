"""Convert RS5M tar shards (or a CSV/Parquet metafile + image folder) to ArrayRecord shards.

Resumable: re-run the same command after an interruption and only unfinished output shards are
redone. Every output shard is read back and its record count verified; a manifest lists them.

Examples:
  python convert/to_array_record.py --tar 'RS5M/train/{pub11,rs3}-train-{0000..0031}.tar' --out rs5m_ar/train
  python convert/to_array_record.py --metafile rs3_train_intermediate.csv --image-root rs3/ \\
      --image-column 0 --caption-columns 1 --out rs3_ar
"""

from georsclip_jax.data import array_record
from georsclip_jax.data.metafile import MetafileSource
from georsclip_jax.data.tar_shards import TarShardSource
from georsclip_jax.interop import cli


def column(value: str):
    return int(value) if value.lstrip("-").isdigit() else value


def main(args):
    if bool(args.tar) == bool(args.metafile):
        raise ValueError("give exactly one of --tar or --metafile")
    if args.metafile:
        if not args.image_root:
            raise ValueError("--metafile needs --image-root")
        source = MetafileSource(args.metafile, args.image_root, column(args.image_column),
                                tuple(column(c) for c in args.caption_columns.split(",")))
    else:
        source = TarShardSource(args.tar)
    manifest = array_record.convert(source, args.out, args.prefix, args.records_per_shard)
    skipped = {}
    for shard in manifest["shards"]:
        for reason, n in shard["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + n
    print(f"wrote {manifest['records']} records in {len(manifest['shards'])} shards to {args.out}"
          + (f"; left out {skipped}" if skipped else ""))


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--tar", help="tar shards: brace pattern(s), '::'-separated")
    p.add_argument("--metafile", help="CSV, TSV or Parquet listing image files and captions")
    p.add_argument("--image-root", help="folder the metafile's image paths are relative to")
    p.add_argument("--image-column", default="filepath", help="image column name or position")
    p.add_argument("--caption-columns", default="title", help="comma-separated caption column names or positions")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--prefix", default="samples", help="output shard file prefix")
    p.add_argument("--records-per-shard", type=int, default=10_000)
    cli.run(main, p)

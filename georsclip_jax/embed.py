"""Normalized CLIP embeddings to .npy, with ids: what a retrieval index is built from.

    python -m georsclip_jax.embed --model ViT-B-32-quickgelu --pretrained RS5M_ViT-B-32.pt \\
        --images DIR | FILE.csv | 'shards/{0000..0031}.tar' --out image_emb.npy
    python -m georsclip_jax.embed --pretrained ckpt_dir --texts captions.txt --out text_emb.npy

Images: a folder (walked recursively, sorted; ids are relative paths), a CSV with a `filepath`
column (ids are those paths, relative to the CSV's folder or --image-root), or tar shards (ids are
`shard:key`; undecodable samples are skipped with a warning and left out). Texts: one per line,
ids are line numbers. Writes OUT (float32 [N, D]) and OUT with `.ids.txt` (one id per line).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys

import numpy as np

from georsclip_jax.data.eval_sets import IMAGE_EXTENSIONS


def folder_items(root: str) -> list[tuple[str, callable]]:
    from georsclip_jax.evals.encoders import path_loader

    items = []
    for dirpath, _, files in sorted(os.walk(root, followlinks=True)):
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(dirpath, name)
                items.append((os.path.relpath(path, root), path_loader(path)))
    return items


def csv_items(path: str, image_root: str | None, column: str) -> list[tuple[str, callable]]:
    from georsclip_jax.evals.encoders import path_loader

    root = image_root or os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and column not in rows[0]:
        raise KeyError(f"{path} has no {column!r} column; columns are {list(rows[0])}")
    return [(r[column], path_loader(os.path.join(root, r[column]))) for r in rows]


def shard_embeddings(pattern: str, encoders) -> tuple[list[str], np.ndarray]:
    """Tar shards embedded a batch at a time, each image decoded once: a sample that does not decode is
    skipped with a warning; the decoded images of one batch are all that is held."""
    from tqdm import tqdm

    from georsclip_jax.data.decode import BadSample, decode_image
    from georsclip_jax.data.tar_shards import TarShardSource

    source, ids, out = TarShardSource(pattern), [], []
    for start in tqdm(range(0, len(source), encoders.batch_size), desc="images", unit="batch"):
        loaders = []
        for i in range(start, min(start + encoders.batch_size, len(source))):
            sample = source[i]
            try:
                image = None if sample["problem"] else decode_image(sample["image"])
            except BadSample as bad:
                image, sample["problem"] = None, bad
            if image is None:
                logging.warning("skipping %s: %s", sample["origin"], sample["problem"])
                continue
            ids.append(str(sample["origin"]))
            loaders.append(lambda image=image: image)
        out.append(encoders.images(loaders))
    return ids, np.concatenate(out) if out else np.zeros((0, encoders.embed_dim), np.float32)


def image_items(spec: str, image_root: str | None, column: str):
    """(id, loader) pairs of a folder or CSV; each loader opens its file when the encoder asks."""
    if os.path.isdir(spec):
        return folder_items(spec)
    return csv_items(spec, image_root, column)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", help="model name; inferred from the checkpoint if omitted")
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--act", choices=["gelu", "quick_gelu"])
    parser.add_argument("--adapter", help="LoRA adapters (a save_adapter directory, e.g. WORKDIR/adapter) to "
                                          "attach to the pretrained base")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder, CSV (with --csv-column) or tar shard pattern")
    source.add_argument("--texts", help="text file, one caption per line")
    parser.add_argument("--image-root", help="folder the CSV's paths are relative to")
    parser.add_argument("--csv-column", default="filepath")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", required=True, help="output .npy")
    args = parser.parse_args(argv)

    import georsclip_jax as gj
    from georsclip_jax.evals.encoders import Encoders

    try:
        model = gj.create_model(args.model, args.pretrained, act=args.act)
        if args.adapter:
            gj.load_adapter(model, args.adapter)
        encoders = Encoders(model, args.batch_size)
        if args.texts:
            with open(args.texts, encoding="utf-8") as f:
                texts = f.read().splitlines()
            ids, embeddings = [str(i) for i in range(len(texts))], encoders.texts(texts, desc="texts")
        elif os.path.isdir(args.images) or args.images.endswith(".csv"):
            items = image_items(args.images, args.image_root, args.csv_column)
            ids, embeddings = [i for i, _ in items], encoders.images([l for _, l in items], desc="images")
        else:
            ids, embeddings = shard_embeddings(args.images, encoders)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    np.save(args.out, embeddings.astype(np.float32))
    with open(os.path.splitext(args.out)[0] + ".ids.txt", "w") as f:
        f.write("\n".join(ids) + ("\n" if ids else ""))
    print(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {args.out}")


if __name__ == "__main__":
    main()

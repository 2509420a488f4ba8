"""Input-pipeline throughput: decode + train augmentation + tokenization, ours vs RS5M's loader.

Both read the same RS5M-format tar shards (synthetic scenes, JPEG, sides drawn uniformly in
256-600 px) and apply the same transforms: open_clip's train transform (RandomResizedCrop 224,
scale 0.9-1.0, bicubic; RGB; normalize) and the CLIP tokenizer.
- reference: built the way RS5M's published `dataloader.py` is: `webdataset.WebDataset(urls)
  .shuffle(n).decode(my_decoder)` (PIL + open_clip's torchvision transform in the decoder, caption
  tokenized with open_clip's tokenizer) inside a torch `DataLoader(num_workers, batch_size)`.
- ours: TarShardSource -> Grain pipeline (`build_dataset`) -> DataIterator.
Runs are interleaved (ref, ours, ref, ours, ...) and the median is reported. `workers=0` decodes in
the calling process: one core, so images/s there is images/s per core.

Usage: python benchmarks/bench_data.py [--images 3072] [--batch 64] [--workers 0 2] [--repeats 3]
       [--data DIR] [--out results.json]
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import platform
import statistics
import time


def make_shards(data_dir: str, images: int) -> list[str]:
    from georsclip_jax.data.synthetic import write_rs5m_shards

    paths = sorted(glob.glob(os.path.join(data_dir, "*.tar")))
    if not paths:
        paths = write_rs5m_shards(data_dir, images, samples_per_shard=max(1, images // 8), seed=0,
                                  size_range=(256, 600))
    return paths


def reference_loader(paths: list[str], batch: int, workers: int):
    import open_clip
    import torch
    import webdataset as wds
    from PIL import Image

    preprocess = open_clip.image_transform(224, is_train=True)  # RandomResizedCrop(scale 0.9-1) ...
    tokenizer = open_clip.get_tokenizer("ViT-B-32")

    def my_decoder(key, value):  # as RS5M's dataloader.py, plus tokenization of the caption
        if key.endswith(".img_content"):
            return preprocess(Image.open(io.BytesIO(value)))
        if key.endswith(".caption"):
            return tokenizer(value.decode("utf-8"))[0]
        if key.endswith(".img_name"):
            return value.decode("utf-8")
        return None

    dataset = (wds.WebDataset(paths, shardshuffle=False, nodesplitter=wds.split_by_node, empty_check=False)
               .shuffle(1000).decode(my_decoder).to_tuple("img_content", "caption"))
    torch.set_num_threads(1)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers,
                                       persistent_workers=False)


def our_loader(paths: list[str], batch: int, workers: int, image_dtype: str, jpeg_draft: bool):
    from georsclip_jax.data.pipeline import DataIterator, PipelineOptions, SampleTransform, build_dataset
    from georsclip_jax.data.tar_shards import TarShardSource
    from georsclip_jax.models.configs import PreprocessConfig

    transform = SampleTransform(PreprocessConfig(image_size=224), augment="open_clip", image_dtype=image_dtype,
                                jpeg_draft=jpeg_draft)
    options = PipelineOptions(global_batch_size=batch, num_epochs=1, num_workers=workers, worker_buffer_size=4)
    return DataIterator(build_dataset(TarShardSource(paths), transform, options))


def images_per_second(loader, warmup_batches: int) -> float:
    """Steady-state throughput: the clock starts once every worker has delivered a batch."""
    iterator = iter(loader)
    for _ in range(warmup_batches):
        next(iterator)
    count, start = 0, time.perf_counter()
    for item in iterator:
        count += len(item[0]) if isinstance(item, (list, tuple)) else len(item["image"])
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3072)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-dtype", default="float32", choices=["float32", "uint8"])
    parser.add_argument("--jpeg-draft", action="store_true", help="ours decodes large JPEGs at DCT scale")
    parser.add_argument("--data", default="/tmp/georsclip_bench_data")
    parser.add_argument("--out")
    args = parser.parse_args()
    paths = make_shards(args.data, args.images)
    results = {"host": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "images": args.images,
               "shards": len(paths), "batch": args.batch, "image_dtype": args.image_dtype, "jpeg_draft": args.jpeg_draft, "runs": {}}
    for workers in args.workers:
        ref, ours = [], []
        for _ in range(args.repeats):
            ref.append(images_per_second(reference_loader(paths, args.batch, workers), 2 * max(1, workers)))
            ours.append(images_per_second(our_loader(paths, args.batch, workers, args.image_dtype, args.jpeg_draft), 2 * max(1, workers)))
        row = {"reference_img_s": statistics.median(ref), "ours_img_s": statistics.median(ours)}
        row["ratio"] = row["ours_img_s"] / row["reference_img_s"]
        results["runs"][f"workers={workers}"] = row
        print(f"workers={workers}: reference {row['reference_img_s']:.0f} img/s, ours {row['ours_img_s']:.0f} img/s, "
              f"ratio {row['ratio']:.2f}x  (runs: ref {[round(x) for x in ref]}, ours {[round(x) for x in ours]})",
              flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

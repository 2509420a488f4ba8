"""Input-pipeline throughput: decode + GeoRSCLIP's train augmentation + tokenization, ours vs RS5M's loader.

Both read the same RS5M-format tar shards of real photos (`tests/photos.py`: mosaics of scikit-image's
photographs, JPEG q90; `--workload large`: sides log-uniform in 256-2048 px; `rs5m`: 80 % of them in
256-1024 px, where DCT-scaled decoding helps little, and 20 % in 1024-2048 px) and apply GeoRSCLIP's
full train transform: RandomResizedCrop(224, scale 0.9-1.0, bicubic), RGB, horizontal flip, rotation
uniform in 0-360 degrees, normalization; captions are CLIP-tokenized. Both decode in worker processes, as
training does.
- reference: built the way RS5M's published `dataloader.py` is: `webdataset.WebDataset(urls)
  .shuffle(n).decode(my_decoder)` (PIL + the torchvision transform in the decoder, caption tokenized
  with open_clip's tokenizer) inside a torch `DataLoader(num_workers, batch_size)`.
- ours: TarShardSource -> Grain pipeline (`build_dataset`) -> DataIterator, as `--variant`s: `exact`
  (float32 pixels, bit-identical to the reference's transform), `uint8` (exact pixels, normalized on
  device) and `fast` (uint8 + DCT-scaled JPEG decode: the training default).
Runs are interleaved (ref, ours, ref, ours, ...) and the median is reported. One worker is one core
decoding, so its row is images/s per core. The fast path's quality against the exact path on the
same draws (mean |difference|, PSNR) is measured over the benchmark's images.

Usage: python benchmarks/bench_data.py [--images 2048] [--batch 64] [--workers 1 2] [--repeats 3]
       [--variants exact uint8 fast] [--workload large|rs5m] [--data DIR] [--out results.json]
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))  # photos.py

VARIANTS = {"exact": dict(image_dtype="float32", jpeg_draft=False), "uint8": dict(image_dtype="uint8", jpeg_draft=False),
            "fast": dict(image_dtype="uint8", jpeg_draft=True)}


def workload_sides(workload: str):
    """large: sides log-uniform in 256-2048 px for every image; rs5m: 80 % in 256-1024 px, 20 % in 1024-2048."""
    from photos import rs5m_like_sides

    return {"large": (256, 2048), "rs5m": rs5m_like_sides}[workload]


def make_shards(data_dir: str, images: int, workload: str = "large") -> list[str]:
    from photos import write_photo_shards

    paths = sorted(glob.glob(os.path.join(data_dir, "photos-*.tar")))
    if len(paths) != 8:
        paths = write_photo_shards(data_dir, images, samples_per_shard=-(-images // 8), seed=0,
                                   side_range=workload_sides(workload))
    return paths


def georsclip_train_transform():
    """GeoRSCLIP's training transform (its `image_transform(is_train=True)`), in torchvision."""
    import open_clip
    import torchvision.transforms as T

    return T.Compose([T.RandomResizedCrop(224, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                      lambda img: img.convert("RGB"), T.RandomHorizontalFlip(), T.RandomRotation((0, 360)),
                      T.ToTensor(), T.Normalize(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)])


def reference_loader(paths: list[str], batch: int, workers: int):
    import open_clip
    import torch
    import webdataset as wds
    from PIL import Image

    preprocess = georsclip_train_transform()
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


def our_loader(paths: list[str], batch: int, workers: int, variant: str, read_threads: int = 1):
    """One read thread per worker by default: a worker is then one core decoding, like a reference worker
    (the training default, 2, lets a worker use more than a core: decoding releases the GIL)."""
    from georsclip_jax.data.pipeline import DataIterator, PipelineOptions, SampleTransform, build_dataset
    from georsclip_jax.data.tar_shards import TarShardSource
    from georsclip_jax.models.configs import PreprocessConfig

    transform = SampleTransform(PreprocessConfig(image_size=224), augment="georsclip", **VARIANTS[variant])
    options = PipelineOptions(global_batch_size=batch, num_epochs=1, num_workers=workers, worker_buffer_size=4,
                              read_threads=read_threads)
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
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--read-threads", type=int, nargs="+", default=[1],
                        help="PipelineOptions.read_threads of ours: 1 (default) keeps a worker to one core, as a "
                             "reference worker; with as many workers as cores both loaders have every core")
    parser.add_argument("--workload", default="large", choices=["large", "rs5m"],
                        help="image sides: large = log-uniform 256-2048 px; rs5m = 80 %% in 256-1024 px, 20 %% in "
                             "1024-2048 px")
    parser.add_argument("--data", help="shard folder (default /tmp/georsclip_bench_photos[_rs5m])")
    parser.add_argument("--out")
    args = parser.parse_args()
    data = args.data or "/tmp/georsclip_bench_photos" + ("" if args.workload == "large" else f"_{args.workload}")
    paths = make_shards(data, args.images, args.workload)
    results = {"host": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "images": args.images,
               "workload": args.workload, "shards": len(paths), "batch": args.batch, "quality": quality(paths),
               "runs": {}}
    print(f"fast path vs exact path on the same draws: {results['quality']}", flush=True)
    ours_runs = [(variant, threads) for variant in args.variants for threads in args.read_threads]
    for workers in args.workers:
        runs = {name: [] for name in ["reference", *ours_runs]}
        for _ in range(args.repeats):
            runs["reference"].append(images_per_second(reference_loader(paths, args.batch, workers), 2 * workers))
            for variant, threads in ours_runs:
                loader = our_loader(paths, args.batch, workers, variant, read_threads=threads)
                runs[variant, threads].append(images_per_second(loader, 2 * workers))
        reference = statistics.median(runs["reference"])
        for variant, threads in ours_runs:
            ours = statistics.median(runs[variant, threads])
            results["runs"][f"workers={workers},{variant},read_threads={threads}"] = {
                "reference_img_s": reference, "ours_img_s": ours, "ratio": ours / reference,
                "all_runs": {"reference": runs["reference"], "ours": runs[variant, threads]}}
            print(f"workers={workers} {variant:6s} read_threads={threads}: reference {reference:.0f} img/s, "
                  f"ours {ours:.0f} img/s, "
                  f"ratio {ours / reference:.2f}x  (runs: ref {[round(x) for x in runs['reference']]}, "
                  f"ours {[round(x) for x in runs[variant, threads]]})", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


def quality(paths: list[str]) -> dict:
    """The fast path against the exact one over every benchmark image (data/photos.py)."""
    import tarfile

    from photos import fast_path_quality

    jpegs = []
    for path in paths:
        with tarfile.open(path) as tar:
            jpegs += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".img_content")]
    return fast_path_quality(jpegs)


if __name__ == "__main__":
    main()

"""The Grain input pipeline: raw samples -> augmented, tokenized, fixed-size global batches.

    source --ids--> shuffle(seed, reshuffled per epoch) --> repeat(epochs) --> decode + augment +
    tokenize (random_map, per-sample RNG) --> global batch k: this host's rows of it, collated
    (HostBatches) --> worker processes (mp_prefetch: whole batches per worker) --> DataIterator
    (position, skip totals, global jax.Array, host-to-device prefetch)

Batches are positional: global batch k holds the stream's elements [k·B, (k+1)·B), and host i its
rows [k·B + i·b, k·B + (i+1)·b). A sample that cannot be used (corrupt image, missing caption, ...)
becomes a masked padding row and is counted; it is never replaced by a later sample. So a batch is a
pure function of (seed, k) — the same whatever the host count, the worker count or which samples
are bad — workers compute whole batches that interleave back into the same order, and the iterator
state is just the position k plus this host's skip counts, restorable under any worker or host count.
Augmentation randomness depends only on the seed and the sample's position in the stream.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import threading
from typing import Iterator, NamedTuple, Sequence

import grain
import numpy as np

from georsclip_jax.data.decode import DEFAULT_MAX_PIXELS, SKIP_REASONS, BadSample, decode_caption, load_rgb, open_image
from georsclip_jax.models.configs import PreprocessConfig
from georsclip_jax.tokenizer import get_tokenizer
from georsclip_jax.transforms import AUGMENTATIONS, eval_geometry, normalize_pixels, to_uint8_array, train_geometry

log = logging.getLogger(__name__)


class Skipped(NamedTuple):
    """What the per-sample transform returns instead of an example: counted by the batcher."""
    reason: str


@dataclasses.dataclass(frozen=True)
class SampleTransform:
    """Raw sample + RNG -> {"image", "tokens", "id"} or Skipped. Runs in the pipeline's workers.

    `augment` is None (eval preprocessing), "open_clip" (RandomResizedCrop 0.9-1.0) or "georsclip"
    (that plus horizontal flip and 0-360 degree rotation). When a sample has several captions
    (RS3's top-cap / ssl-cap) one is drawn with the sample's RNG."""
    preprocess: PreprocessConfig = PreprocessConfig()
    augment: str | None = "open_clip"
    context_length: int = 77
    max_pixels: int = DEFAULT_MAX_PIXELS
    json_keys: tuple[str, ...] = ("caption", "text")
    image_dtype: str = "float32"  # "uint8": unnormalized pixels, normalized on device (4x less traffic)
    jpeg_draft: bool = False      # decode large JPEGs at reduced DCT scale (fast, not bit-exact)

    def __post_init__(self):
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be None or one of {sorted(AUGMENTATIONS)}, got {self.augment!r}")
        if self.image_dtype not in ("float32", "uint8"):
            raise ValueError(f"image_dtype must be 'float32' or 'uint8', got {self.image_dtype!r}")
        geometry = (train_geometry(self.preprocess, jpeg_draft=self.jpeg_draft, load=load_rgb,
                                   **AUGMENTATIONS[self.augment])
                    if self.augment
                    else _ignore_rng(eval_geometry(self.preprocess)))
        object.__setattr__(self, "_geometry", geometry)
        object.__setattr__(self, "_tokenizer", get_tokenizer(context_length=self.context_length))

    def __getstate__(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __setstate__(self, state):
        self.__init__(**state)

    def __call__(self, item: tuple[int, dict], rng: np.random.Generator) -> dict | Skipped:
        index, raw = item
        try:
            if raw["problem"]:
                raise BadSample(raw["problem"])
            captions = raw["captions"]
            if not captions:
                raise BadSample("missing_caption")
            caption = captions[int(rng.integers(len(captions)))] if len(captions) > 1 else captions[0]
            text = decode_caption(caption, self.json_keys, raw["caption_is_json"])
            image = open_image(raw["image"], self.max_pixels)
            if not self.augment:
                image = load_rgb(image)
            pixels = to_uint8_array(self._geometry(image, rng))  # train geometry decodes via load_rgb
        except BadSample as bad:
            log.warning("skipping sample %s: %s", raw["origin"], bad)
            return Skipped(bad.reason)
        if self.image_dtype == "float32":
            pixels = normalize_pixels(pixels, self.preprocess.mean, self.preprocess.std)
        return {"image": pixels, "tokens": self._tokenizer(text)[0], "id": np.int64(index)}

    def blank(self) -> dict:
        """The padding row: what a skipped sample or a missing tail row of a batch becomes."""
        size = self.preprocess.image_size
        dtype = np.uint8 if self.image_dtype == "uint8" else np.float32
        return {"image": np.zeros((size, size, 3), dtype), "tokens": np.zeros(self.context_length, np.int32),
                "id": np.int64(-1)}


def _ignore_rng(fn):
    return lambda img, rng: fn(img)


def _with_source_index(length: int, offset: int, index: int, raw: dict) -> tuple[int, dict]:
    return offset + index % length, raw  # later epochs index the source past its length


class HostBatches(grain.MapDataset):
    """Element k: this host's rows of global batch k, collated (`collate`). The stream's elements
    [k·B + i·b, k·B + (i+1)·b) for host i of n, b = B / n; rows past the end of a finite stream are
    padding. Every host has the same number of batches, so multi-host loops stay in step."""

    def __init__(self, parent: grain.MapDataset, options: "PipelineOptions", blank: dict):
        super().__init__(parent)
        self._global = options.global_batch_size
        self._local = options.global_batch_size // options.process_count
        self._offset = options.process_index * self._local
        full, rest = divmod(len(parent), self._global)
        self._length = full + (1 if rest and not options.drop_remainder else 0)
        self._blank = blank

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        return f"HostBatches(global={self._global}, local={self._local}, offset={self._offset})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        start = index * self._global + self._offset
        # Grain's batched read: the rows' raw bytes are fetched together (one request each, all in flight:
        # TarShardSource._getitems), then decoded one by one with each position's own RNG, as row by row.
        rows = self._parent._getitems(list(range(start, min(start + self._local, len(self._parent)))))  # noqa: SLF001
        return collate(rows, self._local, self._blank)


def collate(rows: list, size: int, blank: dict) -> dict:
    """Examples (or Skipped) -> a batch of `size` rows: skipped and missing rows are `blank`, with
    "mask" False; "skipped" counts the skips per reason (layout SKIP_REASONS)."""
    skipped = np.zeros(len(SKIP_REASONS), np.int64)
    examples = []
    for row in rows:
        if isinstance(row, Skipped):
            skipped[SKIP_REASONS.index(row.reason)] += 1
            examples.append(None)
        else:
            examples.append(row)
    examples += [None] * (size - len(examples))
    batch = {k: np.stack([blank[k] if e is None else e[k] for e in examples]) for k in blank}
    batch["mask"] = np.array([e is not None for e in examples])
    batch["skipped"] = skipped
    return batch


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """How the stream is cut and fed; see the module docstring for the order of stages."""
    global_batch_size: int
    seed: int = 0
    num_epochs: int | None = None   # None: repeat forever (training runs are step-bounded)
    shuffle: bool = True
    drop_remainder: bool = True     # False: a final partial batch, padded, with mask
    num_workers: int = 0            # worker processes per host (0: decode in this process)
    worker_buffer_size: int = 2     # batches buffered per worker
    read_threads: int = 4           # batches each worker fetches and decodes at once: one batch's requests
                                    # overlap others' decoding, and a worker never waits with nothing to decode
                                    # (BENCHMARKS.md "Input from object storage", "read threads")
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if self.global_batch_size % self.process_count:
            raise ValueError(f"global_batch_size {self.global_batch_size} is not divisible by the "
                             f"{self.process_count} processes")


@dataclasses.dataclass(frozen=True)
class Batches:
    """This host's positional batch stream: `dataset[k]` is its part of global batch k."""
    dataset: grain.MapDataset
    options: PipelineOptions

    def __len__(self) -> int:
        return len(self.dataset)

    def iterate(self, start: int = 0) -> Iterator[dict]:
        """Batches start, start + 1, ...; workers (if any) each compute every n-th batch."""
        read = grain.ReadOptions(num_threads=self.options.read_threads,
                                 prefetch_buffer_size=2 * self.options.read_threads)
        stream = self.dataset[start:].to_iter_dataset(read)
        if self.options.num_workers:
            _ensure_flags_parsed()
            stream = stream.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.options.num_workers, per_worker_buffer_size=self.options.worker_buffer_size))
        return iter(stream)


def _shuffled(source, options: PipelineOptions, offset: int = 0, seed_offset: int = 0) -> grain.MapDataset:
    ds = grain.MapDataset.source(source).map_with_index(functools.partial(_with_source_index, len(source), offset))
    return ds.shuffle(seed=options.seed + seed_offset) if options.shuffle else ds


def mixture(sources: Sequence, weights: Sequence[float], options: PipelineOptions) -> grain.MapDataset:
    """Several corpora in fixed proportions: each is shuffled and repeated on its own (its own epochs),
    and Grain's mix interleaves them by a fixed pattern of the weights, so element k — and every batch —
    stays a pure function of (seed, k), and each corpus's share of any batch is its weight to within a
    row. Sample ids are made unique across corpora (corpus i's ids start after corpus i-1's)."""
    if len(sources) != len(weights) or min(weights) <= 0:
        raise ValueError(f"a mixture needs one positive weight per source; got {list(weights)} for {len(sources)}")
    if options.num_epochs is not None:
        raise ValueError("a mixture repeats each corpus forever (training is step-bounded); num_epochs must be None")
    offsets = np.cumsum([0] + [len(s) for s in sources[:-1]])
    parts = [_shuffled(s, options, int(offset), i).repeat(None) for i, (s, offset) in enumerate(zip(sources, offsets))]
    return grain.MapDataset.mix(parts, list(weights))


def build_dataset(source, transform: SampleTransform, options: PipelineOptions,
                  weights: Sequence[float] | None = None) -> Batches:
    """source: one source, or with `weights` a list of sources mixed in those proportions (`mixture`)."""
    ds = mixture(source, weights, options) if weights else _shuffled(source, options).repeat(options.num_epochs)
    ds = ds.random_map(transform, seed=options.seed)
    return Batches(HostBatches(ds, options, transform.blank()), options)


def _ensure_flags_parsed():
    """Grain's worker processes read absl flags; outside an absl app, take their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class DataIterator:
    """This host's batches from a position, with cumulative skip counts and a restorable state.

    With `sharding` (a NamedSharding over the batch axes), batches become global `jax.Array`s built
    from every process's local rows, `prefetch` of them staged on device ahead of use by a thread.
    The state is `{"position": batches returned so far, "skipped": this host's counts}`; prefetched
    batches are not counted, and restoring rebuilds the stream at the position (any worker count)."""

    def __init__(self, batches: Batches, sharding=None, prefetch: int = 2):
        self._batches, self._sharding, self._prefetch = batches, sharding, prefetch
        self._skipped = np.zeros(len(SKIP_REASONS), np.int64)
        self.position = 0
        self._grain_iter, self._queue, self._thread = None, None, None

    def _start(self):
        self._grain_iter = self._batches.iterate(self.position)
        if self._sharding is not None and self._prefetch:
            self._queue = queue.Queue(maxsize=self._prefetch)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._produce, daemon=True)
            self._thread.start()

    def _pull(self) -> tuple[dict, np.ndarray]:
        batch = next(self._grain_iter)
        skipped = batch.pop("skipped")
        if self._sharding is not None:
            batch = to_global(batch, self._sharding)
        return batch, skipped

    def _produce(self):
        while not self._stop.is_set():
            try:
                item = self._pull()
            except StopIteration:
                item = None
            except Exception as e:  # surfaced on the consumer's next()
                item = e
            self._queue.put(item)
            if item is None or isinstance(item, Exception):
                return

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self._grain_iter is None:
            self._start()
        if self._queue is None:
            batch, skipped = self._pull()
        else:
            item = self._queue.get()
            if item is None:
                raise StopIteration
            if isinstance(item, Exception):
                raise item
            batch, skipped = item
        self._skipped += skipped
        self.position += 1
        return batch

    @property
    def skipped(self) -> dict[str, int]:
        """Cumulative skipped samples per reason on this host, for the trainer's metrics."""
        return {reason: int(n) for reason, n in zip(SKIP_REASONS, self._skipped)}

    def get_state(self) -> dict:
        return {"position": self.position, "skipped": self.skipped}

    def set_state(self, state: dict):
        if "position" not in state:
            raise ValueError(f"data-iterator state without a position: {sorted(state)}")
        self.close()
        self._skipped = np.asarray([state["skipped"].get(r, 0) for r in SKIP_REASONS], np.int64)
        self.position = int(state["position"])

    def close(self):
        if self._thread is not None:
            self._stop.set()
            while self._thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
        self._grain_iter, self._queue, self._thread = None, None, None


def to_global(batch: dict, sharding) -> dict:
    """This process's rows -> global arrays sharded over the batch axes (rows in process order)."""
    import jax

    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}

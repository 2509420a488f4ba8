"""The Grain input pipeline: raw samples -> augmented, tokenized, fixed-size global batches.

    source --ids--> shuffle(seed, reshuffled per epoch) --> repeat(epochs) --> decode + augment +
    tokenize (random_map, per-sample RNG) --> this host's block of each global batch --> batch with
    skip counts
    --> worker processes (mp_prefetch) --> DataIterator (skip totals, state, global jax.Array,
    host-to-device prefetch)

Randomness depends only on the seed and the sample's position in the global stream, never on the
host or worker count, and each host takes a contiguous block of every global batch, so with
decoding in-process a global batch is the same whether one host or many produced it (worker
processes each batch their own share of the stream, so they reorder rows). The iterator
state is a small JSON-able dict; restoring it continues the stream exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import threading
from typing import Any, Iterator, NamedTuple

import grain
import numpy as np

from georsclip_jax.data.decode import DEFAULT_MAX_PIXELS, SKIP_REASONS, BadSample, decode_caption, load_rgb, open_image
from georsclip_jax.models.configs import PreprocessConfig
from georsclip_jax.tokenizer import get_tokenizer
from georsclip_jax.transforms import eval_geometry, normalize_pixels, to_uint8_array, train_geometry

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
        if self.augment not in (None, "open_clip", "georsclip"):
            raise ValueError(f"augment must be None, 'open_clip' or 'georsclip', got {self.augment!r}")
        if self.image_dtype not in ("float32", "uint8"):
            raise ValueError(f"image_dtype must be 'float32' or 'uint8', got {self.image_dtype!r}")
        georsclip = self.augment == "georsclip"
        geometry = (train_geometry(self.preprocess, hflip=georsclip, rotate=georsclip, jpeg_draft=self.jpeg_draft,
                                   load=load_rgb)
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


def _ignore_rng(fn):
    return lambda img, rng: fn(img)


def _with_source_index(length: int, index: int, raw: dict) -> tuple[int, dict]:
    return index % length, raw  # later epochs index the source past its length


class HostBlocks(grain.MapDataset):
    """This host's share of the stream: from every `block` consecutive elements (one global batch)
    the contiguous `part` at `index * part`. Concatenated in process order, the hosts' local batches
    are exactly the global batch a single host builds (absent skipped samples, with decoding in
    this process)."""

    def __init__(self, parent: grain.MapDataset, block: int, part: int, index: int):
        super().__init__(parent)
        self._block, self._part, self._index = block, part, index
        full, rest = divmod(len(parent), block)
        self._length = full * part + max(0, min(part, rest - index * part))

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        return f"HostBlocks(block={self._block}, part={self._part}, index={self._index})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        block, offset = divmod(index, self._part)
        return self._parent[block * self._block + self._index * self._part + offset]


class CountingBatchDataset(grain.IterDataset):
    """Fixed-size batches of examples; Skipped elements are dropped and counted per reason.

    Each batch carries "mask" (False on padding rows of a final partial batch) and "skipped", the
    per-reason counts (layout SKIP_REASONS) of samples dropped since the previous batch."""

    def __init__(self, parent: grain.IterDataset, batch_size: int, drop_remainder: bool = False):
        super().__init__(parent)
        self.batch_size, self.drop_remainder = batch_size, drop_remainder

    def __iter__(self):
        return _CountingBatchIterator(self._parent.__iter__(), self.batch_size, self.drop_remainder)


class _CountingBatchIterator(grain.DatasetIterator):
    def __init__(self, parent, batch_size: int, drop_remainder: bool):
        super().__init__(parent)
        self.batch_size, self.drop_remainder = batch_size, drop_remainder
        self._template = None

    def __next__(self) -> dict:
        examples, skipped = [], np.zeros(len(SKIP_REASONS), np.int64)
        for element in self._parent:
            if isinstance(element, Skipped):
                skipped[SKIP_REASONS.index(element.reason)] += 1
                continue
            examples.append(element)
            if len(examples) == self.batch_size:
                return self._stack(examples, skipped)
        if examples and self.drop_remainder:
            raise StopIteration
        if examples or (skipped.any() and self._template is not None):
            return self._stack(examples, skipped)
        raise StopIteration

    def _stack(self, examples: list[dict], skipped: np.ndarray) -> dict:
        self._template = self._template or {k: np.zeros_like(v) for k, v in examples[0].items()}
        rows = examples + [self._template] * (self.batch_size - len(examples))
        batch = {k: np.stack([r[k] for r in rows]) for k in self._template}
        batch["mask"] = np.arange(self.batch_size) < len(examples)
        batch["skipped"] = skipped
        return batch

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        self._parent.set_state(state)


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
    read_threads: int = 1           # threads per worker reading/decoding samples
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if self.global_batch_size % self.process_count:
            raise ValueError(f"global_batch_size {self.global_batch_size} is not divisible by the "
                             f"{self.process_count} processes")


def build_dataset(source, transform: SampleTransform, options: PipelineOptions) -> grain.IterDataset:
    ds = grain.MapDataset.source(source).map_with_index(functools.partial(_with_source_index, len(source)))
    if options.shuffle:
        ds = ds.shuffle(seed=options.seed)
    ds = ds.repeat(options.num_epochs).random_map(transform, seed=options.seed)
    local_batch = options.global_batch_size // options.process_count
    ds = HostBlocks(ds, options.global_batch_size, local_batch, options.process_index)
    read = grain.ReadOptions(num_threads=options.read_threads, prefetch_buffer_size=4 * options.read_threads)
    batches = CountingBatchDataset(ds.to_iter_dataset(read), local_batch, options.drop_remainder)
    if options.num_workers:
        _ensure_flags_parsed()
        batches = batches.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=options.num_workers, per_worker_buffer_size=options.worker_buffer_size))
    return batches


def _ensure_flags_parsed():
    """Grain's worker processes read absl flags; outside an absl app, take their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class DataIterator:
    """This host's batches, with cumulative skip counts and an exactly restorable state.

    With `sharding` (a NamedSharding over the batch axes), batches become global `jax.Array`s built
    from every process's local rows, `prefetch` of them staged on device ahead of use by a thread.
    `get_state()` describes the position after the last batch *returned*, prefetched ones not counted."""

    def __init__(self, dataset: grain.IterDataset, sharding=None, prefetch: int = 2):
        self._dataset, self._sharding, self._prefetch = dataset, sharding, prefetch
        self._skipped = np.zeros(len(SKIP_REASONS), np.int64)
        self._state = None
        self._start(None)

    def _start(self, grain_state):
        self._grain_iter = iter(self._dataset)
        if grain_state is not None:
            self._grain_iter.set_state(grain_state)
        self._queue, self._thread = None, None
        if self._sharding is not None and self._prefetch:
            self._queue = queue.Queue(maxsize=self._prefetch)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._produce, daemon=True)
            self._thread.start()

    def _pull(self) -> tuple[dict, np.ndarray, Any]:
        batch = next(self._grain_iter)
        skipped = batch.pop("skipped")
        if self._sharding is not None:
            batch = to_global(batch, self._sharding)
        return batch, skipped, self._grain_iter.get_state()

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
        if self._queue is None:
            batch, skipped, state = self._pull()
        else:
            item = self._queue.get()
            if item is None:
                raise StopIteration
            if isinstance(item, Exception):
                raise item
            batch, skipped, state = item
        self._skipped += skipped
        self._state = state
        return batch

    @property
    def skipped(self) -> dict[str, int]:
        """Cumulative skipped samples per reason, for the trainer's metrics."""
        return {reason: int(n) for reason, n in zip(SKIP_REASONS, self._skipped)}

    def get_state(self) -> dict:
        grain_state = self._state if self._state is not None else iter(self._dataset).get_state()
        return {"grain": grain_state, "skipped": self.skipped}

    def set_state(self, state: dict):
        self.close()
        self._skipped = np.asarray([state["skipped"].get(r, 0) for r in SKIP_REASONS], np.int64)
        self._state = state["grain"]
        self._start(state["grain"])

    def close(self):
        if self._thread is not None:
            self._stop.set()
            while self._thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
            self._thread = None


def to_global(batch: dict, sharding) -> dict:
    """This process's rows -> global arrays sharded over the batch axes (rows in process order)."""
    import jax

    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}

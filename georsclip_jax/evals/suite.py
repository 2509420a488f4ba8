"""The whole GeoRSCLIP benchmark on an `rs5m_test_data` tree, as one callable of the parameters.

`Suite(model, data_root, tasks)` reads the datasets and compiles the encoders once; calling it with
parameters (the trainer's current ones, or None for the model's own) returns GeoRSCLIP's result keys.
That is both the evaluate CLI and the trainer's periodic eval hook.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import Sequence

from georsclip_jax.data.eval_sets import TFDS_SETS, karpathy_json_set, rs5m_test_data, tfds_set
from georsclip_jax.evals.encoders import Encoders
from georsclip_jax.evals.probes import PROBE_TASKS, evaluate_probes
from georsclip_jax.evals.retrieval import KS, evaluate_retrieval
from georsclip_jax.evals.selo import METRICS, evaluate_selo, read_annotations
from georsclip_jax.evals.zeroshot import evaluate_zeroshot, image_embeddings

TASKS = ("zeroshot", "retrieval", "selo", *PROBE_TASKS)
CLASSIFICATION_TASKS = ("zeroshot", *PROBE_TASKS)  # the tasks that read the scene-classification sets
DEFAULT_SHOTS = (1, 4, 8, 16)
FEWSHOT_KEY = re.compile(r"-(\d+)shot-acc$")
ZEROSHOT_SETS = ("EuroSAT", "RESISC45", "AID")
RETRIEVAL_SETS = ("rsitmd", "rsicd")
log = logging.getLogger(__name__)


class Suite:
    def __init__(self, model, data_root: str, tasks=TASKS, batch_size: int = 256, protocol: str = "georsclip",
                 selo_out: str | None = None, karpathy: dict[str, tuple[str, str]] | None = None,
                 tfds_sets: Sequence[str] = (), tfds_data_dir: str = "", knn_k: int = 20,
                 shots: Sequence[int] = DEFAULT_SHOTS, fewshot_draws: int = 5):
        """karpathy: retrieval sets read from Karpathy `dataset_*.json` splits instead of GeoRSCLIP's CSVs,
        {name: (json path, image folder)}; names beyond rsitmd/rsicd add sets. tfds_sets: zero-shot sets
        prepared by tensorflow-datasets under tfds_data_dir (`eurosat/rgb`, `resisc45`, `uc_merced`).
        knn_k, shots, fewshot_draws: the probe tasks' k-NN neighbours, shot counts and seeded draws."""
        unknown = set(tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown eval task(s) {sorted(unknown)}; choose from {list(TASKS)}")
        self.tasks, self.protocol, self.selo_out = tuple(tasks), protocol, selo_out
        self.probe_options = dict(knn_k=knn_k, shots=tuple(shots), draws=fewshot_draws)
        sets = rs5m_test_data(data_root)
        self.skipped: dict[str, str] = {}  # dataset -> why it was not evaluated
        zeroshot = {n: sets[n] for n in ZEROSHOT_SETS}
        zeroshot.update({TFDS_SETS.get(n, n): functools.partial(tfds_set, tfds_data_dir, n) for n in tfds_sets})
        classification = [t for t in CLASSIFICATION_TASKS if t in tasks]
        self.zeroshot = self._load(classification[0], zeroshot) if classification else {}
        retrieval = {n: sets[n] for n in RETRIEVAL_SETS}
        retrieval.update({n: functools.partial(karpathy_json_set, path, images, name=n)
                          for n, (path, images) in (karpathy or {}).items()})
        self.retrieval = self._load("retrieval", retrieval) if "retrieval" in tasks else {}
        self.selo_root = sets["AIR-SLT"]
        if "selo" in tasks:
            read_annotations(self.selo_root)
        self.encoders = Encoders(model, batch_size)
        self.details: dict = {"skipped": self.skipped} if self.skipped else {}

    def _probes(self, name: str, dataset, images) -> dict[str, float]:
        tasks = [t for t in PROBE_TASKS if t in self.tasks]
        if not tasks:
            return {}
        names = [os.path.basename(x) if isinstance(x, str) else f"{i:09d}" for i, x in enumerate(dataset.images)]
        probes = evaluate_probes(images, dataset.labels, names, len(dataset.classnames), tasks,
                                 mesh=self.encoders.mesh, **self.probe_options)
        self.details[f"{name}-probes"] = probes
        results = {f"{name}-knn-acc": probes["knn"]} if "knn" in probes else {}
        for shots, metrics in probes.get("fewshot", {}).items():
            results[f"{name}-{shots}shot-acc"], results[f"{name}-{shots}shot-std"] = metrics["acc"], metrics["std"]
        if "linear_probe" in probes:
            results[f"{name}-linear-probe-acc"] = probes["linear_probe"]["acc"]
        return results

    def _load(self, task: str, loaders: dict) -> dict:
        """The task's datasets that are present and non-empty; the others are skipped with their reason.
        A task with none stops the run with every reason."""
        loaded = {}
        for name, load in loaders.items():
            try:
                loaded[name] = load()
            except (FileNotFoundError, ValueError, KeyError) as e:
                self.skipped[name] = str(e).strip("'\"")
        if not loaded:
            raise ValueError(f"{task}: no dataset to evaluate: " + "; ".join(self.skipped[n] for n in loaders))
        for name in loaders.keys() - loaded.keys():
            log.warning("%s: skipped %s: %s", task, name, self.skipped[name])
        return loaded

    def __call__(self, params=None) -> dict[str, float]:
        results = {}
        for name, dataset in self.zeroshot.items():
            images = image_embeddings(self.encoders, dataset, params)
            if "zeroshot" in self.tasks:
                metrics = evaluate_zeroshot(self.encoders, dataset, params, self.protocol, images=images)
                self.details[name] = metrics
                results[f"{name}-zeroshot-acc"] = metrics["acc"]
            results.update(self._probes(name, dataset, images))
        for name, dataset in self.retrieval.items():
            metrics = evaluate_retrieval(self.encoders, dataset, params)
            results.update({f"retrieval-{key}-{name}": value for key, value in metrics.items()})
        if "selo" in self.tasks:
            selo = evaluate_selo(self.encoders, self.selo_root, params, self.selo_out)
            self.details["selo_samples"] = selo["samples"]
            self.details["selo_skipped"] = selo["skipped"]
            results.update({f"Selo_{name}": value for name, value in selo["mean"].items()})
        return results


def table_columns(results: dict) -> list[tuple[str, str]]:
    """(header, key) in the order of GeoRSCLIP's README tables."""
    tfds = [n for n in TFDS_SETS.values() if any(k.startswith(f"{n}-") for k in results)]
    columns = [(f"{n}_acc", f"{n}-zeroshot-acc") for n in (*ZEROSHOT_SETS, *tfds)]
    shots = sorted({int(m.group(1)) for m in map(FEWSHOT_KEY.search, results) if m})
    for n in (*ZEROSHOT_SETS, *tfds):
        columns += [(f"{n} kNN", f"{n}-knn-acc"), *((f"{n} {k}-shot", f"{n}-{k}shot-acc") for k in shots),
                    (f"{n} LP", f"{n}-linear-probe-acc")]
    added = sorted({k.removeprefix("retrieval-mean-recall-") for k in results
                    if k.startswith("retrieval-mean-recall-")} - set(RETRIEVAL_SETS))  # --karpathy sets
    for name in (*RETRIEVAL_SETS, *added):
        columns += [(f"{name} I2T R@{k}", f"retrieval-image2text-R@{k}-{name}") for k in KS]
        columns += [(f"{name} T2I R@{k}", f"retrieval-text2image-R@{k}-{name}") for k in KS]
        columns.append((f"{name} mR", f"retrieval-mean-recall-{name}"))
    columns += [(f"Selo_{m}", f"Selo_{m}") for m in METRICS]
    return [(header, key) for header, key in columns if key in results]


def _cell(results: dict, key: str) -> str:
    if key.startswith("Selo_"):
        return f"{results[key]:.6f}"
    if FEWSHOT_KEY.search(key):  # few-shot: mean ± std over the seeded draws
        return f"{results[key]:.2f} ± {results[key.removesuffix('-acc') + '-std']:.2f}"
    return f"{results[key]:.2f}"


def markdown_table(results: dict, model_name: str) -> str:
    columns = table_columns(results)
    return "\n".join(["| Model | " + " | ".join(h for h, _ in columns) + " |",
                      "|---|" + "---|" * len(columns),
                      f"| {model_name} | " + " | ".join(_cell(results, k) for _, k in columns) + " |"])

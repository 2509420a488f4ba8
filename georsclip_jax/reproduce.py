"""Reproduce GeoRSCLIP's published tables: its weights and test data from the Hub, its exact protocols,
the README's numbers beside ours.

    python -m georsclip_jax.reproduce                       # every published model, every task
    python -m georsclip_jax.reproduce --models vit-b-32,clip-baseline --tasks retrieval --data-root rs5m_test_data

For each model in `evals/published.py` (GeoRSCLIP ViT-B/32 and ViT-H/14, the RET-2 and RSICD fine-tunes,
the CLIP baseline) the weights are fetched from the Hub (cached), `rs5m_test_data.zip` is fetched and
unpacked once (or `--data-root` names a local copy), and the suite runs GeoRSCLIP's protocols. Prints
GeoRSCLIP's README tables with "published / ours (ours − published)" in every cell, writes JSON and
Markdown, and exits 0 only if every cell is within the tolerance stated in `evals/published.py`
(0.05 points, SeLo 1e-3), 1 if any is not, 2 if something could not be run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from georsclip_jax.evals import published
from georsclip_jax.evals.retrieval import KS
from georsclip_jax.evals.selo import METRICS
from georsclip_jax.evals.suite import RETRIEVAL_SETS, ZEROSHOT_SETS

TASKS = ("zeroshot", "retrieval", "selo")


def task_of(key: str) -> str:
    if key.endswith("-zeroshot-acc"):
        return "zeroshot"
    return "selo" if key.startswith("Selo_") else "retrieval"


def compare(published_values: dict[str, float], ours: dict[str, float]) -> dict[str, dict]:
    """Per published cell: both numbers, ours − published (ours rounded as GeoRSCLIP prints), within?"""
    cells = {}
    for key, value in published_values.items():
        mine = ours.get(key)
        digits = 6 if key.startswith("Selo_") else 2
        diff = None if mine is None else round(round(mine, digits) - value, digits)
        cells[key] = {"published": value, "ours": mine, "diff": diff,
                      "within": diff is not None and abs(diff) <= published.tolerance(key) + 1e-9}
    return cells


def _cell(cell: dict | None, digits: int) -> str:
    if cell is None:
        return ""
    if cell["ours"] is None:
        return f"{cell['published']:.{digits}f} / not run ✗"
    mark = "" if cell["within"] else " ✗"
    return f"{cell['published']:.{digits}f} / {cell['ours']:.{digits}f} ({cell['diff']:+.{digits}f}){mark}"


def _table(title: str, columns: list[tuple[str, str]], report: dict, digits: int) -> list[str]:
    rows = [(entry["name"], entry["cells"]) for entry in report.values()
            if any(key in entry["cells"] for _, key in columns)]
    if not rows:
        return []
    lines = [f"**{title}** — published / ours (ours − published)", "",
             "| Model | " + " | ".join(header for header, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(_cell(cells.get(key), digits) for _, key in columns) + " |"
              for name, cells in rows]
    return lines + [""]


def markdown(report: dict) -> str:
    """GeoRSCLIP's README tables: zero-shot classification, retrieval per test set, SeLo."""
    lines = _table("Zero-shot classification (top-1 %)",
                   [(n, f"{n}-zeroshot-acc") for n in ZEROSHOT_SETS], report, 2)
    for name in RETRIEVAL_SETS:
        columns = [(f"I2T R@{k}", f"retrieval-image2text-R@{k}-{name}") for k in KS]
        columns += [(f"T2I R@{k}", f"retrieval-text2image-R@{k}-{name}") for k in KS]
        lines += _table(f"Retrieval, {name.upper()} test set", columns + [("mR", f"retrieval-mean-recall-{name}")],
                        report, 2)
    lines += _table("Semantic localization (AIR-SLT)", [(m, f"Selo_{m}") for m in METRICS], report, 6)
    within = all(c["within"] for entry in report.values() for c in entry["cells"].values())
    verdict = "Every cell is within it." if within else "Cells marked ✗ are not."
    lines.append(f"Tolerance: {published.PERCENT_TOLERANCE} points, SeLo {published.SELO_TOLERANCE} "
                 f"(float32 reduction order only). {verdict}")
    return "\n".join(lines)


def run_model(entry: published.PublishedModel, data_root: str, tasks, batch_size: int, out_dir: str) -> dict:
    import georsclip_jax as gj
    from georsclip_jax.evals.suite import Suite

    cells = {k: v for k, v in entry.results.items() if task_of(k) in tasks}
    model = gj.create_model(pretrained=entry.pretrained, act=entry.act)
    suite = Suite(model, data_root, sorted({task_of(k) for k in cells}), batch_size,
                  selo_out=os.path.join(out_dir, f"selo_{entry.key}"))
    ours = suite()
    return {"name": entry.name, "pretrained": entry.pretrained, "act": entry.act, "ours": ours,
            "cells": compare(cells, ours)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(published.MODELS),
                        help=f"comma-separated, of: {', '.join(published.MODELS)}")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of: {', '.join(TASKS)}")
    parser.add_argument("--data-root", help="a local rs5m_test_data folder, instead of GeoRSCLIP's zip from the Hub")
    parser.add_argument("--test-data", default=published.TEST_DATA, help="Hub id of the test-data zip")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default="reproduce.json", help="JSON report; the Markdown goes beside it (.md)")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    tasks = [t for t in args.tasks.split(",") if t]
    for what, chosen, known in (("model", models, published.MODELS), ("task", tasks, TASKS)):
        unknown = [c for c in chosen if c not in known]
        if unknown:
            parser.error(f"unknown {what}(s) {unknown}; choose from {list(known)}")

    import jax

    jax.config.update("jax_default_matmul_precision", "highest")  # as the protocols' PyTorch runs
    from georsclip_jax.data import published_test_data

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    report = {}
    try:
        data_root = args.data_root or str(published_test_data.fetch(args.test_data))
        for key in models:
            entry = published.MODELS[key]
            if any(task_of(k) in tasks for k in entry.results):
                report[key] = run_model(entry, data_root, tasks, args.batch_size, out_dir)
    except (ValueError, FileNotFoundError, KeyError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    table = markdown(report)
    print(table)
    passed = all(c["within"] for entry in report.values() for c in entry["cells"].values())
    with open(args.out, "w") as f:
        json.dump({"passed": passed, "data_root": data_root, "tolerance": {
            "percent": published.PERCENT_TOLERANCE, "selo": published.SELO_TOLERANCE}, "models": report}, f, indent=1)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(table + "\n")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()

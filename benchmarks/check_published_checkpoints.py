"""Full-size SkyCLIP-format checkpoints load by their published names with the published activation.

For each published SkyCLIP model (ViT-B/32 with GELU, ViT-L/14 with QuickGELU) a random-init open_clip
model of that architecture is saved as SkyScript's training script saves `epoch_20.pt` (`module.` keys,
AdamW and grad-scaler state), under the published folder name. Ours: `gj.create_model(pretrained=path)`
with no model name and no act= (the registry, interop/registry.py, supplies both). Reference:
`open_clip.create_model(arch, pretrained=path, force_quick_gelu=...)` on the same file. Reported: the
largest |difference| of normalized image (224 px) and text embeddings (must be ≤ 1e-5), the difference
the wrong activation makes, seconds and the file's size. Exits 1 if any check fails.

Usage: python benchmarks/check_published_checkpoints.py [--models SkyCLIP_ViT_B32_top50pct ...] [--out results.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))  # test helpers

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402

import georsclip_jax as gj  # noqa: E402
from georsclip_jax.interop import registry  # noqa: E402
from reference_embeddings import embeddings  # noqa: E402
from skyclip_format import save_training_checkpoint  # noqa: E402

TOLERANCE = 1e-5
DEFAULT_MODELS = ("SkyCLIP_ViT_B32_top50pct", "SkyCLIP_ViT_L14_top30pct")


def max_difference(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def check(folder: str, root: Path) -> dict:
    known = registry.KNOWN[f"{folder}/epoch_20.pt"]
    quick = known.act == "quick_gelu"
    path = root / folder / "epoch_20.pt"
    torch.manual_seed(0)
    weights = save_training_checkpoint(open_clip.create_model(known.model, force_quick_gelu=quick), path)
    gc.collect()
    start = time.perf_counter()
    ours = gj.create_model(pretrained=path)
    ours_seconds = time.perf_counter() - start
    ours_embeddings = embeddings(ours, False, image_size=224)
    act = ours.config.act
    del ours
    start = time.perf_counter()
    reference = open_clip.create_model(known.model, pretrained=str(path), force_quick_gelu=quick).eval()
    reference_seconds = time.perf_counter() - start
    difference = max_difference(ours_embeddings, embeddings(reference, True, image_size=224))
    del reference
    wrong = open_clip.create_model(known.model, pretrained=str(path), force_quick_gelu=not quick).eval()
    wrong_difference = max_difference(ours_embeddings, embeddings(wrong, True, image_size=224))
    del wrong
    result = {"file": f"{folder}/epoch_20.pt", "model": known.model, "published_act": known.act, "loaded_act": act,
              "file_gib": path.stat().st_size / 2**30, "weights_gib": weights / 2**30,
              "max_abs_difference": difference, "wrong_act_difference": wrong_difference,
              "ours_load_s": ours_seconds, "open_clip_load_s": reference_seconds}
    result["passed"] = act == known.act and difference <= TOLERANCE and wrong_difference > 10 * TOLERANCE
    path.unlink()
    return result


def table(results: list[dict]) -> str:
    rows = ["| file | arch | act | file GiB | max abs diff vs open_clip | wrong act's diff "
            "| load s ours / open_clip | ok |",
            "|---|---|---|---:|---:|---:|---:|---|"]
    rows += [f"| {r['file']} | {r['model']} | {r['loaded_act']} | {r['file_gib']:.2f} | {r['max_abs_difference']:.1e} "
             f"| {r['wrong_act_difference']:.1e} | {r['ours_load_s']:.1f} / {r['open_clip_load_s']:.1f} "
             f"| {'yes' if r['passed'] else 'NO'} |" for r in results]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [check(folder, Path(tmp)) for folder in args.models]
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

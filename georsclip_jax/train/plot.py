"""The run at a glance as one PNG (`WORKDIR/loss.png`): training and validation loss, learning rate
and images/s over steps, with a dashed line wherever the run resumed from a checkpoint."""

from __future__ import annotations

import json

PANELS = (("loss", (("loss", "training"), ("eval/val_loss", "validation"))),
          ("learning rate", (("lr", None),)),
          ("images / s", (("images_per_s", None),)))


def read_series(jsonl_path: str) -> tuple[dict[str, list[tuple[int, float]]], list[int]]:
    """Each metric's (step, value) points, and the steps the run resumed at."""
    series, resumed = {}, set()
    with open(jsonl_path) as f:
        for line in f:
            row = json.loads(line)
            if row.get("resumed"):
                resumed.add(row["step"])
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    series.setdefault(key, []).append((row["step"], value))
    return series, sorted(resumed)


def plot_run(jsonl_path: str, png_path: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    series, resumed = read_series(jsonl_path)
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    for axes, (title, curves) in zip(figure.subplots(1, len(PANELS)), PANELS):
        for key, label in curves:
            if key in series:
                steps, values = zip(*sorted(series[key]))
                axes.plot(steps, values, marker="o" if len(steps) <= 20 else None, label=label)
        for step in resumed:
            axes.axvline(step, color="grey", linestyle="--", linewidth=1,
                         label="resumed" if step == resumed[0] and title == "loss" else None)
        axes.set(title=title, xlabel="step")
        axes.grid(alpha=0.3)
        if title == "loss":
            axes.legend()
    figure.savefig(png_path, dpi=100)

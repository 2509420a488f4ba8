"""The divergence guard: a run whose loss, gradients or parameters stop being finite stops at once.

As big_vision does, the step's metrics are checked whenever they reach the host: at every log step
and before every checkpoint. `l2_params` is the norm of the state about to be saved, so a checkpoint
is written only if that state is finite: the newest checkpoint on disk is always a good one to
resume from. Every process sees the same (global) metrics, so all stop at the same step.
"""

from __future__ import annotations

import math
import shlex
import sys

GUARDED = ("loss", "grad_norm", "logit_scale", "l2_params", "l2_updates")


class Diverged(RuntimeError):
    """The run stopped because a guarded metric is NaN or infinite."""


def first_non_finite(metrics: dict) -> str | None:
    return next((name for name in GUARDED if name in metrics and not math.isfinite(metrics[name])), None)


def resume_command() -> str:
    """The command line this process was started with, to re-run it after a fix."""
    return " ".join(["python -m georsclip_jax.main", *map(shlex.quote, sys.argv[1:])])


def check_finite(step: int, metrics: dict, newest_checkpoint, checkpoint_dir: str) -> None:
    """Raises Diverged naming the step, the first non-finite metric and how to resume.
    `newest_checkpoint()` is asked only then (listing a bucket at every log step would cost)."""
    name = first_non_finite(metrics)
    if name is None:
        return
    newest_checkpoint = newest_checkpoint()
    where = (f"the newest checkpoint, step {newest_checkpoint} in {checkpoint_dir}, is finite: fix the cause "
             f"(e.g. a lower --config.optim.lr) and re-run to resume from it: {resume_command()}"
             if newest_checkpoint is not None else "no checkpoint was written before it; start again with a fix "
             "(e.g. a lower --config.optim.lr)")
    values = ", ".join(f"{k}={metrics[k]:.4g}" for k in GUARDED if k in metrics)
    raise Diverged(f"training diverged at step {step}: {name} is {metrics[name]} ({values}); {where}")

"""The divergence guard: a run whose loss, gradients or parameters stop being finite, or whose
parameters explode while still finite, stops at once.

As big_vision does, the step's metrics are checked whenever they reach the host: at every log step
and before every checkpoint. `l2_params` is the norm of the state about to be saved, so a checkpoint
is written only if that state passed: the newest checkpoint on disk is always a good one to resume
from. Every process sees the same (global) metrics, so all stop at the same step.

A finite explosion: too high a learning rate makes weight decay multiply the parameters by a large
negative factor each step; ‖θ‖ grows by orders of magnitude and the loss sits at chance long before
anything is NaN. So ‖θ‖ is also held to `train.max_param_growth` times the smallest norm this run has
seen (from the state it started or resumed with); healthy runs — training from scratch included —
stay within a few times that (BENCHMARKS.md has the recipes' figures).
"""

from __future__ import annotations

import math
import shlex
import sys

GUARDED = ("loss", "grad_norm", "logit_scale", "l2_params", "l2_updates")


class Diverged(RuntimeError):
    """The run stopped because a guarded metric is NaN or infinite, or the parameters exploded."""


def first_non_finite(metrics: dict) -> str | None:
    return next((name for name in GUARDED if name in metrics and not math.isfinite(metrics[name])), None)


def resume_command() -> str:
    """The command line this process was started with, to re-run it after a fix."""
    return " ".join(["python -m georsclip_jax.main", *map(shlex.quote, sys.argv[1:])])


class Guard:
    """Checks each step's metrics as they reach the host; `initial_l2_params` is ‖θ‖ of the state the
    run starts (or resumes) from, `max_param_growth` 0 turns the explosion check off."""

    def __init__(self, initial_l2_params: float, max_param_growth: float, newest_checkpoint, checkpoint_dir: str):
        self.smallest, self.max_growth = initial_l2_params, max_param_growth
        self.newest_checkpoint, self.checkpoint_dir = newest_checkpoint, checkpoint_dir

    def check(self, step: int, metrics: dict) -> None:
        """Raises Diverged naming the step, what went wrong and how to resume."""
        name = first_non_finite(metrics)
        if name is not None:
            raise Diverged(f"training diverged at step {step}: {name} is {metrics[name]} ({self._values(metrics)}); "
                           f"{self._where('finite')}")
        norm = metrics.get("l2_params")
        if norm is None:
            return
        if self.max_growth and norm > self.max_growth * self.smallest:
            raise Diverged(f"training exploded at step {step}: l2_params is {norm:.4g}, {norm / self.smallest:.3g} "
                           f"times the smallest this run has seen ({self.smallest:.4g}; the limit is "
                           f"config.train.max_param_growth={self.max_growth:g}; {self._values(metrics)}); "
                           f"{self._where('from before the explosion')}")
        self.smallest = min(self.smallest, norm)

    @staticmethod
    def _values(metrics: dict) -> str:
        return ", ".join(f"{k}={metrics[k]:.4g}" for k in GUARDED if k in metrics)

    def _where(self, good: str) -> str:
        """The way back. `newest_checkpoint()` is asked only now (listing a bucket at every log step would cost)."""
        newest = self.newest_checkpoint()
        if newest is None:
            return "no checkpoint was written before it; start again with a fix (e.g. a lower --config.optim.lr)"
        return (f"the newest checkpoint, step {newest} in {self.checkpoint_dir}, is {good}: fix the cause "
                f"(e.g. a lower --config.optim.lr) and re-run to resume from it: {resume_command()}")

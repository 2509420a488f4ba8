"""A profiler window over training steps, and the data-wait / step-time split of every log interval.

`config.train.profile_steps = (start, stop)` traces steps start..stop-1 with `jax.profiler` into the
run's TensorBoard folder (TensorBoard's profile plugin / XProf read it; process 0 traces its host).
Each step carries a `StepTraceAnnotation`, so the trace viewer shows step boundaries, as in flax's
examples and big_vision.
"""

from __future__ import annotations

import contextlib
import time

import jax


class ProfileWindow:
    def __init__(self, steps, logdir: str, enabled: bool = True):
        self.start, self.stop = (int(s) for s in steps)
        self.logdir, self.enabled = logdir, enabled and self.stop > self.start
        self.active = self.done = False

    def before(self, step: int) -> None:
        """Starts the trace at the window's first step (or the first step a resumed run reaches in it)."""
        if self.enabled and not (self.active or self.done) and self.start <= step < self.stop:
            jax.profiler.start_trace(self.logdir)
            self.active = True

    def after(self, step: int, state) -> None:
        """Ends it once step stop-1 has run on the device."""
        if self.active and step + 1 >= self.stop:
            jax.block_until_ready(state)
            self.close()

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active, self.done = False, True


class IntervalTimer:
    """Wall time of a log interval split into waiting for the input pipeline and everything else (the
    step: dispatch and device work, which the host waits for when it fetches the metrics). Time spent
    in periodic evaluations is left out of both. The steps of an interval are counted, not inferred
    from the step number: a resumed run's first interval starts wherever the checkpoint was."""

    def __init__(self):
        self.tick, self.waited, self.excluded, self.steps = time.perf_counter(), 0.0, 0.0, 0

    @contextlib.contextmanager
    def excluding(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - start

    def next_batch(self, batches):
        start = time.perf_counter()
        batch = next(batches)
        self.waited += time.perf_counter() - start
        self.steps += 1
        return batch

    def split(self) -> tuple[int, float, dict[str, float]]:
        """The interval's steps and seconds, and per step: seconds waiting for data, seconds of the step,
        and the share of the interval spent waiting for data."""
        now = time.perf_counter()
        steps, elapsed, waited = self.steps, now - self.tick - self.excluded, self.waited
        self.tick, self.waited, self.excluded, self.steps = now, 0.0, 0.0, 0
        return steps, elapsed, {"time/data_wait_s": waited / steps, "time/step_s": (elapsed - waited) / steps,
                                "time/data_wait_fraction": waited / elapsed, "time/interval_steps": steps}

"""A lost peer ends a multi-process run promptly, in one line.

When one process of a multi-host run dies (SIGKILL, a crashed host), the others fail in their next
collective or wait in it for ever; JAX's coordination service only notices the missing heartbeats
after its own timeout (100 s) and then aborts the survivors (SIGABRT: 'Fatal Python error: Aborted',
a core file where enabled). On a pod the scheduler restarts the job once every process has exited,
so the survivors should leave at once, saying why.

Each process runs a watchdog thread that bumps its own counter in the coordination service's
key-value store every second and reads everyone's (one request for all). A peer whose counter has
not moved for `timeout` seconds, or a coordinator that no longer answers, is lost: the process prints
one line naming it and the command that resumes the run, and exits with status 1. A failed
collective in the main thread asks at once (`confirm_lost`): a dead peer's counter stops within
seconds, a live one moves every second. A process that has finished says so, and is not waited for.

Not covered: when process 0 itself dies, the coordination service dies with it, and jaxlib's client
in every other process aborts at once (its error callback cannot be replaced from Python in this JAX
version): they exit within a second, by SIGABRT, with JAX's own log lines.
"""

from __future__ import annotations

import os
import sys
import threading
import time

PREFIX = "georsclip/peers/"
DONE = "done"
INTERVAL = 1.0


class PeerWatch:
    def __init__(self, client, process_index: int, process_count: int, timeout: float, resume: str):
        self.client, self.index, self.count = client, process_index, process_count
        self.timeout, self.resume = timeout, resume
        self._beats = 0
        self._last_change: dict[int, tuple[str | None, float]] = {}  # peer -> (value, when it last changed)
        self._lock = threading.Lock()  # the thread and a failed collective's confirm_lost both look
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-watch", daemon=True)

    def start(self) -> "PeerWatch":
        self._beat()
        self._thread.start()
        return self

    def _beat(self) -> None:
        self._beats += 1
        self.client.key_value_set(f"{PREFIX}{self.index}", str(self._beats), allow_overwrite=True)

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            lost = self.lost(self.timeout)
            if lost and not self._stop.is_set():
                self.exit(lost)
            try:
                self._beat()
            except Exception:  # noqa: BLE001 -- the coordinator is gone: the next look says so
                pass

    def lost(self, stale_after: float) -> str | None:
        """Who is lost, as words, or None: peers whose counter has not moved for `stale_after` seconds."""
        now = time.monotonic()
        try:
            values = dict(self.client.key_value_dir_get(PREFIX))
        except Exception as e:  # noqa: BLE001 -- the service lives in process 0
            return f"process 0 of {self.count} (the coordinator does not answer: {str(e).splitlines()[0][:200]})"
        silent = []
        with self._lock:
            for peer in range(self.count):
                value = values.get(f"{PREFIX}{peer}")
                if peer == self.index or value == DONE:
                    continue
                seen, since = self._last_change.get(peer, (None, now))
                if value != seen:
                    self._last_change[peer] = (value, now)
                elif now - since >= stale_after:
                    silent.append(peer)
        if not silent:
            return None
        names = ", ".join(map(str, silent))
        return f"process{'es' if len(silent) > 1 else ''} {names} of {self.count} (silent for {stale_after:.0f} s)"

    def confirm_lost(self, window: float = 4 * INTERVAL) -> str | None:
        """After a failed collective: watch the peers for `window` seconds; who is lost, or None."""
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            lost = self.lost(window / 2)
            if lost:
                return lost
            time.sleep(INTERVAL / 4)
        return None

    def exit(self, lost: str) -> None:
        """One line, status 1, at once: no traceback, no wait for the peers at interpreter exit."""
        sys.stderr.write(f"error: lost {lost}: the run cannot go on without it; once every host is back, "
                         f"re-run the same command on each to resume from the newest checkpoint: {self.resume}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)

    def finish(self) -> None:
        """This process is done: stop watching, and tell the others not to wait for its counter."""
        self._stop.set()
        try:
            self.client.key_value_set(f"{PREFIX}{self.index}", DONE, allow_overwrite=True)
        except Exception:  # noqa: BLE001 -- a peer that cannot be told has its own watchdog
            pass


def watch_peers(timeout: float, resume: str) -> PeerWatch | None:
    """A started watchdog in a multi-process run (after jax.distributed.initialize); None otherwise."""
    import jax
    from jax._src import distributed

    if jax.process_count() == 1 or distributed.global_state.client is None:
        return None
    return PeerWatch(distributed.global_state.client, jax.process_index(), jax.process_count(), timeout,
                     resume).start()

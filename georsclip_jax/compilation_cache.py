"""JAX's persistent compilation cache for runs: a restart (a preemption, a resume, the same config
run again) loads its compiled programs instead of compiling them again — ViT-H/14's train step takes
74–300 s to compile on a pod (BENCHMARKS.md), paid on every restart without it.

`config.train.compilation_cache`:
  ""      JAX's own cache folder if one is configured (JAX_COMPILATION_CACHE_DIR or
          jax_compilation_cache_dir), else WORKDIR/compilation_cache (gs:// workdirs included);
  "none"  no persistent cache;
  a path  that folder (local or gs://), e.g. one shared by every run of a project.

JAX keys each entry by the program, the devices, the compile options and the JAX/XLA versions, so a
changed config, mesh or release compiles afresh; process 0 writes entries, every process reads them.
Programs that compile in under `jax_persistent_cache_min_compile_time_secs` (JAX's default: 1 s) are
not stored — the train and eval steps of any real model are.
"""

from __future__ import annotations

import jax

from georsclip_jax import storage

OFF = "none"
HITS = "/jax/compilation_cache/cache_hits"


_set_here: set[str] = set()  # folders enable() chose, not the user's own JAX setting


def cache_dir(setting: str, workdir: str, configured: str | None) -> str | None:
    """The folder a run's compiled programs go to (`configured`: JAX's own setting), or None."""
    if setting == OFF:
        return None
    if setting:
        return storage.resolve(setting)
    return configured or storage.join(storage.resolve(workdir), "compilation_cache")


def enable(setting: str, workdir: str) -> str | None:
    """Point JAX's persistent cache at the run's folder (before the run compiles anything it should
    keep); returns the folder, or None when the cache is off."""
    from jax.experimental.compilation_cache import compilation_cache

    current = jax.config.jax_compilation_cache_dir
    path = cache_dir(setting, workdir, None if current in _set_here else current)
    if path != current:
        compilation_cache.reset_cache()  # JAX opens its cache once per process, at the first compile
        jax.config.update("jax_compilation_cache_dir", path)
        if path:
            _set_here.add(path)
    jax.config.update("jax_enable_compilation_cache", path is not None)
    return path


class CacheHits:
    """Counts the programs JAX loaded from the persistent cache while the context is open (e.g. whether
    a restart's train step was compiled or loaded)."""

    def __enter__(self) -> "CacheHits":
        self.count = 0
        jax.monitoring.register_event_listener(self._event)
        return self

    def _event(self, event: str, **kwargs) -> None:
        if event == HITS:
            self.count += 1

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_listener(self._event)

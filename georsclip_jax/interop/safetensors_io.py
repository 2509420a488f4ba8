"""safetensors files through the `safetensors` library's NumPy API (no torch; bfloat16 via ml_dtypes).

The library validates the header (offsets inside the file, no overlaps, byte ranges that match shape
and dtype) before any tensor is read; its errors are re-raised as one `CheckpointError` naming the
file. `names` reads a subset lazily from the memory map, so a host need not hold a whole ViT-bigG to
take part of it. Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

from georsclip_jax.interop.errors import CheckpointError


def load(path: str | Path, names: Iterable[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Returns (tensors, metadata): every tensor, or only `names`."""
    path = Path(path)
    try:
        with safetensors.safe_open(path, framework="numpy") as f:
            keys = list(f.keys()) if names is None else list(names)
            missing = sorted(set(keys) - set(f.keys()))
            if missing:
                raise CheckpointError(f"{path}: no tensor named {missing[:5]}")
            return {k: _canonical(f.get_tensor(k)) for k in keys}, dict(f.metadata() or {})
    except (CheckpointError, FileNotFoundError):
        raise
    except (safetensors.SafetensorError, TypeError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file: {e} (truncated or corrupt?)") from None


def _canonical(array: np.ndarray) -> np.ndarray:
    """Any nonzero byte of a BOOL tensor is True (as torch reads it); NumPy wants exactly 0 or 1."""
    return array.view(np.uint8) != 0 if array.dtype == np.bool_ else array


def save(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    safetensors.numpy.save_file({k: np.asarray(v, order="C") for k, v in tensors.items()}, tmp, metadata=metadata)
    os.replace(tmp, path)

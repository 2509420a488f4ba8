"""OpenAI's released `.pt` files are TorchScript archives; read their weights without torch.

Their `state_dict()` names equal open_clip's (plus `input_resolution`, `context_length`,
`vocab_size`, dropped later). Some tensors are fp16 and are up-cast to float32 on load. The
activation is read from the archive's own TorchScript code: QuickGELU multiplies by 1.702.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from georsclip_jax.interop import torch_pickle
from georsclip_jax.interop.errors import CheckpointError


def is_torchscript(path: str | Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") and n.count("/") == 1 for n in zf.namelist())
    except torch_pickle.ZIP_ERRORS:
        return False


def activation_from_code(path: str | Path) -> str:
    """'quick_gelu' if the archive's code contains QuickGELU's 1.702 factor, else 'gelu'."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            code = b"".join(torch_pickle.read_record(zf, n, path) for n in zf.namelist()
                            if "/code/" in n and n.endswith(".py"))
    except CheckpointError:
        raise
    except torch_pickle.ZIP_ERRORS as e:
        raise CheckpointError(f"{path}: unreadable TorchScript code ({e})") from None
    return "quick_gelu" if b"1.702" in code else "gelu"


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    root = torch_pickle.load(path)
    if not isinstance(root, torch_pickle.ScriptObject):
        raise CheckpointError(f"{path}: TorchScript archive without a module object")
    return torch_pickle.script_state_dict(root)

"""Read PyTorch `.pt` / `.bin` files and TorchScript archives without torch and without running them.

A torch file is a zip: `<root>/data.pkl` (a pickle whose tensors point at storages by persistent id)
and `<root>/data/<key>` (raw little-endian storage bytes). The unpickler below resolves only an
allow-list of globals: torch's tensor-rebuild functions, storage types and plain containers. Any
other global (`os.system`, `builtins.eval`, ...) is refused before anything is called, so a crafted
file cannot execute code. TorchScript module classes (`__torch__.*`) are admitted only when reading a
TorchScript archive, and only as inert attribute bags.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The file references a global outside the allow-list; nothing from it was executed."""


STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class ScriptObject:
    """Attributes of a TorchScript module object (`__torch__.*`), kept as a plain dict.

    The unpickler creates instances without calling __init__, then passes the state here.
    """

    class_name = "ScriptObject"

    def __setstate__(self, state):
        self.attributes: dict[str, Any] = dict(state) if isinstance(state, dict) else {}


def _script_class(qualified_name: str):
    return type(qualified_name, (ScriptObject,), {"class_name": qualified_name})


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not size:
        return np.array(storage[storage_offset])
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride), writeable=False
    )
    # A contiguous tensor stays a read-only view of its storage bytes: converting a checkpoint then
    # holds each weight once, not twice.
    return view if view.flags.c_contiguous else np.array(view)


def _rebuild_parameter(data, *_ignored):
    return data


def _rebuild_parameter_with_state(data, *_ignored):
    return data


class _TorchSize(tuple):
    pass


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): _TorchSize,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "tuple"): tuple,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    # TorchScript's typed containers are plain lists/values with a type tag.
    **{("torch.jit._pickle", f"build_{kind}list"): list for kind in ("int", "double", "bool", "tensor")},
    ("torch.jit._pickle", "restore_type_tag"): lambda value, _type: value,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage, *, where: str, script: bool):
        super().__init__(file)
        self._load_storage = load_storage
        self._where = where
        self._script = script

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if self._script and module.startswith("__torch__"):
            return _script_class(f"{module}.{name}")
        raise UnsafePickleError(
            f"{self._where}: refusing to load: the pickle references '{module}.{name}', which is not a tensor "
            "or container type. Loading it could execute code, so nothing was run."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UnsafePickleError(f"{self._where}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, _numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"{self._where}: storage of unknown type {storage_type!r}")
        return self._load_storage(str(key), storage_type.dtype)


def _zip_root(zf: zipfile.ZipFile, path: Path) -> str:
    names = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if not names:
        raise ValueError(f"{path}: not a PyTorch checkpoint (zip without <root>/data.pkl)")
    return names[0].split("/")[0]


def load(path: str | Path) -> Any:
    """Load a torch-saved object (state dict, training checkpoint, TorchScript archive) as NumPy arrays.

    TorchScript archives come back as `ScriptObject` trees; see `script_state_dict`.
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(16)
        if head[:1] == b"\x80":
            raise ValueError(
                f"{path}: legacy (pre torch 1.6) serialization or a bare pickle; re-save it with a recent "
                "torch.save, or use safetensors"
            ) from None
        raise ValueError(f"{path}: not a PyTorch checkpoint, or the file is truncated (no zip directory found)") from None
    with zf:
        root = _zip_root(zf, path)
        byteorder = zf.read(f"{root}/byteorder").decode() if f"{root}/byteorder" in zf.namelist() else "little"
        if byteorder != "little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        script = f"{root}/constants.pkl" in zf.namelist()
        storages: dict[str, np.ndarray] = {}

        def load_storage(key: str, dtype: np.dtype) -> np.ndarray:
            if key not in storages:
                member = f"{root}/data/{key}"
                try:
                    raw = zf.read(member)
                except KeyError:
                    raise ValueError(f"{path}: storage '{member}' is missing (truncated file?)") from None
                except (zipfile.BadZipFile, EOFError, OSError) as e:
                    raise ValueError(f"{path}: storage '{member}' is corrupt or truncated ({e})") from None
                storages[key] = np.frombuffer(raw, dtype=dtype)
            return storages[key]

        try:
            with zf.open(f"{root}/data.pkl") as f:
                return _RestrictedUnpickler(f, load_storage, where=str(path), script=script).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: corrupt or truncated pickle data ({e})") from None


def script_state_dict(obj: ScriptObject, prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten a TorchScript module tree into `state_dict()`-style dotted names (tensor attributes only)."""
    out: dict[str, np.ndarray] = {}
    for name, value in getattr(obj, "attributes", {}).items():
        if isinstance(value, ScriptObject):
            out.update(script_state_dict(value, f"{prefix}{name}."))
        elif isinstance(value, np.ndarray):
            out[f"{prefix}{name}"] = value
    return out

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
import contextlib
import dataclasses
import math
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import ml_dtypes
import numpy as np

from georsclip_jax.interop.errors import CheckpointError


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
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


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class _StorageType:
    """A storage class named in the pickle. Frozen and slotted: a pickle's BUILD opcode cannot swap in
    another dtype (an object dtype over raw bytes would turn file bytes into pointers)."""

    name: str


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class _Storage:
    """A storage record as the pickle declares it; its bytes are read only when a tensor that is kept
    (see `load`'s `select`) is viewed, so an optimizer state beside the weights is never read."""

    key: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class _PendingTensor:
    """A tensor as the pickle declares it. Viewed only after unpickling, once its key in the loaded tree
    is known, so a bad declaration is reported with the name a user recognises."""

    storage: Any
    offset: Any
    size: Any
    stride: Any


class ScriptObject:
    """Attributes of a TorchScript module object (`__torch__.*`), kept as a plain dict.

    The unpickler creates instances without calling __init__, then passes the state here.
    """

    class_name = "ScriptObject"

    def __setstate__(self, state):
        self.attributes: dict[str, Any] = dict(state) if isinstance(state, dict) else {}


def _script_class(qualified_name: str):
    return type(qualified_name, (ScriptObject,), {"class_name": qualified_name})


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """torch._utils._rebuild_tensor_v2's signature: a stream that passes other arguments is damaged."""
    if stride == () and isinstance(size, tuple) and all(map(_is_index, size)):  # torch: no strides = contiguous
        stride = tuple(math.prod(size[i + 1:]) for i in range(len(size)))
    return _PendingTensor(storage, storage_offset, size, stride)


def _is_index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_problem(t: _PendingTensor) -> str | None:
    """Why the declared view would read outside its storage (or cannot be a tensor), else None."""
    if not isinstance(t.storage, _Storage):
        return f"its storage is a {type(t.storage).__name__}, not a storage record"
    if not isinstance(t.size, tuple) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n < 2**63 for n in (t.offset, *t.size)):
        return f"offset {t.offset!r} or sizes {t.size!r} are not 64-bit integers"
    if not all(map(_is_index, (t.offset, *t.size))):
        return f"offset {t.offset} or sizes {t.size} are negative"
    if not isinstance(t.stride, tuple) or len(t.stride) != len(t.size) or \
            not all(isinstance(s, int) and -2**63 <= s < 2**63 for s in t.stride):
        return f"strides {t.stride!r} are not 64-bit integers, one per size {t.size}"
    numel, length = math.prod(t.size), t.storage.numel
    if numel == 0:  # nothing is read (as in torch)
        return None
    if any(s < 0 for n, s in zip(t.size, t.stride) if n > 1):  # a size-1 dim never steps
        return f"strides {t.stride} are negative"
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride) if n > 1)
    if last >= length:
        return (f"sizes {t.size} with strides {t.stride} from offset {t.offset} reach element {last}, "
                f"but storage '{t.storage.key}' holds {length}")
    if numel > length:
        return f"declares {numel} elements over a storage of {length} (overlapping views are not supported)"
    return None


def _view(t: _PendingTensor, name: str, where: str, read: Callable[[_Storage], np.ndarray]) -> np.ndarray:
    problem = _tensor_problem(t)
    if problem:
        raise CheckpointError(f"{where}: tensor '{name}': {problem}")
    storage = read(t.storage)
    if math.prod(t.size) == 0:
        return np.zeros(t.size, storage.dtype)
    if storage.dtype == np.bool_:  # any nonzero byte is True to torch; NumPy wants exactly 0 or 1
        storage = storage.view(np.uint8) != 0
    itemsize = storage.dtype.itemsize
    strides = tuple(s * itemsize if n > 1 else 0 for n, s in zip(t.size, t.stride))  # a size-1 dim never steps
    view = np.lib.stride_tricks.as_strided(storage[t.offset:], shape=t.size, strides=strides, writeable=False)
    # A contiguous tensor stays a read-only view of its storage bytes: converting a checkpoint then
    # holds each weight once, not twice.
    return view if view.flags.c_contiguous else np.array(view)


_PLAIN = (int, float, complex, str, bytes, bool, type(None))


def _materialize(obj, name: str, where: str, seen: set[int], read: Callable[[_Storage], np.ndarray]):
    """Replace every pending tensor in the loaded tree by its validated array, naming it by its path.
    Whatever else the tree holds must be plain data: a stray callable or storage means a damaged stream."""
    if isinstance(obj, _PendingTensor):
        return _view(obj, name or "<root>", where, read)
    if isinstance(obj, _PLAIN) or id(obj) in seen:  # a pickle can build cycles
        return obj
    seen.add(id(obj))
    join = (lambda k: f"{name}.{k}" if name else str(k))
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = _materialize(obj[key], join(key), where, seen, read)
    elif isinstance(obj, list):
        obj[:] = [_materialize(v, join(i), where, seen, read) for i, v in enumerate(obj)]
    elif type(obj) is tuple:
        return tuple(_materialize(v, join(i), where, seen, read) for i, v in enumerate(obj))
    elif isinstance(obj, (set, frozenset)) and all(isinstance(v, _PLAIN) for v in obj):
        return obj
    elif isinstance(obj, ScriptObject):
        obj.attributes = _materialize(getattr(obj, "attributes", {}), name, where, seen, read)
    else:
        raise CheckpointError(f"{where}: '{name or '<root>'}' is a {type(obj).__name__}, not data (damaged pickle?)")
    return obj


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): tuple,
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
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._where}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not _is_index(numel):
            raise CheckpointError(f"{self._where}: malformed storage record {pid!r}")
        return self._load_storage(key, np.dtype(STORAGE_DTYPES[storage_type.name]), numel)


def _zip_root(zf: zipfile.ZipFile, path: Path) -> str:
    names = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if not names:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (zip without <root>/data.pkl)")
    return names[0].split("/")[0]


MAX_INFLATED_RECORD = 64 << 20  # TorchScript compresses its code files; nothing larger belongs in one


def _record(zf: zipfile.ZipFile, member: str, path: Path) -> zipfile.ZipInfo:
    """A record's entry, refused before it is read if its declared length exceeds the archive (stored)
    or 64 MiB (compressed: a zip bomb inflates without bound)."""
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise CheckpointError(f"{path}: record '{member}' is missing (truncated file?)") from None
    limit = path.stat().st_size if info.compress_type == zipfile.ZIP_STORED else MAX_INFLATED_RECORD
    if info.file_size > limit:
        raise CheckpointError(f"{path}: record '{member}' declares {info.file_size} bytes, more than {limit}")
    return info


# What zipfile raises on a damaged, truncated or unusual archive. NotImplementedError is among them: it
# is zipfile's answer to a compression method or an encryption it does not support.
ZIP_ERRORS = (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError, zlib.error)


def read_record(zf: zipfile.ZipFile, member: str, path: Path) -> bytes:
    """A record's bytes, read only if `_record` admits it."""
    info = _record(zf, member, path)
    try:
        return zf.read(info)
    except ZIP_ERRORS as e:
        raise CheckpointError(f"{path}: record '{member}' is corrupt or truncated ({e})") from None


def is_tensor(value) -> bool:
    """A tensor in a tree `load` passes to `select` (pending) or returns (an array)."""
    return isinstance(value, (np.ndarray, _PendingTensor))


def load(path: str | Path, select: Callable[[Any], Any] | None = None) -> Any:
    """Load a torch-saved object (state dict, training checkpoint, TorchScript archive) as NumPy arrays.

    select: picks the part to keep from the unpickled tree, before any tensor's bytes are read (e.g. the
    weights of a training checkpoint, not its optimizer state); what it drops is never read.
    Every tensor's offset, sizes and strides are checked against its storage before it is viewed.
    Anything wrong raises `CheckpointError` naming the file (and the tensor). TorchScript archives come
    back as `ScriptObject` trees; see `script_state_dict`.
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except ZIP_ERRORS as e:
        with open(path, "rb") as f:
            head = f.read(16)
        if head[:1] == b"\x80":
            raise CheckpointError(
                f"{path}: legacy (pre torch 1.6) serialization or a bare pickle; re-save it with a recent "
                "torch.save, or use safetensors"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint, or the file is truncated ({e})") from None
    with zf:
        root = _zip_root(zf, path)
        names = set(zf.namelist())
        byteorder = read_record(zf, f"{root}/byteorder", path) if f"{root}/byteorder" in names else b"little"
        if byteorder != b"little":
            raise CheckpointError(f"{path}: byte order {byteorder[:16]!r}: only little-endian checkpoints are supported")
        declared: dict[str, _Storage] = {}
        arrays: dict[str, np.ndarray] = {}

        def declare_storage(key: str, dtype: np.dtype, numel: int) -> _Storage:
            declared.setdefault(key, _Storage(key, dtype, numel))
            if declared[key].dtype != dtype:  # torch would silently use the first type
                raise CheckpointError(f"{path}: storage '{key}' is declared as two dtypes, "
                                      f"{declared[key].dtype} and {dtype}")
            return declared[key]

        def read_storage(storage: _Storage) -> np.ndarray:
            if storage.key not in arrays:
                raw = read_record(zf, f"{root}/data/{storage.key}", path)
                if len(raw) != storage.numel * storage.dtype.itemsize:  # as torch.load checks
                    raise CheckpointError(f"{path}: storage '{storage.key}' is declared as {storage.numel} "
                                          f"{storage.dtype} elements but its record holds {len(raw)} bytes")
                arrays[storage.key] = np.frombuffer(raw, dtype=storage.dtype)
            return arrays[storage.key]

        with _damage_reported(path), zf.open(_record(zf, f"{root}/data.pkl", path)) as f:
            tree = _RestrictedUnpickler(f, declare_storage, where=str(path),
                                        script=f"{root}/constants.pkl" in names).load()
        kept = select(tree) if select else tree  # its own errors (no state dict in it) are its own
        with _damage_reported(path):
            return _materialize(kept, "", str(path), set(), read_storage)


@contextlib.contextmanager
def _damage_reported(path: Path):
    """A corrupt pickle stream can fail in any built-in way: all become one CheckpointError naming the file."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: corrupt or truncated pickle data ({type(e).__name__}: {e})") from None


def script_state_dict(obj: ScriptObject, prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten a TorchScript module tree into `state_dict()`-style dotted names (tensor attributes only)."""
    out: dict[str, np.ndarray] = {}
    for name, value in getattr(obj, "attributes", {}).items():
        if isinstance(value, ScriptObject):
            out.update(script_state_dict(value, f"{prefix}{name}."))
        elif isinstance(value, np.ndarray):
            out[f"{prefix}{name}"] = value
    return out

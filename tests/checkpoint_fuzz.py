"""Fuzzing the checkpoint readers: a seeded corpus of damaged and crafted files, loaded in worker processes.

Built in the parent (which has torch): a training checkpoint, a TorchScript archive and a safetensors
file, then mutations of each -- byte flips in the pickle stream, byte flips anywhere in the file (zip
headers, storage records), truncations, zip entries that lie about their length, crafted tensor
declarations (offsets, sizes, strides, storage lengths, dtypes), crafted safetensors headers, and
pickles that call os.system.

A worker process loads each case with our reader, reports, then with the reference reader (torch.load
with weights_only, torch.jit.load, safetensors) and reports again, one JSON line per phase. An audit
hook stops the worker the moment our reader would run a command or import a module. A worker that
dies is restarted after the case it died on; the phase of its last line says whose reader crashed.

    python tests/checkpoint_fuzz.py --cases 20000 --seed 1   # the long run (benchmarks/ calls this)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import io
import json
import os
import pickle
import random
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

KINDS = ("pt", "script", "safetensors")


@dataclasses.dataclass
class Case:
    path: str
    kind: str
    mutation: str


# --- the corpus (parent side, needs torch) --------------------------------------------------------------


def base_files(directory: Path) -> dict[str, Path]:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    shared = torch.randn(12)
    state = {"visual.proj": torch.randn(3, 4), "ids": torch.arange(12, dtype=torch.int64).reshape(3, 4)[:, 1:],
             "half": torch.randn(5).half(), "bf16": torch.randn(2, 3).bfloat16(), "mask": torch.rand(4) > 0.5,
             "scale": torch.tensor(4.6), "a": shared[2:8].view(2, 3), "b": shared[6:]}
    paths = {"pt": directory / "base.pt", "script": directory / "base_script.pt",
             "safetensors": directory / "base.safetensors"}
    torch.save({"state_dict": state, "epoch": 3, "name": "base"}, paths["pt"])
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))), paths["script"])
    save_file({k: v.contiguous() for k, v in state.items() if k not in ("a", "b")}, paths["safetensors"])
    return paths


def _members(path: Path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(info, zf.read(info)) for info in zf.infolist()]


def _rezip(members, out: Path) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for info, data in members:
            zf.writestr(info.filename, data)


def _flip(data: bytes, rng: random.Random, lo: int = 0, hi: int | None = None) -> bytes:
    out = bytearray(data)
    hi = len(out) if hi is None else hi
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(lo, hi)] = rng.randrange(256)
    return bytes(out)


def _pickle_flip(base: Path, out: Path, rng: random.Random) -> None:
    members = _members(base)
    pickles = [i for i, (info, _) in enumerate(members) if info.filename.endswith(".pkl")]
    i = rng.choice(pickles)
    members[i] = (members[i][0], _flip(members[i][1], rng))
    _rezip(members, out)


def _lying_entry(base: Path, out: Path, rng: random.Random) -> None:
    """Patch the sizes a zip entry declares (central directory and local header) to a random value."""
    data = bytearray(base.read_bytes())
    starts = [i for i in range(len(data) - 4) if data[i:i + 4] == b"PK\x01\x02"]
    entry = rng.choice(starts)
    value = rng.choice([0, 1, rng.randrange(1 << 16), rng.randrange(1 << 32), len(data) * 2])
    field = rng.choice([20, 24])  # compressed size, uncompressed size
    struct.pack_into("<I", data, entry + field, value)
    local = struct.unpack_from("<I", data, entry + 42)[0]
    if local + 26 <= len(data) and data[local:local + 4] == b"PK\x03\x04" and rng.random() < 0.5:
        struct.pack_into("<I", data, local + field - 2, value)
    out.write_bytes(bytes(data))


class _StorageRef:
    def __init__(self, key: str, storage_type, numel: int):
        self.key, self.storage_type, self.numel = key, storage_type, numel


class _TensorDecl:
    """A tensor record with arbitrary declared metadata, pickled as torch.save writes tensors."""

    def __init__(self, storage: _StorageRef, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        import torch

        return torch._utils._rebuild_tensor_v2, (*self.args, False, collections.OrderedDict())


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def _torch_zip(out: Path, payload: bytes, records: dict[str, bytes]) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")
        for key, data in records.items():
            zf.writestr(f"archive/data/{key}", data)
        zf.writestr("archive/version", "3\n")


def _crafted_tensor(out: Path, rng: random.Random) -> None:
    import torch

    storage_types = [(torch.FloatStorage, 4), (torch.HalfStorage, 2), (torch.LongStorage, 8),
                     (torch.BoolStorage, 1), (torch.BFloat16Storage, 2)]
    storage_type, itemsize = rng.choice(storage_types)
    numel = rng.choice([0, 1, 4, 16, rng.randrange(64)])
    length = numel * itemsize if rng.random() < 0.8 else rng.randrange(80)
    record = bytes(rng.randrange(256) for _ in range(length))
    if storage_type is torch.BoolStorage:
        record = bytes(b % 2 for b in record)  # bool storages hold 0/1 only

    def index():
        return rng.choice([0, 1, 2, 3, rng.randrange(20), rng.randrange(1 << 40), 1 << 63, -1, -rng.randrange(9)])

    ndim = rng.randrange(4)
    size = tuple(rng.choice([0, 1, 2, 3, 4, rng.randrange(9)]) if rng.random() < 0.85 else index() for _ in range(ndim))
    stride = list(torch.empty(tuple(max(s, 1) for s in size if 0 <= s < 1 << 20)).stride()) if rng.random() < 0.5 \
        else [index() for _ in range(ndim)]
    stride = tuple((stride + [1] * ndim)[:ndim] if rng.random() < 0.9 else stride[: rng.randrange(ndim + 1)])
    offset = rng.choice([0, 0, 1, rng.randrange(max(numel, 1)), index()])
    storage = _StorageRef("0", storage_type, numel if rng.random() < 0.9 else index())
    tensors = {"visual.proj": _TensorDecl(storage, offset, size, stride)}
    if rng.random() < 0.2:  # the same record declared again with another type
        other, _ = rng.choice(storage_types)
        tensors["twice"] = _TensorDecl(_StorageRef("0", other, numel), 0, (1,), (1,))
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(collections.OrderedDict(tensors))
    _torch_zip(out, buffer.getvalue(), {"0": record})


class _Calls:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def _malicious(out: Path, rng: random.Random, marker: Path) -> None:
    function = rng.choice([os.system, eval, exec, subprocess.getoutput])
    argument = f"open({str(marker)!r}, 'w')" if function in (eval, exec) else f"touch {marker}"
    _torch_zip(out, pickle.dumps({"visual.proj": _Calls(function, argument)}, protocol=rng.choice([2, 4])), {})


def _safetensors_header(out: Path, rng: random.Random) -> None:
    body = bytes(rng.randrange(256) for _ in range(64))

    def offsets():
        return rng.choice([[0, 16], [0, 64], [16, 8], [0, 1 << 40], [-4, 4], [0], "x", None, [0.5, 8]])

    entries = [{"dtype": rng.choice(["F32", "BF16", "I64", "Q9", 7]), "shape": rng.choice([[4], [2, 2], [-1], [], "4", [1 << 40]]),
                "data_offsets": offsets()},
               {"dtype": "F32", "shape": [4]}, "a string", [1, 2], {"__metadata__": {"k": 1}}]
    header = rng.choice([{"visual.proj": rng.choice(entries)}, [1, 2], "text", {"__metadata__": rng.choice([{"a": "b"}, 3])},
                         {"a": entries[0], "b": entries[0]}])
    encoded = json.dumps(header).encode()
    declared = len(encoded) if rng.random() < 0.8 else rng.choice([0, 3, len(encoded) + 9, 1 << 60])
    out.write_bytes(struct.pack("<Q", declared) + encoded + body)


def build_corpus(directory: Path, cases: int, seed: int) -> list[Case]:
    """`cases` files, spread over mutations of the three formats; the same seed gives the same files."""
    rng = random.Random(seed)
    bases = base_files(directory)
    marker = directory / "code-was-run"
    mutations = [("pt", "pickle-flip", 5), ("pt", "byte-flip", 3), ("pt", "truncation", 1), ("pt", "lying-entry", 1),
                 ("pt", "crafted-tensor", 4), ("pt", "malicious", 1), ("script", "pickle-flip", 3),
                 ("script", "byte-flip", 1), ("script", "truncation", 1), ("safetensors", "header-flip", 2),
                 ("safetensors", "byte-flip", 1), ("safetensors", "truncation", 1), ("safetensors", "crafted-header", 2)]
    weighted = [m for m in mutations for _ in range(m[2])]
    corpus = []
    for i in range(cases):
        kind, mutation, _ = weighted[i % len(weighted)]
        base, out = bases[kind], directory / f"case{i:05d}{bases[kind].suffix}"
        data = base.read_bytes()
        if mutation == "pickle-flip":
            _pickle_flip(base, out, rng)
        elif mutation == "byte-flip":
            out.write_bytes(_flip(data, rng))
        elif mutation == "truncation":
            out.write_bytes(data[: rng.randrange(len(data))])
        elif mutation == "lying-entry":
            _lying_entry(base, out, rng)
        elif mutation == "crafted-tensor":
            _crafted_tensor(out, rng)
        elif mutation == "malicious":
            _malicious(out, rng, marker)
        elif mutation == "header-flip":
            out.write_bytes(_flip(data, rng, 8, 8 + struct.unpack("<Q", data[:8])[0]))
        elif mutation == "crafted-header":
            _safetensors_header(out, rng)
        corpus.append(Case(str(out), kind, mutation))
    return corpus


# --- the worker ----------------------------------------------------------------------------------------


def _digest(tree) -> dict[str, list]:
    """{dotted path: [dtype, shape, sha256 of the bytes]} for every array or tensor in a loaded tree."""
    out: dict[str, list] = {}

    def walk(obj, name):
        if hasattr(obj, "detach"):  # a torch tensor: its bytes, as ours holds them
            import torch

            flat = obj.detach().reshape(-1)
            raw = torch.empty(flat.numel(), dtype=flat.dtype).copy_(flat).view(torch.uint8).numpy().tobytes()
            out[name] = [str(obj.dtype).removeprefix("torch."), list(obj.shape), hashlib.sha256(raw).hexdigest()]
        elif isinstance(obj, np.ndarray):
            raw = np.ascontiguousarray(obj).tobytes()
            out[name] = [str(obj.dtype), list(obj.shape), hashlib.sha256(raw).hexdigest()]
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{name}.{k}" if name else str(k))

    walk(tree, "")
    return out


def _ours(case: Case):
    from georsclip_jax.interop import openai_jit, safetensors_io, torch_pickle

    if os.environ.get("FUZZ_UNSAFE_READER"):  # checks the guard itself: plain pickle runs what it is told
        return pickle.loads(zipfile.ZipFile(case.path).read("archive/data.pkl"))
    if case.kind == "pt":
        return torch_pickle.load(case.path)
    if case.kind == "script":
        openai_jit.activation_from_code(case.path)  # reads the archive's (compressed) code records
        return openai_jit.load_state_dict(case.path)
    return safetensors_io.load(case.path)[0]


def _reference(case: Case):
    import torch
    from safetensors.torch import load_file

    if case.kind == "pt":
        return torch.load(case.path, weights_only=True)
    if case.kind == "script":
        return torch.jit.load(case.path).state_dict()
    return load_file(case.path)


class _EffectGuard:
    """While armed, running a command, deleting a file or importing a new module ends the worker (97)."""

    WATCHED = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "subprocess.Popen", "import",
               "ctypes.dlopen", "os.remove", "exec", "compile")

    def __init__(self):
        self.armed = False
        sys.addaudithook(self._hook)

    def _hook(self, event, args):
        if self.armed and event.startswith(self.WATCHED) and not (event == "import" and args[0] in sys.modules):
            os.write(2, f"forbidden event while our reader ran: {event} {args!r:.200}\n".encode())
            os._exit(97)


def worker(cases: list[Case]) -> None:
    import torch  # noqa: F401 -- every reader is imported before the guard is armed
    from safetensors.torch import load_file  # noqa: F401

    from georsclip_jax.interop import openai_jit, safetensors_io, torch_pickle  # noqa: F401
    from georsclip_jax.interop.errors import CheckpointError

    guard = _EffectGuard()
    for i, case in enumerate(cases):
        guard.armed = True
        try:
            line = {"ok": _digest(_ours(case))}
        except CheckpointError as e:
            line = {"error": "CheckpointError", "message": str(e)}
        except Exception as e:  # noqa: BLE001 -- anything else is the finding
            line = {"error": type(e).__name__, "message": str(e)[:300]}
        guard.armed = False
        print(json.dumps({"case": i, "phase": "ours", **line}), flush=True)
        try:
            line = {"ok": _digest(_reference(case))}
        except Exception as e:  # noqa: BLE001
            line = {"error": type(e).__name__, "message": str(e)[:300]}
        print(json.dumps({"case": i, "phase": "reference", **line}), flush=True)


def run_workers(corpus: list[Case], timeout: float = 600, env: dict | None = None
                ) -> tuple[dict[int, dict], dict[int, dict], list[str]]:
    """(ours, reference, crashes of our reader) per case index; the worker restarts after a crash."""
    ours, reference, crashes = {}, {}, []
    start = 0
    while start < len(corpus):
        spec = json.dumps([dataclasses.asdict(c) for c in corpus[start:]])
        proc = subprocess.run([sys.executable, __file__, "--worker"], input=spec, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), **(env or {})})
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        for line in lines:
            (ours if line["phase"] == "ours" else reference)[start + line["case"]] = line
        if proc.returncode == 0:
            break
        last = lines[-1] if lines else {"case": -1, "phase": "reference"}
        died_on = start + last["case"] + (1 if last["phase"] == "reference" else 0)
        if last["phase"] == "reference" or not lines:  # our reader was running when the worker died
            crashes.append(f"{corpus[died_on]} (status {proc.returncode}): {proc.stderr[-500:]}")
        start = died_on + 1
    return ours, reference, crashes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cases", type=int, default=20000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", default="/tmp/checkpoint_fuzz")
    args = p.parse_args()
    if args.worker:
        worker([Case(**c) for c in json.loads(sys.stdin.read())])
        return
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    result = fuzz(directory, args.cases, args.seed, timeout=3600)
    errors = collections.Counter(line.get("error") for line in result["ours"].values())
    print(json.dumps({"cases": args.cases, "seed": args.seed, "crashes": result["crashes"],
                      "wrong": [f"{c.path} {c.mutation}: {why}" for c, why in result["wrong"]],
                      "our_errors": dict(errors), "code_was_run": result["code_was_run"],
                      "outcomes": {" / ".join(k): v for k, v in sorted(result["outcomes"].items())}}, indent=1))


STRICTER_THAN_TORCH = ("overlapping views", "elements but its record holds", "declared as two dtypes", "are negative",
                       "unsupported pickle protocol")


def zip_damaged(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.testzip() is not None
    except Exception:  # noqa: BLE001 -- whatever zipfile raises, the archive is damaged
        return True


def wrong_results(corpus, ours, reference, base) -> list:
    """Cases where our reader loaded something other than the correct result, or refused without a
    stated reason. Correct: the reference reader's result where it loads the file, else the undamaged
    base file's tensors, under their names or others (the damage hit a part we do not read, or a name,
    which create_model then reports as missing/unexpected keys). Ours may refuse what torch loads only for a damaged
    zip (Python's zipfile finds a bad directory or CRC; torch checks neither and returns damaged weights),
    overlapping views, one storage declared as two dtypes (torch silently uses the first), negative sizes
    (torch accepts them beside a zero size), a pickle protocol byte no Python knows (torch ignores it),
    and, for TorchScript, a declared element count that disagrees with the record (torch.load checks it,
    jit does not)."""
    wrong = []
    for i, case in enumerate(corpus):
        mine, ref = ours[i], reference.get(i, {})
        if "ok" in mine and ("ok" in ref and mine["ok"] != ref["ok"] or "ok" not in ref and
                             sorted(mine["ok"].values()) != sorted(base[case.kind].values())):
            wrong.append((case, "loaded something else"))
        elif "ok" not in mine and "ok" in ref and not (
                zip_damaged(case.path) or any(reason in mine["message"] for reason in STRICTER_THAN_TORCH)):
            wrong.append((case, mine["message"]))
    return wrong


def outcomes(corpus, ours, reference) -> collections.Counter:
    return collections.Counter(
        (case.mutation, "ours " + ("ok" if "ok" in ours[i] else ours[i].get("error")),
         "reference " + ("ok" if "ok" in reference.get(i, {}) else reference.get(i, {}).get("error", "crashed")))
        for i, case in enumerate(corpus))


def base_cases(directory: Path) -> list[Case]:
    return [Case(str(directory / name), kind, "none")
            for name, kind in zip(("base.pt", "base_script.pt", "base.safetensors"), KINDS)]


def fuzz(directory: Path, cases: int, seed: int, timeout: float = 600) -> dict:
    """Build the corpus, load every case; everything the test asserts, as data."""
    corpus = build_corpus(directory, cases, seed)
    ours, reference, crashes = run_workers(corpus + base_cases(directory), timeout=timeout)
    base = {kind: reference[len(corpus) + k].get("ok") for k, kind in enumerate(KINDS)}
    return {"corpus": corpus, "ours": ours, "reference": reference, "crashes": crashes, "base": base,
            "wrong": wrong_results(corpus, ours, reference, base), "outcomes": outcomes(corpus, ours, reference),
            "code_was_run": (directory / "code-was-run").exists()}


if __name__ == "__main__":
    main()

"""Untrusted files: crafted pickles are refused without running; bad files give one clear error."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import open_clip
import pytest
import torch

import georsclip_jax as gj
from georsclip_jax.interop import safetensors_io, torch_pickle
from georsclip_jax.interop.errors import CheckpointError


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _torch_zip(path, payload: bytes):
    """A file laid out exactly like torch.save's zip, with an arbitrary data.pkl."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"visual.proj": _RunsACommand(marker)}, protocol=2)
    _torch_zip(tmp_path / "evil.pt", payload)
    with pytest.raises(torch_pickle.UnsafePickleError, match=r"posix\.system|os\.system"):
        gj.create_model("tiny", tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("subprocess", "Popen"), ("torch", "load")])
def test_any_callable_outside_the_allow_list_is_refused(tmp_path, target):
    module, name = target
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x04\x00\x00\x00argsq\x00\x85q\x01Rq\x02."
    _torch_zip(tmp_path / "evil.pt", payload)
    with pytest.raises(torch_pickle.UnsafePickleError, match=f"{module}.{name}"):
        torch_pickle.load(tmp_path / "evil.pt")


def test_real_torch_files_load_without_torch_code(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(6, dtype=torch.int64).reshape(2, 3)[:, 1:],
               "c": torch.randn(5).half(), "d": torch.randn(2, 2).bfloat16(), "s": torch.tensor(2.5)}
    torch.save({"state_dict": tensors, "epoch": 3, "name": "x"}, tmp_path / "ck.pt")
    loaded = torch_pickle.load(tmp_path / "ck.pt")["state_dict"]
    for key, value in tensors.items():
        np.testing.assert_array_equal(np.asarray(loaded[key], np.float64), value.double().numpy(), err_msg=key)
    assert loaded["s"].shape == ()


def test_truncated_torch_file_gives_one_clear_error(tmp_path):
    torch.manual_seed(0)
    ref = open_clip.model.CLIP(**gj.get_model_config("tiny").to_open_clip_json())
    torch.save(ref.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.pt.*truncated"):
        gj.create_model("tiny", tmp_path / "cut.pt")


def test_truncated_safetensors_names_file_and_tensor(tmp_path):
    safetensors_io.save(tmp_path / "w.safetensors", {"visual.proj": np.ones((64, 32), np.float32)})
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: .*not fully covered.*truncated"):
        gj.create_model("tiny", tmp_path / "cut.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(data[:5])
    with pytest.raises(ValueError, match="tiny.safetensors"):
        gj.create_model("tiny", tmp_path / "tiny.safetensors")


def test_wrong_architecture_lists_every_problem(tmp_path):
    torch.manual_seed(0)
    ref = open_clip.model.CLIP(**gj.get_model_config("tiny").to_open_clip_json())
    sd = ref.state_dict()
    sd.pop("ln_final.weight")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "tiny.pt")
    with pytest.raises(ValueError) as err:
        gj.create_model("tiny-h80", tmp_path / "tiny.pt")
    message = str(err.value)
    assert "tiny.pt does not match the model" in message
    assert "missing (1): ln_final.weight" in message
    assert "unexpected" in message and "extra.weight" in message
    assert "shape mismatch" in message and "visual.proj: file (64, 32) vs model (160, 40)" in message
    assert "visual.conv1.weight: file (64, 3, 8, 8) vs model (160, 3, 16, 16)" in message
    assert "Traceback" not in message


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"hello, this is not a checkpoint")
    with pytest.raises(ValueError, match=r"x\.pt: not a PyTorch checkpoint"):
        gj.create_model("tiny", tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        gj.create_model("tiny", tmp_path / "nope.pt")


def test_safetensors_reader_and_writer_agree_with_the_reference_library(tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = {"f32": torch.randn(3, 5), "f16": torch.randn(4).half(), "bf16": torch.randn(2, 3).bfloat16(),
               "i64": torch.arange(7), "scalar": torch.tensor(4.6052)}
    save_file(tensors, tmp_path / "ref.safetensors")
    ours, _ = safetensors_io.load(tmp_path / "ref.safetensors")
    for key, value in tensors.items():
        np.testing.assert_array_equal(np.asarray(ours[key], np.float64), value.double().numpy(), err_msg=key)
    safetensors_io.save(tmp_path / "ours.safetensors", {k: np.asarray(v, np.float32) for k, v in ours.items()})
    back = load_file(tmp_path / "ours.safetensors")
    assert back["scalar"].shape == torch.Size([]) and back.keys() == tensors.keys()
    torch.testing.assert_close(back["bf16"], tensors["bf16"].float(), rtol=0, atol=0)


def test_safetensors_reads_a_subset_lazily_and_names_what_is_missing(tmp_path):
    tensors = {"visual.proj": np.arange(6, dtype=np.float32).reshape(2, 3), "text_projection": np.ones((3, 2), np.float32)}
    safetensors_io.save(tmp_path / "w.safetensors", tensors, {"format": "georsclip_jax"})
    subset, metadata = safetensors_io.load(tmp_path / "w.safetensors", names=["visual.proj"])
    assert list(subset) == ["visual.proj"] and metadata == {"format": "georsclip_jax"}
    np.testing.assert_array_equal(subset["visual.proj"], tensors["visual.proj"])
    with pytest.raises(CheckpointError, match=r"w\.safetensors: no tensor named \['nope'\]"):
        safetensors_io.load(tmp_path / "w.safetensors", names=["nope"])

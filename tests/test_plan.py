"""Planning a pod run from this CPU machine: `main --compile_only --topology T` compiles the run's own
train step for a TPU topology with libtpu (no TPU here) and reports per-chip memory and FLOPs.

The FLOPs per chip equal a hand count of the step's matmuls and the CPU compile of the same per-chip
work, scanned blocks included; every memory field is there; the input rate each host needs at 50 % MFU
and the decoding cores it takes are printed; a step too big for the chip says so; bad
topologies and a missing libtpu stop in one line. (XLA's own counts for TPU and CPU on a matmul-bound
ViT-B/32: `benchmarks/bench_plan.py --xla-counts`.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runs import ROOT, command, env

pytest.importorskip("libtpu", reason="libtpu (the TPU compiler) has no wheel for this platform")

FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
          "hbm_total_bytes", "hbm_capacity_bytes", "flops_per_step_per_device", "xla_flops_per_step_per_device",
          "compile_seconds", "devices", "processes", "device_kind")


def plan(workdir, *overrides, topology=None, devices=1, config="configs/demo.py:quick", status=0):
    """(report, stdout, stderr) of the planning CLI, which exits `status` (1: does not fit)."""
    extra = ["--compile_only", *(["--topology", topology] if topology else [])]
    result = subprocess.run(command(workdir, *overrides, *extra, config=config), env=env(devices),
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == status, result.stderr[-3000:]
    name = f"plan-{(topology or 'local').replace(':', '_')}.json"
    return json.loads((workdir / name).read_text()), result.stdout, result.stderr


def clip_train_flops(B, S, p, Wv, Lv, Mv, Wt, Lt, Mt, D, T=77) -> int:
    """Matmul FLOPs of one CLIP training step (forward + backward) by hand: patch conv, per block the
    q|k|v, output and MLP projections and the two attention products, the projections and the B x B
    logits; the backward pass costs each product twice more, except the conv (pixels need no grad)."""
    def block(t, w, m):
        return 2 * B * t * w * (3 * w + w + 2 * m) + 2 * 2 * B * t * t * w
    grid = (S // p) ** 2
    conv = 2 * B * grid * 3 * p * p * Wv
    forward = conv + Lv * block(grid + 1, Wv, Mv) + Lt * block(T, Wt, Mt) + 2 * B * (Wv + Wt) * D + 2 * B * B * D
    return 3 * forward - conv


TINY = dict(S=32, p=8, Wv=64, Lv=2, Mv=256, Wt=48, Lt=2, Mt=192, D=32)  # tiny: 32 px, patch 8, widths 64 / 48


def test_the_tiny_step_compiles_for_a_multi_host_v5e_slice_with_the_flops_of_the_same_work_on_cpu(tmp_path):
    tpu, out, err = plan(tmp_path / "tpu", "--config.model.dtype=bfloat16", topology="v5e:4x4")
    assert all(field in tpu for field in FIELDS), set(FIELDS) - set(tpu)
    assert all(tpu[f] >= 0 for f in FIELDS if f.endswith("bytes")) and tpu["temp_size_in_bytes"] > 0
    assert (tpu["devices"], tpu["processes"], tpu["device_kind"]) == (16, 4, "TPU v5 lite")  # 4 hosts of 4 chips
    assert tpu["hbm_capacity_bytes"] == 16 * 2**30 and tpu["fits"] is True and "fits," in out
    assert "TPU_WORKER_HOSTNAMES" not in err and "TPU_ACCELERATOR_TYPE" not in err  # libtpu kept quiet
    assert tpu["flops_per_step_per_device"] == clip_train_flops(B=64, **TINY) / 16  # the demo's global batch 64
    # the input each host must deliver at 50 % MFU: its 16 images per step over the step's time there
    step_seconds = tpu["flops_per_step_per_device"] / (0.5 * 197e12)
    assert tpu["input_images_per_second_per_host"] == pytest.approx(64 / 4 / step_seconds)
    assert tpu["decode_cores_per_host"] == -(-tpu["input_images_per_second_per_host"] // 119)
    assert f"{tpu['decode_cores_per_host']} decoding cores per host" in out
    cpu, _, _ = plan(tmp_path / "cpu", devices=16)  # the same mesh and batch on 16 CPU devices
    assert abs(cpu["flops_per_step_per_device"] / tpu["flops_per_step_per_device"] - 1) < 0.05


def test_scanned_blocks_count_the_flops_of_every_layer():
    """A scanned tower's blocks are one loop body to XLA (its cost_analysis would halve tiny's count); the
    plan counts the body once per layer: the same FLOPs as the unrolled step, on any backend."""
    from georsclip_jax import sharding
    from georsclip_jax.train.config import base_config
    from georsclip_jax.train.flops import matmul_flops
    from georsclip_jax.train.program import (abstract_run_model, abstract_state, batch_structs, make_program,
                                             with_shardings)

    counts = []
    for scan in (False, True):
        config = base_config()
        config.model.name, config.model.scan_layers, config.train.global_batch_size = "tiny", scan, 64
        program, params, frozen = make_program(config, sharding.make_mesh({"data": -1}), abstract_run_model(config), 10)
        counts.append(matmul_flops(program.step_fn, abstract_state(program, params),
                                   with_shardings(frozen, program.frozen_shardings),
                                   batch_structs(config, 32, program.batch_sharding)))
    assert counts[0] == counts[1] == clip_train_flops(B=64, **TINY)


def test_a_step_that_does_not_fit_says_so(tmp_path):
    report, out, _ = plan(tmp_path / "huge", "--config.train.global_batch_size=1048576", topology="v5e:4x4", status=1)
    assert report["fits"] is False and report["hbm_total_bytes"] > report["hbm_capacity_bytes"]
    assert "DOES NOT FIT: the TPU compiler refused the step: RESOURCE_EXHAUSTED" in out
    assert report["flops_per_step_per_device"] == clip_train_flops(B=2**20, **TINY) / 16  # still counted


def test_a_bad_topology_stops_with_one_line(tmp_path):
    result = subprocess.run(command(tmp_path, "--compile_only", "--topology", "v9z:1x1"), env=env(),
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --topology: 'v9z:1x1' is not a TPU topology")


def test_without_libtpu_one_line_says_what_to_install(tmp_path):
    hide_libtpu = ("import sys; sys.modules['libtpu'] = None; sys.argv[0] = 'main'; "
                   "from absl import app; from georsclip_jax import main; "
                   "app.run(main.main, flags_parser=main.parse_flags)")
    args = command(tmp_path, "--compile_only", "--topology", "v5e:2x2")[3:]
    result = subprocess.run([sys.executable, "-c", hide_libtpu, *args], env=env(), capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --topology: compiling for v5e:2x2 needs libtpu; pip install 'georsclip-jax[tpu]' (it installs "
        "and compiles on any Linux x86-64 machine, no TPU needed)")

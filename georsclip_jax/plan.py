"""Plan a pod run before renting it: compile the run's own train step for a TPU topology, on any
machine, and report per-chip memory, FLOPs and compile time (MaxText's `train_compile.py` idea).

    python -m georsclip_jax.main --config configs/georsclip_rs5m_vith14.py --workdir runs/h14 \\
        --compile_only --topology v5p:4x4x4

The step is the one `train/loop.py` would execute — built by `train/program.py` from the same
config: mesh, sharding rules, trainable/frozen partition, optimizer-state shardings, batch structures,
remat, scanned blocks — over the topology's devices (libtpu compiles for them without a TPU;
`pip install 'georsclip-jax[tpu]'`). Nothing is allocated and no data or weights are read. Without
`--topology` the step is compiled for this machine's own devices (e.g. to size a GPU run).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time

GIB = 2**30
# Per-device HBM and dense bf16 peak of the TPU generations whose JAX devices are whole chips.
CHIPS = {"TPU v5 lite": (16 * GIB, 197e12), "TPU v5": (95 * GIB, 459e12), "TPU v6 lite": (32 * GIB, 918e12)}
# Images/s one core decodes and augments with the training defaults (uint8 + jpeg_draft, GeoRSCLIP's full
# augmentation at 224 px): BENCHMARKS.md "Data: GeoRSCLIP's full augmentation on real photos", 1 worker on
# real photos with sides 256-2048 px, x86-64 at 2026-12-03. Other images and cores differ; measure yours.
DECODE_IMAGES_PER_CORE = 119


def quiet_libtpu() -> None:
    """Before libtpu loads: no TPU runtime is started here, so give it the host facts it would
    otherwise warn about, let it load beside other JAX processes (it takes a machine-wide lock), and
    keep JAX's own devices on the CPU."""
    import jax

    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    jax.config.update("jax_platforms", "cpu")


def topology_devices(topology: str) -> list:
    from jax.experimental import topologies

    if importlib.util.find_spec("libtpu") is None:  # jax finds the TPU compiler through this package
        raise ValueError(f"--topology: compiling for {topology} needs libtpu; pip install 'georsclip-jax[tpu]' "
                         "(it installs and compiles on any Linux x86-64 machine, no TPU needed)")
    try:
        return list(topologies.get_topology_desc(topology_name=topology, platform="tpu").devices)
    except Exception as e:  # libtpu's own message names what is wrong with the name
        raise ValueError(f"--topology: {topology!r} is not a TPU topology libtpu knows ({e}); use e.g. "
                         "v5e:2x2, v5p:4x4x4, v6e:4x4") from None


def plan(config, topology: str | None = None) -> dict:
    """Compile the run's step for `topology` (or this machine) and return the report."""
    if topology:
        quiet_libtpu()  # before anything initializes a JAX backend
    import jax

    from georsclip_jax import sharding
    from georsclip_jax.train.config import validate
    from georsclip_jax.train.flops import matmul_flops
    from georsclip_jax.train.program import (abstract_run_model, abstract_state, batch_structs, compile_step,
                                             make_program, with_shardings)

    devices = topology_devices(topology) if topology else jax.devices()
    validate(config, len(devices), check_data=False)
    if not config.model.name:
        raise ValueError("config.model.name: planning needs the architecture by name (the weights are not read)")
    mesh = sharding.make_mesh(dict(config.mesh), devices)
    model = abstract_run_model(config)
    steps = config.train.total_steps or 1  # the schedule's length changes constants, not the program
    program, params, frozen = make_program(config, mesh, model, steps)
    args = (abstract_state(program, params), with_shardings(frozen, program.frozen_shardings),
            batch_structs(config, model.preprocess.image_size, program.batch_sharding))
    start = time.perf_counter()
    try:
        _, report = compile_step(program, *args)
    except jax.errors.JaxRuntimeError as e:  # the TPU compiler refuses a step that cannot fit
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        report = out_of_memory(str(e))
        report["flops_per_step_per_device"] = matmul_flops(program.step_fn, *args) / len(devices)
    kind = devices[0].device_kind
    capacity, peak = CHIPS.get(kind, (None, None))
    count = lambda tree: int(sum(x.size for x in jax.tree.leaves(tree)))
    report.update({
        "topology": topology or "local", "device_kind": kind, "devices": len(devices),
        "processes": len({d.process_index for d in devices}), "mesh": dict(mesh.shape),
        "global_batch_size": config.train.global_batch_size,
        "batch_per_device": config.train.global_batch_size / sharding.data_parallel_size(mesh),
        "model": config.model.name, "dtype": config.model.dtype, "remat": str(config.model.remat),
        "scan_layers": bool(config.model.scan_layers), "trainable_params": count(params),
        "frozen_params": count(frozen), "compile_seconds": time.perf_counter() - start,
        "hbm_capacity_bytes": capacity, "peak_bf16_flops": peak,
    })
    report.update(input_needed(report))
    report.setdefault("hbm_total_bytes", total_bytes(report))
    report["fits"] = None if capacity is None else report["hbm_total_bytes"] <= capacity
    return report


def input_needed(report: dict) -> dict:
    """What the input pipeline of each host must deliver for the step to run at 50 % MFU (bf16 on a
    known chip), and the decoding cores that takes at DECODE_IMAGES_PER_CORE; {} where there is no peak."""
    flops, peak = report.get("flops_per_step_per_device"), report["peak_bf16_flops"]
    if not flops or not peak or report["dtype"] != "bfloat16":
        return {}
    step_seconds = flops / (0.5 * peak)
    per_host = report["global_batch_size"] / report["processes"] / step_seconds
    return {"input_images_per_second_per_host": per_host,
            "decode_cores_per_host": math.ceil(per_host / DECODE_IMAGES_PER_CORE)}


def out_of_memory(message: str) -> dict:
    """The compiler's refusal as a report: its one-line reason and the sizes it names."""
    line = next((part.strip() for part in message.splitlines() if "RESOURCE_EXHAUSTED" in part), message.strip())
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    sizes = [float(n) * units[u] for n, u in re.findall(r"\(([\d.]+)([KMGT])i?B?\)", line)]
    return {"compile_error": line, "hbm_total_bytes": int(sizes[0]) if sizes else 0,
            "xla_flops_per_step_per_device": None}


def total_bytes(report: dict) -> int:
    """What the step holds on a device at once: arguments + outputs not aliased to (donated)
    arguments + temporaries."""
    return (report.get("argument_size_in_bytes", 0) + report.get("output_size_in_bytes", 0)
            - report.get("alias_size_in_bytes", 0) + report.get("temp_size_in_bytes", 0))


def describe(report: dict) -> str:
    """The report as the few lines a person reads before renting the pod."""
    gib = lambda b: f"{b / GIB:.2f} GiB"
    lines = [
        f"plan: {report['model']} ({report['dtype']}, remat {report['remat']}, scan_layers "
        f"{report['scan_layers']}) on {report['topology']}: {report['devices']} x {report['device_kind']}, "
        f"{report['processes']} host(s), mesh {report['mesh']}",
        f"  batch: {report['global_batch_size']} global, {report['batch_per_device']:g} per device; "
        f"params: {report['trainable_params'] / 1e6:.1f} M trainable, {report['frozen_params'] / 1e6:.1f} M frozen",
    ]
    if "compile_error" in report:
        lines.append(f"  DOES NOT FIT: the TPU compiler refused the step: {report['compile_error']}")
    else:
        lines.append(f"  HBM per device: arguments {gib(report.get('argument_size_in_bytes', 0))} + outputs "
                     f"{gib(report.get('output_size_in_bytes', 0))} - aliased {gib(report.get('alias_size_in_bytes', 0))} "
                     f"+ temporaries {gib(report.get('temp_size_in_bytes', 0))} = {gib(report['hbm_total_bytes'])}")
    capacity = report["hbm_capacity_bytes"]
    if capacity and "compile_error" not in report:
        free = capacity - report["hbm_total_bytes"]
        verdict = (f"fits, {gib(free)} to spare" if free >= 0 else f"DOES NOT FIT: {gib(-free)} over")
        lines.append(f"  capacity: {gib(capacity)} per device: {verdict}")
    flops = report["flops_per_step_per_device"]
    xla = report["xla_flops_per_step_per_device"]
    lines.append(f"  compute: {flops_text(flops)} of matmuls per device per step"
                 + (f" (XLA's own count: {flops_text(xla)}, a loop body counted once)" if xla is not None else ""))
    if report["peak_bf16_flops"] and report["dtype"] == "bfloat16":
        floor = flops / report["peak_bf16_flops"]
        lines.append(f"  at the bf16 peak ({report['peak_bf16_flops'] / 1e12:.0f} TFLOP/s) a step takes at least "
                     f"{floor * 1e3:.1f} ms: at most {report['batch_per_device'] / floor:,.0f} images/s per device "
                     f"(at 50 % MFU: {floor * 2e3:.1f} ms)")
    if "input_images_per_second_per_host" in report:
        lines.append(f"  input at 50 % MFU: {report['input_images_per_second_per_host']:,.0f} images/s per host, "
                     f"~{report['decode_cores_per_host']} decoding cores per host (num_workers) at "
                     f"{DECODE_IMAGES_PER_CORE} images/s per core (training defaults, BENCHMARKS.md)")
    lines.append(f"  compile: {report['compile_seconds']:.0f} s")
    return "\n".join(lines)


def flops_text(flops: float) -> str:
    return f"{flops / 1e12:.2f} TFLOP" if flops >= 1e11 else f"{flops / 1e9:.2f} GFLOP"


def size_text(size: int) -> str:
    return f"{size / GIB:.2f} GiB" if size >= GIB // 10 else f"{size / 2**20:.1f} MiB"


def plan_and_report(config, workdir: str, topology: str | None) -> dict:
    """Print the plan and write it as WORKDIR/plan-<topology>.json; `report["fits"]` is False when the
    step needs more memory than the device has."""
    from georsclip_jax import storage

    report = plan(config, topology)
    print(describe(report), flush=True)
    name = f"plan-{(topology or 'local').replace(':', '_')}.json"
    storage.write_bytes(storage.join(storage.resolve(workdir), name), json.dumps(report, indent=1).encode())
    return report

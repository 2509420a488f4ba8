"""What parameter-efficient training saves: full fine-tuning vs LoRA vs a locked image tower.

For each model and mode: trainable and frozen parameters, optimizer-state bytes, and the compiled
train step's memory analysis (arguments, outputs, temporaries, peak) and FLOPs. Nothing is allocated:
the model is abstract (`nnx.eval_shape`) and the step is AOT-compiled for one device of this
machine, with the trainer's own code (partition, optimizer, step, compile report).

Usage: python benchmarks/bench_peft.py [--models ViT-B-32,ViT-L-14] [--batch 32] [--dtype bfloat16]
       [--out peft.json]
"""

from __future__ import annotations

import argparse
import json
import platform

MODES = {
    "full": {},
    "lora_r8": {"trainable": "lora", "lora.rank": 8, "lora.alpha": 16.0},
    "locked_image": {"lock_image": True},
}


def peft_section(overrides: dict):
    from georsclip_jax.train.config import base_config

    config = base_config()
    for key, value in overrides.items():
        section, _, field = key.rpartition(".")
        (config.peft[section] if section else config.peft)[field] = value
    return config


def measure(model_name: str, mode: str, batch: int, dtype: str) -> dict:
    import jax

    from georsclip_jax import sharding
    from georsclip_jax.train.program import (abstract_run_model, abstract_state, batch_structs, compile_step,
                                             make_program, with_shardings)

    config = peft_section(MODES[mode])
    config.model.name, config.model.dtype = model_name, dtype
    config.train.global_batch_size = batch
    model = abstract_run_model(config)  # the trainer's own program, compiled for one device
    program, params, frozen = make_program(config, sharding.make_mesh({"data": 1}, jax.devices()[:1]), model, 1000)
    state = abstract_state(program, params)
    _, report = compile_step(program, state, with_shardings(frozen, program.frozen_shardings),
                             batch_structs(config, model.preprocess.image_size, program.batch_sharding))
    count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
    return {"model": model_name, "mode": mode, "trainable_params": count(params), "frozen_params": count(frozen),
            "optimizer_state_bytes": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.opt_state)),
            **report}


def table(rows: list[dict]) -> str:
    """`total` = arguments + temporaries + outputs not aliased to (donated) arguments: the step's whole
    footprint. XLA's own `peak` field is filled in by the GPU/TPU compilers; the CPU one reports the
    arguments only."""
    gib = lambda b: f"{b / 2**30:.2f}"
    lines = ["| model | mode | trainable params | optimizer state GiB | arguments GiB | temporaries GiB | total GiB | "
             "XLA peak GiB | GFLOPs/step |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = r["trainable_params"] / (r["trainable_params"] + r["frozen_params"])
        total = (r["argument_size_in_bytes"] + r["temp_size_in_bytes"] + r["output_size_in_bytes"]
                 - r["alias_size_in_bytes"])
        lines.append(f"| {r['model']} | {r['mode']} | {r['trainable_params'] / 1e6:.2f} M ({share:.1%}) | "
                     f"{gib(r['optimizer_state_bytes'])} | {gib(r['argument_size_in_bytes'])} | "
                     f"{gib(r['temp_size_in_bytes'])} | {gib(total)} | {gib(r['peak_memory_in_bytes'])} | "
                     f"{r['flops_per_step_per_device'] / 1e9:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ViT-B-32,ViT-L-14")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--out")
    args = parser.parse_args()
    import jax
    from tqdm import tqdm

    jobs = [(m, mode) for m in args.models.split(",") for mode in MODES]
    rows = [measure(m, mode, args.batch, args.dtype) for m, mode in tqdm(jobs, desc="compile", unit="step")]
    print(f"batch {args.batch}, {args.dtype} compute, float32 params and Adam state, "
          f"{jax.devices()[0].device_kind} ({platform.machine()})")
    print(table(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

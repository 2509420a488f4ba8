"""What a training run compiles, built one way for the run (loop.py) and for a plan (plan.py).

From the config and a mesh: the model (parameters born sharded, or converted weights placed into
their shardings — or only its shapes, for a plan), LoRA adapters, the trainable/frozen partition,
the optimizer and the shardings of its state, the train step and the batch structures; then the step
AOT-compiled, with its per-device memory and FLOPs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from georsclip_jax import sharding
from georsclip_jax.models.clip import CLIP
from georsclip_jax.models.configs import get_model_config
from georsclip_jax.models.layers import ModelOptions
from georsclip_jax.models.lora import LoRAParam, add_lora
from georsclip_jax.train.flops import jaxpr_flops
from georsclip_jax.train.optim import make_optimizer
from georsclip_jax.train.partition import lora_config, split_trainable
from georsclip_jax.train.step import TrainState, make_train_step

MEMORY_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
                 "peak_memory_in_bytes", "generated_code_size_in_bytes")


def model_options(config) -> ModelOptions:
    return ModelOptions(dtype=config.model.dtype, attention_impl=config.model.attention_impl or None,
                        remat=config.model.remat, scan_layers=config.model.scan_layers)


# The SigLIP loss learns a logit bias; open_clip's init for it (and the scale) from the SigLIP paper.
SIGLIP_INIT = {"init_logit_scale": math.log(10), "init_logit_bias": -10.0}


def logit_init(config) -> dict:
    return SIGLIP_INIT if config.train.loss == "siglip" else {}


def model_config(config):
    """The architecture named by `config.model` (activation overridden if `model.act` is set; a logit
    bias added for the SigLIP loss, unless the architecture has one)."""
    named = get_model_config(config.model.name)
    named = named.replace(act=config.model.act) if config.model.act else named
    init = logit_init(config)
    return named.replace(**init) if init and named.init_logit_bias is None else named


def build_model(config, mesh) -> CLIP:
    """Parameters born sharded: initialized under jit with out_shardings, or loaded into them."""
    from georsclip_jax.factory import create_model
    from georsclip_jax.interop.params import abstract_model

    options, act = model_options(config), config.model.act or None
    rules, min_size = config.sharding.rules, config.sharding.fsdp_min_size
    if config.model.init_from:
        from georsclip_jax import storage

        named = config.model.name or None
        shardings = (sharding.param_shardings(nnx.state(abstract_model(model_config(config), options)), mesh,
                                              rules, min_size) if named else None)
        model = create_model(named, storage.local_copy(config.model.init_from), act=act, options=options,
                             shardings=shardings, init_logit_bias=logit_init(config).get("init_logit_bias"))
        if shardings is None:  # architecture inferred from the file: place now that it is known
            graphdef, state = nnx.split(model)
            state = jax.tree.map(sharding.place, state, sharding.param_shardings(state, mesh, rules, min_size))
            model = nnx.merge(graphdef, state)
        return model
    graphdef, abstract_state = nnx.split(abstract_model(model_config(config), options))
    shardings = sharding.param_shardings(abstract_state, mesh, rules, min_size)
    init = lambda: nnx.state(CLIP(model_config(config), options, rngs=nnx.Rngs(config.train.seed)))
    return nnx.merge(graphdef, jax.jit(init, out_shardings=shardings)())


def attach_lora(model: CLIP, config, mesh) -> None:
    """Adapters from `config.peft.lora`, placed in the shardings their base kernels dictate
    (`sharding.lora_spec`). They are small: made on the host with the run's seed (the same on every
    process), then put in place."""
    add_lora(model, lora_config(config.peft), nnx.Rngs(config.train.seed))
    adapters = nnx.state(model, LoRAParam)
    shardings = sharding.param_shardings(adapters, mesh, config.sharding.rules, config.sharding.fsdp_min_size)
    nnx.update(model, jax.tree.map(sharding.place, adapters, shardings))


def abstract_run_model(config) -> CLIP:
    """The run's model as shapes only (adapters attached if asked): nothing is allocated."""
    adapters = lora_config(config.peft)

    def make():
        model = CLIP(model_config(config), model_options(config), rngs=nnx.Rngs(0))
        return add_lora(model, adapters, nnx.Rngs(0)) if adapters else model
    return nnx.eval_shape(make)


def optimizer_shardings(optimizer, params, param_shardings, replicated):
    """Moments take their parameter's sharding (matched by the longest parameter path their own path
    ends with); everything else (step counts) is replicated."""
    by_path = {jax.tree_util.keystr(k): s for k, s in jax.tree_util.tree_flatten_with_path(param_shardings)[0]}

    def place(path, leaf):
        key = jax.tree_util.keystr(path)
        matches = [p for p in by_path if key.endswith(p)]
        return by_path[max(matches, key=len)] if matches else replicated
    return jax.tree_util.tree_map_with_path(place, jax.eval_shape(optimizer.init, params))


@dataclasses.dataclass
class Program:
    """The step and everything its compilation depends on."""
    graphdef: Any
    optimizer: Any
    lr_schedule: Callable
    step_fn: Callable
    params_shardings: Any
    frozen_shardings: Any
    opt_shardings: Any
    replicated: jax.sharding.NamedSharding
    batch_sharding: jax.sharding.NamedSharding

    @property
    def state_shardings(self) -> TrainState:
        return TrainState(self.replicated, self.params_shardings, self.opt_shardings)


def make_program(config, mesh, model: CLIP, total_steps: int):
    """(Program, trainable params, frozen) for a concrete or abstract model."""
    graphdef, params, frozen = split_trainable(model, config.peft)
    rules, min_size = config.sharding.rules, config.sharding.fsdp_min_size
    params_shardings = sharding.param_shardings(params, mesh, rules, min_size)
    optimizer, lr_schedule = make_optimizer(config.optim, total_steps, params)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    adapters = lora_config(config.peft)
    preprocess = model.preprocess
    step_fn = make_train_step(graphdef, optimizer, lr_schedule, config.train.loss, config.train.accum_steps,
                              preprocess.mean, preprocess.std,
                              dropout_seed=config.train.seed if adapters and adapters.dropout else None)
    program = Program(graphdef, optimizer, lr_schedule, step_fn, params_shardings,
                      sharding.param_shardings(frozen, mesh, rules, min_size),
                      optimizer_shardings(optimizer, params, params_shardings, replicated), replicated,
                      sharding.batch_sharding(mesh))
    return program, params, frozen


def initial_state(program: Program, params) -> TrainState:
    """Step 0 with fresh optimizer state, built under jit straight into its shardings."""
    opt_state = jax.jit(program.optimizer.init, out_shardings=program.opt_shardings)(params)
    return TrainState(sharding.place(np.zeros((), np.int32), program.replicated), params, opt_state)


def abstract_state(program: Program, params) -> TrainState:
    """The train state as ShapeDtypeStructs in their shardings (the compile target of a plan)."""
    shapes = TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, jax.eval_shape(program.optimizer.init, params))
    return with_shardings(shapes, program.state_shardings)


def with_shardings(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def batch_structs(config, image_size: int, batch_shard):
    b, s = config.train.global_batch_size, image_size
    dtype = jnp.uint8 if config.data.image_dtype == "uint8" else jnp.float32
    shapes = {"image": ((b, s, s, 3), dtype), "tokens": ((b, 77), jnp.int32), "mask": ((b,), jnp.bool_)}
    return {k: jax.ShapeDtypeStruct(shape, d, sharding=batch_shard) for k, (shape, d) in shapes.items()}


def compile_step(program: Program, state, frozen, batch_shapes):
    """AOT-compile the step and report its memory and FLOPs per device. The train state is donated;
    the frozen partition is only read. `state`/`frozen` may be arrays or ShapeDtypeStructs.

    `flops_per_step_per_device` is the step's matmul FLOPs (train/flops.py) over the devices: the
    batch, and with it every matmul, is split evenly over them."""
    jitted = jax.jit(program.step_fn, in_shardings=(program.state_shardings, program.frozen_shardings,
                                                    program.batch_sharding),
                     out_shardings=(program.state_shardings, None), donate_argnums=0)
    traced = jitted.trace(state, frozen, batch_shapes)  # one trace: counted, then lowered and compiled
    flops = jaxpr_flops(traced.jaxpr.jaxpr)
    compiled = traced.lower().compile()
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    devices = program.batch_sharding.mesh.size
    report = {"flops_per_step_per_device": flops / devices,
              "xla_flops_per_step_per_device": float((cost or {}).get("flops", 0.0))}
    if memory is not None:
        report.update({field: int(getattr(memory, field, 0)) for field in MEMORY_FIELDS})
    return compiled, report

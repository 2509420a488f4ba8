"""Matmul FLOPs of a step, counted on its jaxpr: the numerator of MFU and of a plan's step time.

Every dot_general and convolution is counted (2 FLOPs per multiply-add), a scan body times its
length, a rematerialized forward as often as it runs (jax.checkpoint's recomputation is part of the
differentiated jaxpr), the costlier branch of a cond. XLA's own `cost_analysis()` counts a loop body
once — a scanned tower's blocks, the micro-batch loop of gradient accumulation — so it cannot serve
here; it is still reported beside this count (`xla_flops_per_step_per_device`).
"""

from __future__ import annotations

import math

import jax
from jax.extend import core


def dot_flops(eqn) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    rhs_free = [d for d in range(len(rhs)) if d not in rhs_contract and d not in rhs_batch]
    return 2 * math.prod(lhs) * math.prod(rhs[d] for d in rhs_free)


def conv_flops(eqn) -> int:
    """2 x output elements x the reduction each one takes (input features per group x window)."""
    rhs = eqn.invars[1].aval.shape
    rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, *window)
    window = math.prod(rhs[d] for d in rhs_spec[2:])
    return 2 * math.prod(eqn.outvars[0].aval.shape) * rhs[rhs_spec[1]] * window


def jaxpr_flops(jaxpr: core.Jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += conv_flops(eqn)
        elif name == "scan":
            total += eqn.params["length"] * jaxpr_flops(eqn.params["jaxpr"].jaxpr)
        elif name == "cond":
            total += max(jaxpr_flops(branch.jaxpr) for branch in eqn.params["branches"])
        else:  # pjit, remat, custom_jvp/vjp calls, ...: their inner jaxprs run once
            total += sum(jaxpr_flops(inner) for inner in inner_jaxprs(eqn.params))
    return total


def inner_jaxprs(params: dict):
    for value in params.values():
        if isinstance(value, core.ClosedJaxpr):
            yield value.jaxpr
        elif isinstance(value, core.Jaxpr):
            yield value


def matmul_flops(fn, *args) -> int:
    """Matmul FLOPs of one call of `fn` on `args` (arrays or ShapeDtypeStructs), whole program."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)

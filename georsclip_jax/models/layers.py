"""Transformer building blocks whose parameter names mirror open_clip's state dict.

`attn/in_proj` keeps open_clip's fused q|k|v projection (rows q, k, v in that order; heads are
contiguous channel blocks), so converting weights is renaming plus transposes.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

LN_EPS = 1e-5  # open_clip / PyTorch default; flax's default is 1e-6


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """How to run a model, as opposed to what it is (CLIPConfig).

    dtype: compute dtype of matmuls and attention (LayerNorm and softmax stay float32).
    param_dtype: storage dtype of the parameters.
    attention_impl: passed to `jax.nn.dot_product_attention` (None lets JAX choose, 'xla', 'cudnn').
    remat: what each residual block keeps for the backward pass (`REMAT_POLICIES`): "none" keeps every
        activation, "dots" keeps only the projections' matmul outputs and recomputes the rest,
        "full" keeps only the block's input and recomputes everything (True/False mean full/none).
    scan_layers: store each tower's blocks stacked on a leading layer axis and run them as one
        `jax.lax.scan`, so the compiler sees one block instead of `layers` copies (much faster compiles
        for deep models). Converters, exports and adapter files still see open_clip's per-layer names
        (models/stacking.py translates at the boundary).
    """

    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: Literal["xla", "cudnn"] | None = None
    remat: str | bool = "none"
    scan_layers: bool = False

    def __post_init__(self):
        remat = {True: "full", False: "none"}.get(self.remat, self.remat)
        if remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {sorted(REMAT_POLICIES)}, got {self.remat!r}")
        object.__setattr__(self, "remat", remat)


# What a rematerialized block saves for the backward pass (jax.checkpoint policies).
REMAT_POLICIES = {
    "none": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def activation(name: str):
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)  # exact erf GELU, as torch.nn.GELU()
    if name == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    raise ValueError(f"unknown activation {name!r}")


TORCH_LINEAR_INIT = jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class Linear(nnx.Linear):
    """nnx.Linear plus an optional low-rank adapter (`models/lora.py`) whose output is added to its own.

    The adapter lives at `<path>/lora/...`, so the base kernel keeps its open_clip path."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lora = nnx.data(None)  # a data slot: an adapter may be attached later

    def __call__(self, x: jax.Array) -> jax.Array:
        y = super().__call__(x)
        return y if self.lora is None else y + self.lora(x)


def linear(d_in: int, d_out: int, opts: ModelOptions, rngs: nnx.Rngs, init=None) -> Linear:
    """Dense layer (kernel [in, out], zero bias); PyTorch's default init unless `init` is given."""
    return Linear(
        d_in, d_out, dtype=opts.dtype, param_dtype=opts.param_dtype,
        kernel_init=init or TORCH_LINEAR_INIT, rngs=rngs,
    )


class LayerNorm(nnx.Module):
    """LayerNorm with eps 1e-5 and two-pass variance, computed in float32 (open_clip's LayerNormFp32)."""

    def __init__(self, dim: int, opts: ModelOptions):
        self.scale = nnx.Param(jnp.ones((dim,), opts.param_dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), opts.param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        centered = x32 - mean
        var = jnp.mean(centered * centered, -1, keepdims=True)
        y = centered * jax.lax.rsqrt(var + LN_EPS)
        y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(x.dtype)


class MLP(nnx.Module):
    def __init__(self, width: int, hidden: int, act: str, opts: ModelOptions, rngs: nnx.Rngs, init=(None, None)):
        self.c_fc = linear(width, hidden, opts, rngs, init[0])
        self.c_proj = linear(hidden, width, opts, rngs, init[1])
        self.act = act

    def __call__(self, x):
        return self.c_proj(activation(self.act)(self.c_fc(x)))


class Attention(nnx.Module):
    """Multi-head self-attention with open_clip's fused `in_proj` and `out_proj`."""

    def __init__(self, width: int, heads: int, opts: ModelOptions, rngs: nnx.Rngs, init=(None, None)):
        self.heads = heads
        self.impl = opts.attention_impl
        # nn.MultiheadAttention initialises in_proj with xavier_uniform.
        self.in_proj = linear(width, 3 * width, opts, rngs, init[0] or jax.nn.initializers.xavier_uniform())
        self.out_proj = linear(width, width, opts, rngs, init[1])

    def __call__(self, x: jax.Array, causal: bool) -> jax.Array:
        b, t, w = x.shape
        q, k, v = jnp.split(self.in_proj(x), 3, axis=-1)
        head_dim = w // self.heads
        q, k, v = (a.reshape(b, t, self.heads, head_dim) for a in (q, k, v))
        out = jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=self.impl)
        return self.out_proj(out.reshape(b, t, w))


class ResidualAttentionBlock(nnx.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width, heads, mlp_width, act, opts, rngs, attn_init=(None, None), mlp_init=(None, None)):
        self.ln_1 = LayerNorm(width, opts)
        self.attn = Attention(width, heads, opts, rngs, attn_init)
        self.ln_2 = LayerNorm(width, opts)
        self.mlp = MLP(width, mlp_width, act, opts, rngs, mlp_init)

    def __call__(self, x, causal: bool):
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


def block_step(graphdef, causal: bool, remat: str):
    """(x, block state) -> the block's output, as a pure function (split outside, merged inside), under
    `jax.checkpoint` with the remat policy unless remat is "none". Pure rather than `nnx.remat`, which
    writes state back into the caller's Variables and fails when those come from an enclosing trace
    (lax.map / scan in the accumulating train step)."""
    def step(x, state):
        return nnx.merge(graphdef, state)(x, causal)
    if remat == "none":
        return step
    return jax.checkpoint(step, policy=REMAT_POLICIES[remat])


def stacked(make, layers: int, rngs: nnx.Rngs):
    """`layers` independently initialized copies of the module `make(rngs)` builds, as one module
    whose parameters carry a leading layer axis."""
    @nnx.split_rngs(splits=layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def build(layer_rngs):
        return make(layer_rngs)
    return build(rngs)


class Transformer(nnx.Module):
    def __init__(self, width, layers, heads, mlp_width, act, opts: ModelOptions, rngs, attn_init=(None, None),
                 mlp_init=(None, None)):
        self.remat, self.scan = opts.remat, opts.scan_layers
        make = lambda r: ResidualAttentionBlock(width, heads, mlp_width, act, opts, r, attn_init, mlp_init)
        self.resblocks = stacked(make, layers, rngs) if self.scan else nnx.List([make(rngs) for _ in range(layers)])

    def __call__(self, x, causal: bool = False):
        if self.scan:  # one block, its stacked state sliced layer by layer
            graphdef, state = nnx.split(self.resblocks)
            step = block_step(graphdef, causal, self.remat)
            x, _ = jax.lax.scan(lambda carry, layer: (step(carry, layer), None), x, state)
            return x
        for block in self.resblocks:
            graphdef, state = nnx.split(block)
            x = block_step(graphdef, causal, self.remat)(x, state)
        return x

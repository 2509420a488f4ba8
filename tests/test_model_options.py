"""Run-time options: compute/param dtypes, remat, attention implementation, LayerNorm numerics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import georsclip_jax as gj
from georsclip_jax.models.layers import LayerNorm, ModelOptions


def _batch(model):
    size = model.config.vision.image_size
    pixels = np.random.default_rng(0).normal(size=(4, size, size, 3)).astype(np.float32)
    return pixels, gj.get_tokenizer()(["a forest", "a lake", "a road", "a field"])


def _loss(model, pixels, tokens):
    out = model(pixels, tokens)
    logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
    labels = jnp.arange(logits.shape[0])
    return -jnp.mean(jax.nn.log_softmax(logits)[labels, labels])


def _grads(model, pixels, tokens):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loss_fn = lambda p: _loss(nnx.merge(graphdef, p, rest), pixels, tokens)
    return jax.jit(jax.value_and_grad(loss_fn))(params)


def test_remat_gives_identical_loss_and_gradients():
    plain = gj.create_model("tiny", seed=1)
    remat = gj.create_model("tiny", seed=1, options=ModelOptions(remat=True))
    pixels, tokens = _batch(plain)
    (l1, g1), (l2, g2) = _grads(plain, pixels, tokens), _grads(remat, pixels, tokens)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    # Remat recomputes the forward pass inside the backward one, which XLA fuses differently: the
    # same sums in another order. Compare each gradient to 1e-6 of its own scale, as the sharded
    # step tests do; an entry that is itself a cancellation of larger terms (e.g. 0.0027 in a
    # token-embedding gradient whose entries reach 9.5) can differ by more than 1e-5 of itself.
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a - b).max() <= 1e-6 * max(np.abs(a).max(), 1.0)


def test_attention_implementation_is_selectable():
    default = gj.create_model("tiny", seed=2)
    xla = gj.create_model("tiny", seed=2, options=ModelOptions(attention_impl="xla"))
    pixels, tokens = _batch(default)
    np.testing.assert_allclose(xla.encode_text(tokens), default.encode_text(tokens), atol=1e-6)
    np.testing.assert_allclose(xla.encode_image(pixels), default.encode_image(pixels), atol=1e-6)


def test_bf16_compute_keeps_fp32_params_and_stays_close():
    ref = gj.create_model("tiny", seed=3)
    bf16 = gj.create_model("tiny", seed=3, options=ModelOptions(dtype="bfloat16"))
    assert all(v.get_value().dtype == jnp.float32 for _, v in nnx.to_flat_state(nnx.state(bf16, nnx.Param)))
    pixels, tokens = _batch(ref)
    a, b = ref.encode_image(pixels, normalize=True), bf16.encode_image(pixels, normalize=True)
    assert b.dtype == jnp.float32  # normalized features come back in float32
    assert float(jnp.min(jnp.sum(a * b, -1))) > 0.99
    (loss, grads) = _grads(bf16, pixels, tokens)
    assert np.isfinite(loss) and all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_param_dtype():
    model = gj.create_model("tiny", options=ModelOptions(param_dtype="bfloat16", dtype="bfloat16"))
    assert model.visual.proj[...].dtype == jnp.bfloat16
    assert model.encode_text(_batch(model)[1]).shape == (4, 32)


def test_layernorm_two_pass_variance_on_large_offsets():
    """CLIP residual streams carry large-mean channels; E[x^2]-E[x]^2 loses them in float32."""
    x = (1e3 + np.random.default_rng(0).normal(size=(8, 256))).astype(np.float32)
    ours = np.asarray(LayerNorm(256, ModelOptions())(jnp.asarray(x)))
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_text_length_must_match_context():
    model = gj.create_model("tiny")
    with pytest.raises(ValueError, match="length 77"):
        model.encode_text(np.zeros((1, 76), np.int32))

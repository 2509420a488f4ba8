"""The train step in global view: loss and gradients on 8x1, 4x2 and 1x8 meshes equal the single-
device computation; micro-batch accumulation equals the full batch; open_clip's decay rule and
cosine schedule; logit_scale clamping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import georsclip_jax as gj
from georsclip_jax import sharding
from georsclip_jax.losses import clip_loss
from georsclip_jax.train.config import base_config
from georsclip_jax.train.optim import make_optimizer, schedule, weight_decay_mask
from georsclip_jax.train.step import MAX_LOGIT_SCALE, TrainState, clamp_logit_scale, make_train_step


def batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, 77), np.int32)
    tokens[:, 0], tokens[:, 1:6], tokens[:, 6] = 49406, rng.integers(1, 49000, (n, 5)), 49407
    return {"image": rng.normal(size=(n, 32, 32, 3)).astype(np.float32), "tokens": tokens,
            "mask": np.ones(n, bool)}


def loss_and_grads(model, data):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(p, b):
        out = nnx.merge(graphdef, p, rest)(b["image"], b["tokens"])
        return clip_loss(out["image_features"], out["text_features"], out["logit_scale"], b["mask"])
    return jax.jit(jax.value_and_grad(loss_fn))(params, data)


@pytest.fixture(scope="module")
def reference():
    model = gj.create_model("tiny", seed=1)
    data = batch()
    single = jax.devices()[0]
    on_one = jax.device_put((nnx.split(model)[1], data), single)
    model_one = nnx.merge(nnx.split(model)[0], on_one[0])
    return model, data, loss_and_grads(model_one, on_one[1])


@pytest.mark.parametrize("data_axis,fsdp_axis", [(8, 1), (4, 2), (1, 8)])
def test_sharded_loss_and_grads_equal_one_device(reference, data_axis, fsdp_axis):
    model, data, (loss, grads) = reference
    mesh = sharding.make_mesh({"data": data_axis, "fsdp": fsdp_axis})
    graphdef, state = nnx.split(model)
    state = jax.device_put(state, sharding.param_shardings(state, mesh, "fsdp", fsdp_min_size=1))
    sharded = jax.device_put(data, sharding.batch_sharding(mesh))
    assert sharded["image"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    loss_s, grads_s = loss_and_grads(nnx.merge(graphdef, state), sharded)
    assert abs(float(loss_s) - float(loss)) < 1e-6
    # Per-device partial sums are reduced in another order than on one device: compare each
    # gradient to 1e-6 of its own scale (float32 has ~7 digits; entries here reach |g| ~ 3).
    for g, gs in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_s)):
        g, gs = np.asarray(g), np.asarray(gs)
        assert np.abs(gs - g).max() <= 1e-6 * max(np.abs(g).max(), 1.0)


def test_fsdp_rules_split_large_params_and_replicate_small_ones():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
    state = nnx.state(gj.create_model("tiny"), nnx.Param)
    specs = {sharding.param_path(k): s.spec for k, s in jax.tree_util.tree_flatten_with_path(
        sharding.param_shardings(state, mesh, "fsdp", fsdp_min_size=4096))[0]}
    assert specs["token_embedding/embedding"] == jax.sharding.PartitionSpec("fsdp", None)
    assert specs["visual/transformer/resblocks/0/mlp/c_fc/kernel"] == jax.sharding.PartitionSpec(None, "fsdp")
    assert specs["logit_scale"] == jax.sharding.PartitionSpec() and specs["ln_final/scale"] == jax.sharding.PartitionSpec()
    explicit = sharding.param_shardings(state, mesh, [("token_embedding/.*", [None, "fsdp"]), (".*", "replicate")])
    assert explicit["token_embedding"]["embedding"].get_value().spec == jax.sharding.PartitionSpec(None, "fsdp")


@pytest.mark.parametrize("accum_steps", [2, 4])
def test_accumulation_equals_the_full_batch(accum_steps):
    model = gj.create_model("tiny", seed=2)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optim = base_config().optim
    optimizer, lr = make_optimizer(optim, 10, params)
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
    data = batch(16, seed=3)
    full_state, full = jax.jit(make_train_step(graphdef, optimizer, lr))(state, rest, data)
    acc_state, acc = jax.jit(make_train_step(graphdef, optimizer, lr, accum_steps=accum_steps))(state, rest, data)
    assert abs(float(acc["loss"]) - float(full["loss"])) < 1e-6
    assert abs(float(acc["grad_norm"]) - float(full["grad_norm"])) < 1e-5
    for a, b in zip(jax.tree.leaves(acc_state.params), jax.tree.leaves(full_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_weight_decay_mask_follows_open_clips_exclusion_rule():
    import open_clip

    from georsclip_jax.interop.open_clip import open_clip_key
    reference = open_clip.model.CLIP(**gj.get_model_config("tiny").to_open_clip_json())
    excluded = {n for n, p in reference.named_parameters()
                if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n}
    mask = weight_decay_mask(nnx.state(gj.create_model("tiny"), nnx.Param))
    ours = {open_clip_key(sharding.param_path(k))[0]: bool(v) for k, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
    assert set(ours) == {n for n, _ in reference.named_parameters()}
    assert {n for n, decays in ours.items() if not decays} == excluded


@pytest.mark.parametrize("name", ["cosine", "const"])
def test_schedule_equals_open_clip(name):
    import torch
    from open_clip_train import scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    adjust = getattr(scheduler, f"{name}_lr")(optimizer, 5e-4, 10, 100)
    ours = schedule("cosine" if name == "cosine" else "constant", 5e-4, 10, 100)
    for step in (0, 3, 9, 10, 11, 55, 99):
        adjust(step)
        assert float(ours(step)) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-6)


def test_logit_scale_is_clamped_to_ln_100():
    params = nnx.state(gj.create_model("tiny"), nnx.Param)
    high = jax.tree_util.tree_map_with_path(lambda k, v: v + 10 if sharding.param_path(k) == "logit_scale" else v, params)
    assert float(clamp_logit_scale(high)["logit_scale"][...]) == pytest.approx(MAX_LOGIT_SCALE)
    low = jax.tree_util.tree_map_with_path(lambda k, v: v - 10 if sharding.param_path(k) == "logit_scale" else v, params)
    assert float(clamp_logit_scale(low)["logit_scale"][...]) == 0.0

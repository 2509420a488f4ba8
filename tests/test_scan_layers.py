"""Scanned towers (`ModelOptions(scan_layers=True)`): blocks stored stacked and run by one lax.scan.

The same weights give the same outputs and gradients as the unrolled model (float32), under every
remat policy and with LoRA (dropout masks included); everything that leaves the model — exports,
adapter files, fingerprints, sharding rules, weight-decay masks — sees open_clip's per-layer names;
partial tower locks and resuming with the other layout stop with one line."""

from __future__ import annotations

import subprocess

import jax
import numpy as np
import pytest
from flax import nnx

import georsclip_jax as gj
from georsclip_jax import sharding
from georsclip_jax.adapters import base_fingerprint
from georsclip_jax.interop.params import flat_params
from georsclip_jax.interop.params import materialize
from georsclip_jax.models.lora import LoRAParam
from georsclip_jax.models.stacking import layer_paths, unstack
from georsclip_jax.train.config import base_config
from georsclip_jax.train.optim import weight_decay_mask
from georsclip_jax.train.partition import split_trainable
from georsclip_jax.train.step import contrastive_loss, make_forward
from runs import ROOT, SMALL, command, env, final_params, results, run

TOL = 2e-5


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An unrolled model with perturbed weights, saved: both layouts load it."""
    model = gj.create_model("tiny", seed=3)
    return gj.save_pretrained(model, tmp_path_factory.mktemp("tiny"))


def load(saved, **options):
    return gj.create_model(pretrained=saved, options=gj.ModelOptions(**options))


def batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, 77), np.int32)
    tokens[:, 0], tokens[:, 1:7], tokens[:, 7] = 49406, rng.integers(1, 49000, (n, 6)), 49407
    return {"image": rng.normal(size=(n, 32, 32, 3)).astype(np.float32), "tokens": tokens, "mask": np.ones(n, bool)}


def flat(state) -> dict[str, np.ndarray]:
    """A State in the per-layer view, as host arrays."""
    return unstack({"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(state)})


def step_result(model, peft, dropout_seed=None):
    """Loss and gradients (per-layer names) of the train step's objective: its forward (with LoRA
    dropout keyed as in a step) and its contrastive loss, over the trainable partition."""
    graphdef, params, frozen = split_trainable(model, peft)
    forward = make_forward(graphdef)
    key = None if dropout_seed is None else jax.random.key(dropout_seed)

    def objective(p):
        out = forward(p, frozen, batch(), key)
        return contrastive_loss("clip", out, out["image_features"], out["text_features"], None)
    loss, grads = jax.jit(jax.value_and_grad(objective))(params)
    return float(loss), flat(grads)


def decay_mask(model) -> dict[str, bool]:
    """The weight-decay mask by per-layer name."""
    state = nnx.state(model, nnx.Param)
    shapes = {"/".join(map(str, k)): v.get_value().shape for k, v in nnx.to_flat_state(state)}
    masks = {"/".join(map(str, k)): bool(v.get_value()) for k, v in nnx.to_flat_state(weight_decay_mask(state))}
    return {name: mask for path, mask in masks.items() for name in layer_paths(path, (shapes[path] or (0,))[0])}


@pytest.mark.parametrize("remat", ["none", "dots", "full"])
def test_outputs_and_gradients_equal_the_unrolled_model(saved, remat):
    unrolled, scanned = load(saved, remat=remat), load(saved, remat=remat, scan_layers=True)
    data = batch()
    a, b = unrolled(data["image"], data["tokens"]), scanned(data["image"], data["tokens"])
    for key in a:
        np.testing.assert_allclose(np.asarray(b[key]), np.asarray(a[key]), atol=TOL, err_msg=key)
    peft = base_config().peft
    (loss_a, grads_a), (loss_b, grads_b) = step_result(unrolled, peft), step_result(scanned, peft)
    assert abs(loss_a - loss_b) < TOL and grads_a.keys() == grads_b.keys()
    assert any("resblocks/1/" in k for k in grads_b)
    for key in grads_a:
        np.testing.assert_allclose(grads_b[key], grads_a[key], atol=TOL, rtol=1e-4, err_msg=key)


def test_lora_with_dropout_equals_the_unrolled_model(saved, tmp_path):
    config = gj.LoRAConfig(rank=4, alpha=8.0, dropout=0.3)
    unrolled, scanned = load(saved), load(saved, scan_layers=True)
    gj.add_lora(unrolled, config, nnx.Rngs(0))
    adapters = {k: 0.05 * np.random.default_rng(i).normal(size=v.shape).astype(np.float32)
                for i, (k, v) in enumerate(sorted(flat_params(unrolled, LoRAParam).items()))}
    nnx.update(unrolled, nnx.state(materialize(unrolled, dict(adapters)), LoRAParam))
    gj.save_adapter(unrolled, tmp_path / "adapter")
    gj.load_adapter(scanned, tmp_path / "adapter")  # per-layer adapter files load onto stacked layers
    assert all(np.array_equal(v, adapters[k]) for k, v in flat_params(scanned, LoRAParam).items())
    peft = base_config().peft
    peft.trainable, peft.lora.rank, peft.lora.dropout = "lora", 4, 0.3
    (loss_a, grads_a), (loss_b, grads_b) = step_result(unrolled, peft, 7), step_result(scanned, peft, 7)
    assert abs(loss_a - loss_b) < TOL, (loss_a, loss_b)  # the same dropout masks, layer by layer
    assert grads_a.keys() == grads_b.keys() and all("/lora/" in k for k in grads_a)
    for key in grads_a:
        np.testing.assert_allclose(grads_b[key], grads_a[key], atol=TOL, rtol=1e-4, err_msg=key)
    gj.save_adapter(scanned, tmp_path / "from_scanned")
    gj.load_adapter(load(saved), tmp_path / "from_scanned")  # and stacked ones onto an unrolled base


def test_everything_outside_the_model_sees_per_layer_names(saved, tmp_path):
    unrolled, scanned = load(saved), load(saved, scan_layers=True)
    assert any(k.endswith("resblocks/attn/in_proj/kernel") for k in
               ("/".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(scanned, nnx.Param))))
    a, b = flat_params(unrolled), flat_params(scanned)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert base_fingerprint(unrolled) == base_fingerprint(scanned)
    gj.export_open_clip(scanned, tmp_path / "open_clip")
    back = gj.create_model(pretrained=tmp_path / "open_clip")
    assert all(np.array_equal(v, a[k]) for k, v in flat_params(back).items())
    assert decay_mask(unrolled) == decay_mask(scanned)
    assert not decay_mask(scanned)["visual/transformer/resblocks/1/ln_1/scale"]  # a [L, W] stack is no matrix


def test_stacked_parameters_follow_their_layers_sharding_rules(saved):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
    rules = [(r"visual/transformer/resblocks/\d+/mlp/c_fc/kernel", [None, "fsdp"]), (".*", "fsdp")]
    scanned = nnx.state(load(saved, scan_layers=True), nnx.Param)
    specs = {"/".join(map(str, k)): v.get_value().spec
             for k, v in nnx.to_flat_state(sharding.param_shardings(scanned, mesh, rules, fsdp_min_size=1))}
    assert specs["visual/transformer/resblocks/mlp/c_fc/kernel"] == jax.sharding.PartitionSpec(None, None, "fsdp")
    assert specs["visual/transformer/resblocks/attn/in_proj/kernel"][0] is None  # the layer axis is never split
    unrolled = nnx.state(load(saved), nnx.Param)
    per_layer = {"/".join(map(str, k)): v.get_value().spec
                 for k, v in nnx.to_flat_state(sharding.param_shardings(unrolled, mesh, rules, fsdp_min_size=1))}
    for path, spec in specs.items():
        if "resblocks/" in path:
            layer0 = path.replace("resblocks/", "resblocks/0/")
            assert tuple(spec)[1:] == tuple(per_layer[layer0]) + (None,) * (len(spec) - 1 - len(per_layer[layer0]))


def test_a_partial_lock_of_a_scanned_tower_stops_with_one_line(saved):
    peft = base_config().peft
    peft.lock_image, peft.lock_image_unlocked_groups = True, 2  # the last block: 1 of 2
    with pytest.raises(ValueError, match="config.peft.lock_image_unlocked_groups: unlocking 1 of the 2 image"):
        split_trainable(load(saved, scan_layers=True), peft)
    peft.lock_image_unlocked_groups = 1  # only the projection: every block locked, fine when stacked
    _, trainable, _ = split_trainable(load(saved, scan_layers=True), peft)
    assert not any(str(k[0]) == "visual" and k[1] != "proj" for k, _ in nnx.to_flat_state(trainable))


def test_a_scanned_run_trains_and_resuming_it_unrolled_stops_with_one_line(tmp_path):
    overrides = [*SMALL, "--config.train.total_steps=4", "--config.train.checkpoint_every=4"]
    run(tmp_path / "scanned", *overrides, "--config.model.scan_layers=True")
    step, params = final_params(tmp_path / "scanned")
    assert step == 4 and any("['resblocks']['attn']" in k for k in params)  # stored stacked in the checkpoint
    assert np.isfinite(results(tmp_path / "scanned")["last"]["loss"])
    result = subprocess.run(command(tmp_path / "scanned", *overrides, "--config.train.total_steps=8"), env=env(),
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: config.model.scan_layers: the checkpoint")

"""LoRA and tower locking as partitions of the parameter state.

Fresh adapters change nothing; our LoRA layer (and its merge) equals peft's on a torch Linear; merged
exports equal the unmerged model through open_clip and transformers; the lock partitions equal
open_clip's `lock_image_tower` / `lock_text_tower`; a step moves only the trainable partition, keeps
no optimizer state and computes no weight gradient for the frozen one; LoRA on an fsdp mesh equals
one device; adapter files round-trip (also through the embed CLI's --adapter) and refuse another base."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import georsclip_jax as gj
from conftest import hf_embeddings
from georsclip_jax import sharding
from georsclip_jax.embed import main as embed_main
from georsclip_jax.interop.open_clip import open_clip_key
from georsclip_jax.models.layers import Linear
from georsclip_jax.models.lora import LoRA, LoRAConfig, LoRAParam, merge_params
from georsclip_jax.train.config import base_config
from georsclip_jax.train.optim import make_optimizer
from georsclip_jax.train.partition import split_trainable
from georsclip_jax.train.program import abstract_state, batch_structs, compile_step, make_program, with_shardings
from georsclip_jax.train.step import TrainState, make_train_step

TOL = 1e-5


def inputs(n=4, seed=0):
    pixels = np.random.default_rng(seed).normal(size=(n, 32, 32, 3)).astype(np.float32)
    captions = ["a harbour with boats", "a dense forest", "farmland strips", "a river in the desert"]
    return pixels, gj.get_tokenizer()(captions[:n])


def embeddings(model, pixels, tokens):
    return (np.asarray(model.encode_image(pixels, normalize=True)),
            np.asarray(model.encode_text(tokens, normalize=True)))


def with_lora(seed=0, randomize=True, **lora):
    """tiny with adapters on both towers; `randomize` gives B values (it starts at 0) so they matter."""
    model = gj.create_model("tiny", seed=seed)
    gj.add_lora(model, LoRAConfig(**{"rank": 4, "alpha": 8.0, **lora}), nnx.Rngs(seed + 1))
    if randomize:
        adapters = nnx.state(model, LoRAParam)
        keys = iter(jax.random.split(jax.random.key(seed + 2), len(jax.tree.leaves(adapters))))
        nnx.update(model, jax.tree.map(lambda x: 0.05 * jax.random.normal(next(keys), x.shape), adapters))
    return model


def peft_config(**fields):
    peft = base_config().peft
    for key, value in fields.items():
        if key.startswith("lora_"):
            peft.lora[key.removeprefix("lora_")] = value
        else:
            peft[key] = value
    return peft


def paths(state) -> set[str]:
    return {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(state)}


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, 77), np.int32)
    tokens[:, 0], tokens[:, 1:6], tokens[:, 6] = 49406, rng.integers(1, 49000, (n, 5)), 49407
    return {"image": rng.normal(size=(n, 32, 32, 3)).astype(np.float32), "tokens": tokens, "mask": np.ones(n, bool)}


def test_fresh_adapters_leave_every_output_unchanged():
    model = gj.create_model("tiny", seed=0)
    pixels, tokens = inputs()
    before = embeddings(model, pixels, tokens)
    gj.add_lora(model, LoRAConfig(rank=4, alpha=8.0), nnx.Rngs(1))
    adapters = nnx.state(model, LoRAParam)
    assert len(paths(adapters)) == 2 * 2 * 2 * 4  # 2 towers x 2 blocks x 4 layers x (A, B)
    for path, value in nnx.to_flat_state(adapters):
        assert bool(jnp.all(value.get_value() == 0)) == (path[-1] == "lora_b"), path
    for after, base in zip(embeddings(model, pixels, tokens), before):
        np.testing.assert_array_equal(after, base)


def test_lora_layer_and_merge_equal_peft_on_a_torch_linear():
    from peft import LoraConfig, get_peft_model

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(64, 48)

        def forward(self, x):
            return self.proj(x)

    torch.manual_seed(0)
    reference = get_peft_model(Net(), LoraConfig(r=4, lora_alpha=8, target_modules=["proj"], lora_dropout=0.0))
    layer = reference.base_model.model.proj
    assert not layer.lora_B["default"].weight.any()  # peft starts B at zero, as we do
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0, 0.1)
    weight, bias = layer.base_layer.weight.detach().numpy(), layer.base_layer.bias.detach().numpy()
    a, b = (layer.lora_A["default"].weight.detach().numpy(), layer.lora_B["default"].weight.detach().numpy())

    ours = Linear(64, 48, rngs=nnx.Rngs(0))
    ours.lora = LoRA(64, 48, LoRAConfig(rank=4, alpha=8.0), jnp.float32, nnx.Rngs(1))
    bound = 64**-0.5  # kaiming_uniform(a=sqrt 5) on peft's [4, 64] A = PyTorch's Linear init
    assert np.abs(a).max() <= bound and 0.8 * bound < float(jnp.abs(ours.lora.lora_a[...]).max()) <= bound
    ours.kernel.set_value(jnp.asarray(weight.T))
    ours.bias.set_value(jnp.asarray(bias))
    ours.lora.lora_a.set_value(jnp.asarray(a.T))
    ours.lora.lora_b.set_value(jnp.asarray(b.T))

    x = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(ours(x)), expected, atol=1e-6, rtol=1e-6)

    merged = merge_params({"p/kernel": weight.T, "p/lora/lora_a": a.T, "p/lora/lora_b": b.T}, 8 / 4)
    assert set(merged) == {"p/kernel"}
    peft_merged = reference.merge_and_unload().proj.weight.detach().numpy()
    np.testing.assert_allclose(merged["p/kernel"], peft_merged.T, atol=1e-6, rtol=1e-6)


def test_merged_export_equals_the_unmerged_model_in_open_clip_and_transformers(tmp_path):
    import open_clip
    from transformers import CLIPModel

    model = with_lora(seed=3)
    pixels, tokens = inputs()
    unmerged = embeddings(model, pixels, tokens)
    base = embeddings(gj.create_model("tiny", seed=3), pixels, tokens)
    assert np.abs(unmerged[0] - base[0]).max() > 1e-2  # the adapters matter

    gj.export_open_clip(model, tmp_path / "oc")
    reference, _ = open_clip.create_model_from_pretrained(f"local-dir:{tmp_path / 'oc'}")  # strict loading
    with torch.no_grad():
        theirs = (reference.encode_image(torch.from_numpy(pixels.transpose(0, 3, 1, 2)), normalize=True).numpy(),
                  reference.encode_text(torch.from_numpy(tokens.astype(np.int64)), normalize=True).numpy())
    for a, b in zip(theirs, unmerged):
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0)

    gj.export_hf(model, tmp_path / "hf")
    for a, b in zip(hf_embeddings(CLIPModel.from_pretrained(tmp_path / "hf").eval(), pixels, tokens), unmerged):
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0)

    for a, b in zip(embeddings(gj.merge_lora(model), pixels, tokens), unmerged):
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0)


@pytest.mark.parametrize("image_groups,text_layers", [(0, 0), (1, 1), (2, 3), (4, 2), (100, 100)])
def test_lock_partitions_equal_open_clips_locks(image_groups, text_layers):
    import open_clip

    reference = open_clip.model.CLIP(**gj.get_model_config("tiny").to_open_clip_json())
    reference.lock_image_tower(unlocked_groups=image_groups)
    reference.lock_text_tower(unlocked_layers=text_layers)
    expected = {name for name, p in reference.named_parameters() if p.requires_grad}
    peft = peft_config(lock_image=True, lock_image_unlocked_groups=image_groups, lock_text=True,
                       lock_text_unlocked_layers=text_layers)
    _, trainable, _ = split_trainable(gj.create_model("tiny"), peft)
    assert {open_clip_key(p)[0] for p in paths(trainable)} == expected


def test_norms_biases_and_lora_partitions():
    import open_clip

    names = [n for n, _ in open_clip.model.CLIP(**gj.get_model_config("tiny").to_open_clip_json()).named_parameters()]
    _, trainable, _ = split_trainable(gj.create_model("tiny"), peft_config(trainable="norms_biases"))
    assert {open_clip_key(p)[0] for p in paths(trainable)} == {n for n in names if "ln_" in n or n.endswith("bias")}

    model = with_lora(randomize=False, towers=("text",))
    _, trainable, frozen = split_trainable(model, peft_config(trainable="lora", lora_rank=4))
    assert paths(trainable) == paths(nnx.state(model, LoRAParam))
    assert all(not p.startswith("visual/") for p in paths(trainable)) and len(paths(trainable)) == 16
    _, trainable, _ = split_trainable(model, peft_config(trainable="lora,logit_scale", lora_rank=4))
    assert paths(trainable) == paths(nnx.state(model, LoRAParam)) | {"logit_scale"}
    with pytest.raises(ValueError, match="no parameter is trainable"):
        split_trainable(gj.create_model("tiny"), peft_config(trainable="lora"))


def setup_training(model, peft, lr=1e-2, **step_options):
    graphdef, params, frozen = split_trainable(model, peft)
    optim = base_config().optim
    optim.lr, optim.warmup_steps = lr, 0
    optimizer, schedule = make_optimizer(optim, 100, params)
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
    return state, frozen, make_train_step(graphdef, optimizer, schedule, **step_options)


@pytest.mark.parametrize("kind", ["lora", "lock_image", "norms_biases"])
def test_steps_move_only_the_trainable_partition(kind):
    if kind == "lora":
        model, peft = with_lora(randomize=False), peft_config(trainable="lora", lora_rank=4)
    else:
        model = gj.create_model("tiny", seed=0)
        peft = peft_config(lock_image=True) if kind == "lock_image" else peft_config(trainable="norms_biases")
    state, frozen, step = setup_training(model, peft)
    trainable = paths(state.params)
    adam = next(s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu"))
    assert paths(adam.mu) == trainable  # optimizer state exists for the trainable partition only
    frozen_before = jax.tree.map(np.array, frozen)
    trainable_before = jax.tree.map(np.array, state.params)
    step = jax.jit(step, donate_argnums=0)
    for i in range(3):
        state, _ = step(state, frozen, batch(seed=i))
    for (key, before), (_, after) in zip(nnx.to_flat_state(frozen_before), nnx.to_flat_state(frozen)):
        np.testing.assert_array_equal(np.asarray(after.get_value()), before.get_value(), err_msg=str(key))
    changed = [not np.array_equal(np.asarray(a.get_value()), b.get_value())
               for (_, a), (_, b) in zip(nnx.to_flat_state(state.params), nnx.to_flat_state(trainable_before))]
    assert sum(changed) >= 0.9 * len(changed)
    if kind == "lock_image":
        assert not any(p.startswith("visual/") for p in trainable) and "transformer/resblocks/0/attn/in_proj/kernel" in trainable


def step_flops(model, peft) -> float:
    """FLOPs of the trainer's own compiled step (train/program.py) on one device."""
    config = base_config()
    config.peft = peft
    config.train.global_batch_size = len(batch()["mask"])
    program, params, frozen = make_program(config, sharding.make_mesh({"data": 1}, jax.devices()[:1]), model, 100)
    _, report = compile_step(program, abstract_state(program, params), with_shardings(frozen, program.frozen_shardings),
                             batch_structs(config, model.preprocess.image_size, program.batch_sharding))
    return report["flops_per_step_per_device"]


def test_frozen_weights_get_no_gradient_computation():
    """Weight gradients of the frozen partition are never computed (not computed and then dropped):
    the compiled step does fewer FLOPs. A backward pass costs about twice the forward, half of it for
    weight gradients: LoRA keeps about 2/3 of full fine-tuning's FLOPs, a locked image tower skips
    that tower's backward, and with both towers locked (only logit_scale trains) the step is about
    the forward pass alone, 1/3."""
    full = step_flops(gj.create_model("tiny"), peft_config())
    lora = step_flops(with_lora(randomize=False), peft_config(trainable="lora", lora_rank=4))
    locked_image = step_flops(gj.create_model("tiny"), peft_config(lock_image=True))
    locked_both = step_flops(gj.create_model("tiny"), peft_config(lock_image=True, lock_text=True))
    assert lora < 0.8 * full and locked_both < locked_image < 0.9 * full, (full, lora, locked_image, locked_both)
    assert locked_both < 0.45 * full, (full, locked_both)


def test_lora_dropout_is_seeded_per_step_and_off_outside_training():
    model = with_lora(dropout=0.5)
    pixels, tokens = inputs()
    np.testing.assert_array_equal(embeddings(model, pixels, tokens)[0], embeddings(model, pixels, tokens)[0])
    peft = peft_config(trainable="lora", lora_rank=4, lora_dropout=0.5)
    results = []
    for seed in (0, 0, 1, None):
        state, frozen, step = setup_training(model, peft, dropout_seed=seed)
        results.append(float(jax.jit(step)(state, frozen, batch())[1]["loss"]))
    assert results[0] == results[1] and len({results[0], results[2], results[3]}) == 3


def test_lora_with_remat_and_accumulation_equals_the_plain_full_batch_step():
    peft = peft_config(trainable="lora", lora_rank=4)
    plain = with_lora(seed=5)
    remat = gj.create_model("tiny", seed=5, options=gj.ModelOptions(remat=True))
    gj.add_lora(remat, LoRAConfig(rank=4, alpha=8.0), nnx.Rngs(0))
    nnx.update(remat, nnx.state(plain, LoRAParam))
    results = []
    for model, accum_steps in ((plain, 1), (remat, 2)):
        # Adam's first step moves every entry by about lr whatever its gradient's size, so float noise
        # in a near-zero gradient becomes a step of up to lr: keep lr at the recipes' scale.
        state, frozen, step = setup_training(model, peft, lr=5e-4, accum_steps=accum_steps)
        state, metrics = jax.jit(step)(state, frozen, batch(8, seed=3))
        results.append((float(metrics["loss"]), jax.tree.leaves(state.params)))
    assert abs(results[0][0] - results[1][0]) < 1e-6
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)


def test_lora_steps_on_an_fsdp_mesh_equal_one_device():
    model = with_lora(seed=6, randomize=False)
    peft = peft_config(trainable="lora", lora_rank=4)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
    graphdef, full_state = nnx.split(model)
    placement = sharding.param_shardings(full_state, mesh, "fsdp", fsdp_min_size=1)
    specs = {"/".join(map(str, k)): s.get_value().spec for k, s in nnx.to_flat_state(placement)}
    P = jax.sharding.PartitionSpec
    for layer in ("visual/transformer/resblocks/0/attn/in_proj", "transformer/resblocks/1/mlp/c_proj"):
        kernel = tuple(specs[f"{layer}/kernel"]) + (None,) * (2 - len(specs[f"{layer}/kernel"]))
        assert "fsdp" in kernel
        assert specs[f"{layer}/lora/lora_a"] == P(kernel[0], None)
        assert specs[f"{layer}/lora/lora_b"] == P(None, kernel[1])
    on_mesh = nnx.merge(graphdef, jax.device_put(full_state, placement))
    on_one = with_lora(seed=6, randomize=False)  # its own buffers: the steps donate them

    results = []
    for m, batch_sharding in ((on_one, jax.sharding.SingleDeviceSharding(jax.devices()[0])),
                              (on_mesh, sharding.batch_sharding(mesh))):
        state, frozen, step = setup_training(m, peft, lr=1e-3)
        step = jax.jit(step, donate_argnums=0)
        for i in range(3):
            state, _ = step(state, frozen, jax.device_put(batch(16, seed=i), batch_sharding))
        results.append({"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(state.params)})
    one, mesh_result = results
    for key in one:
        np.testing.assert_allclose(mesh_result[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_adapter_files_round_trip_and_refuse_another_base(tmp_path):
    from georsclip_jax.interop import safetensors_io

    model = with_lora(seed=4)
    out = gj.save_adapter(model, tmp_path / "adapter")
    saved, _ = safetensors_io.load(out / "adapter.safetensors")
    assert set(saved) == paths(nnx.state(model, LoRAParam))

    pixels, tokens = inputs()
    loaded = gj.load_adapter(gj.create_model("tiny", seed=4), out)
    for a, b in zip(embeddings(loaded, pixels, tokens), embeddings(model, pixels, tokens)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="another base"):
        gj.load_adapter(gj.create_model("tiny", seed=5), out)
    gj.load_adapter(gj.create_model("tiny", seed=5), out, check_base=False)
    with pytest.raises(ValueError, match="another architecture"):
        gj.load_adapter(gj.create_model("tiny-h80"), out)

    captions = tmp_path / "captions.txt"
    captions.write_text("a harbour with boats\na dense forest\n")
    gj.save_pretrained(gj.create_model("tiny", seed=4), tmp_path / "base")
    embed_main(["--pretrained", str(tmp_path / "base"), "--adapter", str(out), "--texts", str(captions),
                "--out", str(tmp_path / "texts.npy")])
    np.testing.assert_allclose(np.load(tmp_path / "texts.npy"), embeddings(model, pixels, tokens)[1][:2], atol=1e-6)

    missing = dict(saved)
    del missing["visual/transformer/resblocks/0/attn/in_proj/lora/lora_a"]
    safetensors_io.save(out / "adapter.safetensors", missing)
    with pytest.raises(ValueError, match="adapter.safetensors: missing visual/transformer/resblocks/0/attn/in_proj"):
        gj.load_adapter(gj.create_model("tiny", seed=4), out)
    data = (out / "adapter.safetensors").read_bytes()
    (out / "adapter.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="adapter.safetensors"):
        gj.load_adapter(gj.create_model("tiny", seed=4), out)

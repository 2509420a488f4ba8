"""SkyCLIP's checkpoint format, written the way SkyScript's training script (open_clip's) saves it, and the
embeddings our model and open_clip's are compared on (tests/test_published_checkpoints.py and
benchmarks/check_published_checkpoints.py)."""

from __future__ import annotations

import numpy as np
import torch

import georsclip_jax as gj


def save_training_checkpoint(model: torch.nn.Module, path) -> int:
    """As SkyScript saves `epoch_20.pt` under DDP and AMP: `module.` keys, AdamW and grad-scaler state
    beside the weights. Returns the weights' bytes."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = sum(p.square().sum() for p in model.parameters())
    loss.backward()
    optimizer.step()  # exp_avg and exp_avg_sq: twice the weights
    model.zero_grad(set_to_none=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 20, "name": path.parent.name,
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(), "scaler": {"scale": 65536.0, "_growth_tracker": 0}}, path)
    return sum(v.numel() * v.element_size() for v in model.state_dict().values())


def embeddings(model, reference: bool, image_size: int = 32):
    """Normalized image and text embeddings of two fixed inputs, from ours or (reference) an open_clip model."""
    pixels = np.random.default_rng(0).normal(size=(2, image_size, image_size, 3)).astype(np.float32)
    tokens = gj.get_tokenizer()(["a roundabout between fields", "a harbour with boats"])
    if reference:
        with torch.no_grad():
            return (model.encode_image(torch.from_numpy(pixels.transpose(0, 3, 1, 2)), normalize=True).numpy(),
                    model.encode_text(torch.from_numpy(tokens.astype(np.int64)), normalize=True).numpy())
    return np.asarray(model.encode_image(pixels, normalize=True)), np.asarray(model.encode_text(tokens, normalize=True))

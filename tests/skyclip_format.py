"""SkyCLIP's checkpoint format, written the way SkyScript's training script (open_clip's) saves it."""

from __future__ import annotations

import torch


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

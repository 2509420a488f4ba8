"""LoRA on both towers of OpenAI's ViT-B/32 (QuickGELU) over RS5M: the base stays frozen and
unchanged; only the adapters (1.97 M parameters, 1.3 % of the model) train and are saved.

    python -m georsclip_jax.main --config configs/lora_rs5m_vitb32.py --workdir runs/b32_lora \\
        --config.data.train='RS5M/train/{pub11,rs3}-train-{0000..0031}.tar'

WORKDIR/adapter/ holds the adapters (load them onto the base with `georsclip_jax.load_adapter`);
with export.open_clip the merged model is written for open_clip too. GeoRSCLIP's own PEFT settings
were never published (eval spec §6, §7); rank 8 and alpha 16 are ITRA's LoRA preset, the targets
every attention and MLP projection. The base comes from the Hub, as in georsclip_rs5m_vitb32.py. Any recipe can switch LoRA on the same way (`config.peft`).
"""

import importlib.util
import os


def full_fine_tuning_config(arg: str):
    """The full fine-tuning recipe this one changes (read by path: config files are not a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "georsclip_rs5m_vitb32.py")
    spec = importlib.util.spec_from_file_location("georsclip_rs5m_vitb32", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def get_config(arg: str = ""):
    c = full_fine_tuning_config(arg)
    c.peft.trainable = "lora"
    c.peft.lora.rank = 8
    c.peft.lora.alpha = 16.0
    c.peft.lora.dropout = 0.05
    c.peft.lora.targets = "attn/in_proj,attn/out_proj,mlp/c_fc,mlp/c_proj"
    c.peft.lora.towers = "image,text"
    c.optim.lr = 1e-4                 # adapters start at zero: a larger step than full fine-tuning's
    c.optim.weight_decay = 0.01
    c.export.open_clip = True
    return c

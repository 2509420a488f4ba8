"""GeoRSCLIP ViT-H/14: RS5M domain training from LAION-2B ViT-H/14 (exact GELU), FSDP with remat.

    python -m georsclip_jax.main --config configs/georsclip_rs5m_vith14.py --workdir runs/h14 \\
        --config.model.init_from=open_clip_pytorch_model.bin --config.data.train='RS5M/train/{pub11,rs3}-train-{0000..0031}.tar'

Parameters and optimizer state are split over the "fsdp" axis (all devices by default); residual
blocks are rematerialized. Hyperparameters: see georsclip_rs5m_vitb32.py (unpublished upstream).
"""

from georsclip_jax.train.config import base_config


def get_config(arg: str = ""):
    c = base_config()
    c.model.name = "ViT-H-14"
    c.model.init_from = "open_clip_pytorch_model.bin"   # laion2b_s32b_b79k
    c.model.dtype = "bfloat16"
    c.model.remat = "full"
    c.data.kind = "tar"
    c.data.train = "RS5M/train/{pub11,rs3}-train-{0000..0031}.tar"
    c.data.augment = "georsclip"
    c.data.num_workers = 16
    c.train.global_batch_size = 2048
    c.train.epochs = 2.0                                # ITRA's H/14 checkpoint was `epoch_2.pt`
    c.train.checkpoint_every = 1000
    c.train.log_every = 50
    c.optim.lr = 5e-6
    c.optim.b2, c.optim.eps = 0.999, 1e-8
    c.optim.weight_decay = 0.2
    c.optim.warmup_steps = 500
    c.mesh = {"data": 1, "fsdp": -1}
    c.sharding.rules = "fsdp"
    c.eval.data_root = "rs5m_test_data"
    c.eval.every_steps = 2000
    return c

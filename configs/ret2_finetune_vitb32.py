"""The published RET-2 retrieval fine-tune of GeoRSCLIP ViT-B/32 (produced RS5M_ViT-B-32_RET-2.pt):
RSICD + RSITMD train sets, lr 5e-6, weight decay 0.5, batch 600, 7 epochs, 100 warmup steps,
gradient-norm clip 50 (author's answer in RS5M issue #12; eval spec §6).

    python -m georsclip_jax.main --config configs/ret2_finetune_vitb32.py --workdir runs/ret2 \\
        --config.model.init_from=RS5M_ViT-B-32.pt \\
        --config.data.train=rsicd/dataset_rsicd.json::rsitmd/dataset_RSITMD.json \\
        --config.data.image_root=rsicd/RSICD_images::rsitmd/images \\
        --config.data.exclude=lists/rsicd_duplicate.txt::lists/rsitmd_duplicate.txt

The `exclude` lists (pHash de-duplication of each train set against the other dataset's test set, as
RemoteCLIP did) are optional, one filename per line; `python -m georsclip_jax.dedup ... --out lists/`
writes them as lists/rsicd_duplicate.txt and lists/rsitmd_duplicate.txt (README, "De-duplication").
"""

from georsclip_jax.train.config import base_config


def get_config(arg: str = ""):
    c = base_config()
    c.model.name = "ViT-B-32-quickgelu"
    c.model.init_from = "RS5M_ViT-B-32.pt"
    c.data.kind = "karpathy"
    c.data.train = "rsicd/dataset_rsicd.json::rsitmd/dataset_RSITMD.json"
    c.data.image_root = "rsicd/RSICD_images::rsitmd/images"
    c.data.augment = "georsclip"
    c.train.global_batch_size = 600
    c.train.epochs = 7.0
    c.train.checkpoint_every = 100
    c.optim.lr = 5e-6
    c.optim.weight_decay = 0.5
    c.optim.warmup_steps = 100
    c.optim.grad_clip_norm = 50.0
    c.optim.b2, c.optim.eps = 0.999, 1e-8          # ITRA's AdamW defaults
    c.eval.data_root = "rs5m_test_data"
    c.eval.tasks = "retrieval"
    c.eval.every_steps = 100
    return c

"""Demo: a tiny CLIP trained from scratch on generated synthetic RS data, on CPU in about 2 minutes,
then zero-shot and retrieval on a held-out synthetic rs5m_test_data, a loss plot and an open_clip
export. Everything lands in WORKDIR (results.json, loss.png, metrics.jsonl, tensorboard/, open_clip/).

    python -m georsclip_jax.main --config configs/demo.py --workdir /tmp/georsclip_demo
    python -m georsclip_jax.main --config configs/demo.py:quick --workdir /tmp/quick   # the CI version
"""

from georsclip_jax.train.config import base_config


def get_config(arg: str = ""):
    c = base_config()
    c.model.name = "tiny"
    c.data.synthetic.train_samples = 4096
    c.data.synthetic.val_samples = 256
    c.data.synthetic.samples_per_shard = 512
    c.data.synthetic.min_size, c.data.synthetic.max_size = 48, 80
    c.data.synthetic.eval_per_class = 20
    c.data.synthetic.retrieval_images = 40
    c.data.augment = "open_clip"
    c.train.global_batch_size = 64
    c.train.total_steps = 300
    c.train.log_every = 10
    c.train.checkpoint_every = 100
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 0.1
    c.eval.tasks = "zeroshot,retrieval"
    c.eval.every_steps = 100
    c.eval.batch_size = 128
    c.export.open_clip = True
    if arg == "quick":
        c.data.synthetic.train_samples = 1024
        c.data.synthetic.eval_per_class = 8
        c.data.synthetic.retrieval_images = 16
        c.train.total_steps = 100
        c.train.checkpoint_every = 50
    return c

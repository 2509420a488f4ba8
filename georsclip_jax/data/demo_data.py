"""Where a run's data is: the config's own paths, or — for the demo and the tests, which download
nothing — RS-like data generated once under WORKDIR/data (data/synthetic.py) by process 0 while
the others wait.
"""

from __future__ import annotations

import jax

from georsclip_jax import storage


def run_data(config, outputs: storage.Outputs) -> dict:
    """{"train", "eval", "val"} paths ("" where there is none)."""
    if config.data.synthetic.train_samples:
        return generate(config, outputs)
    return {"train": config.data.train, "eval": config.eval.data_root, "val": config.data.val}


def generate(config, outputs: storage.Outputs) -> dict:
    """Generate the synthetic training shards, validation shards and rs5m_test_data once (a COMPLETE
    marker says they are whole; an interrupted generation is redone)."""
    from jax.experimental import multihost_utils

    from georsclip_jax.data import synthetic

    syn = config.data.synthetic
    root = storage.join(outputs.workdir, "data")
    if jax.process_index() == 0 and not storage.exists(storage.join(root, "COMPLETE")):
        local = outputs.path("data")  # the workdir itself, or its staging folder for object storage
        synthetic.write_rs5m_shards(f"{local}/train", syn.train_samples, syn.samples_per_shard,
                                    config.train.seed, (syn.min_size, syn.max_size))
        if syn.val_samples:
            synthetic.write_rs5m_shards(f"{local}/val", syn.val_samples, syn.samples_per_shard,
                                        config.train.seed, (syn.min_size, syn.max_size), "val", stream=1)
        synthetic.write_test_data(f"{local}/rs5m_test_data", syn.eval_per_class, syn.retrieval_images,
                                  syn.selo_images, seed=config.train.seed + 1)
        open(f"{local}/COMPLETE", "w").close()
        outputs.sync()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("synthetic data")
    return {"train": storage.join(root, "train", "*.tar"), "eval": storage.join(root, "rs5m_test_data"),
            "val": storage.join(root, "val", "*.tar") if syn.val_samples else ""}

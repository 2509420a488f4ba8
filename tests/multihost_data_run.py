"""One process of the 2-process data test (run by test_data_multihost.py, not collected by pytest).

usage: multihost_data_run.py PROCESS_ID PORT OUT_JSON SHARD [SHARD ...]"""

import json
import sys

import jax
import numpy as np


def batches(iterator, n=None):
    out = []
    for b in iterator:
        out.append({k: np.array(v) for k, v in b.items()})
        if n is not None and len(out) == n:
            break
    return out


def main():
    process_id, port, out_path, shards = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)

    from georsclip_jax.data.pipeline import DataIterator, PipelineOptions, SampleTransform, build_dataset
    from georsclip_jax.data.tar_shards import TarShardSource
    from georsclip_jax.models.configs import PreprocessConfig

    source = TarShardSource(shards)
    transform = SampleTransform(PreprocessConfig(image_size=32), augment="georsclip")
    here = dict(process_index=jax.process_index(), process_count=jax.process_count())
    epoch = DataIterator(build_dataset(source, transform, PipelineOptions(
        global_batch_size=8, num_epochs=1, drop_remainder=False, num_workers=1, **here)))
    seen = [int(i) for b in batches(epoch) for i, m in zip(b["id"], b["mask"]) if m]

    train = PipelineOptions(global_batch_size=8, seed=3, num_workers=1, **here)
    straight = batches(DataIterator(build_dataset(source, transform, train)), 7)
    first = DataIterator(build_dataset(source, transform, train))
    head = batches(first, 3)
    state = json.loads(json.dumps(first.get_state()))
    first.close()
    resumed = DataIterator(build_dataset(source, transform, train))
    resumed.set_state(state)
    tail = batches(resumed, 4)
    identical = all(np.array_equal(a[k], b[k]) for a, b in zip(straight, head + tail) for k in a)

    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    on_device = DataIterator(build_dataset(source, transform, train), sharding=sharding, prefetch=2)
    global_batch = next(on_device)
    local_rows = np.concatenate([np.asarray(s.data) for s in sorted(
        global_batch["id"].addressable_shards, key=lambda s: s.index[0].start)])
    global_id_sum = int(jax.jit(lambda x: x.sum())(global_batch["id"]))
    on_device.close()

    with open(out_path, "w") as f:
        json.dump({"seen": seen, "skipped": epoch.skipped, "resume_identical": identical,
                   "resume_state": state, "global_shape": list(global_batch["image"].shape),
                   "local_ids": local_rows.tolist(), "host_ids": straight[0]["id"].tolist(),
                   "global_id_sum": global_id_sum}, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()

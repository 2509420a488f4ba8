"""One process of the 2-process shard-indexing test (run by test_remote_reads.py, not collected by pytest).

usage: multihost_index_run.py PROCESS_ID PORT PATTERN WORKDIR OUT_JSON"""

import json
import sys

import jax


def main():
    process_id, port, pattern, workdir, out_path = sys.argv[1:]
    jax.config.update("jax_num_cpu_devices", 1)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=int(process_id))

    from georsclip_jax.data.index import Hosts
    from georsclip_jax.data.tar_shards import TarShardSource

    source = TarShardSource(pattern, workdir=workdir, hosts=Hosts.of_jax())
    with open(out_path, "w") as f:
        json.dump({"samples": len(source), "index": source.index.tobytes().hex()}, f)


if __name__ == "__main__":
    main()

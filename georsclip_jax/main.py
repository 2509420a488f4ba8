"""Training entry point.

    python -m georsclip_jax.main --config configs/demo.py --workdir /tmp/demo [--config.train.total_steps=50]

Re-running the same command in the same workdir resumes from its newest checkpoint. Multi-host:
on TPU pods `jax.distributed.initialize()` finds its peers itself; on GPU clusters it reads SLURM /
Open MPI environments, or take --coordinator, --num_processes and --process_id. The workdir may be
a gs:// bucket path.

    python -m georsclip_jax.main --config configs/X.py --workdir W --compile_only --topology v5p:4x4x4

plans the run instead (plan.py): its train step compiled for a TPU topology, memory and FLOPs per chip.
"""

from __future__ import annotations

import logging
import errno
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "recipe file (configs/*.py[:arg])", lock_config=True)
flags.DEFINE_string("workdir", None, "checkpoints, metrics and results go here", required=True)
flags.DEFINE_string("coordinator", None, "host:port of process 0, for multi-process runs without auto-detection")
flags.DEFINE_integer("num_processes", None, "number of processes (with --coordinator)")
flags.DEFINE_integer("process_id", None, "this process's index (with --coordinator)")
flags.DEFINE_bool("compile_only", False, "plan the run instead: compile its train step (for --topology, or "
                  "this machine's devices), print per-device memory and FLOPs, write WORKDIR/plan-*.json; "
                  "exit status 1 if it does not fit")
flags.DEFINE_string("topology", None, "with --compile_only: a TPU topology such as v5e:2x2 or v5p:4x4x4 "
                    "(compiled here by libtpu, no TPU needed)")
flags.DEFINE_bool("distributed", None, "force (or skip) jax.distributed.initialize; default: when a "
                  "coordinator is given or a cluster environment is detected")
flags.DEFINE_float("peer_timeout", 30.0, "multi-process runs: seconds a process may fall silent before the others "
                   "give it up as lost and exit (status 1, one line); train/peers.py")


def initialize_distributed():
    import os

    import jax

    cluster = any(v in os.environ for v in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                                            "MEGASCALE_COORDINATOR_ADDRESS"))
    if FLAGS.distributed is False or not (FLAGS.distributed or FLAGS.coordinator or cluster):
        return
    # JAX's own heartbeat check must fire after ours (train/peers.py): it aborts the survivors.
    heartbeat = max(100, int(3 * FLAGS.peer_timeout))
    if FLAGS.coordinator:
        jax.distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id,
                                   heartbeat_timeout_seconds=heartbeat)
    else:
        jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat)


def unknown_override(argv) -> str | None:
    """The first --config.a.b=... override that names no field of the schema."""
    from georsclip_jax.train.config import base_config

    schema = base_config()
    for arg in argv:
        if arg.startswith("--config.") and "=" in arg:
            path = arg[len("--"):].split("=", 1)[0]
            node = {"config": schema}
            for part in path.split("."):
                if not hasattr(node, "keys") or part not in node.keys():
                    return path
                node = node[part]
    return None


def parse_flags(argv):
    """absl parsing, with a bad --config override reported as one line instead of a traceback."""
    try:
        return FLAGS(argv)
    except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
        bad = unknown_override(argv)
        print(f"error: {bad}: unknown config key" if bad else f"error: {e}", file=sys.stderr)
        sys.exit(2)


# A full or read-only disk, a quota: the run cannot go on, and a traceback would not say more.
DISK_ERRORS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def main(argv):
    from georsclip_jax.checkpoint import CheckpointWriteError, report_write_failures_once
    from georsclip_jax.storage import StorageError
    from georsclip_jax.train.guard import Diverged

    del argv
    logging.getLogger().setLevel(logging.INFO)
    for noisy in ("absl", "jax"):  # Orbax's per-save chatter, JAX's backend probing
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # gcsfs logs a traceback per retried request; storage.py retries too, and reports an outage in one line
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
    report_write_failures_once()
    try:
        if FLAGS.compile_only:
            from georsclip_jax.plan import plan_and_report

            report = plan_and_report(FLAGS.config, FLAGS.workdir, FLAGS.topology)
            sys.exit(1 if report["fits"] is False else 0)
        initialize_distributed()
        import jax

        from georsclip_jax.train.guard import resume_command
        from georsclip_jax.train.loop import train_and_evaluate
        from georsclip_jax.train.peers import watch_peers

        peers = watch_peers(FLAGS.peer_timeout, resume_command())
        try:
            train_and_evaluate(FLAGS.config, FLAGS.workdir)
        except jax.errors.JaxRuntimeError:
            lost = peers and peers.confirm_lost()  # a collective fails when a peer dies: say that, not its traceback
            if lost:
                peers.exit(lost)
            raise
        if peers:
            peers.finish()
    except (Diverged, CheckpointWriteError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        print(f"error: cannot write {e.filename or FLAGS.workdir}: {e.strerror}", file=sys.stderr)
        sys.exit(1)
    except ValueError as e:
        if str(e).startswith(("config.", "--workdir", "--topology")):
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main, flags_parser=parse_flags)

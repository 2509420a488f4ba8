"""What a run says when it ends (process 0): how far it trained, its evaluation in the table
`evaluate` prints (GeoRSCLIP's README layout), and where everything it wrote is."""

from __future__ import annotations

from georsclip_jax import storage


def run_summary(results: dict, workdir: str, model_name: str) -> str:
    """`results` as train_and_evaluate returns it (results.json), once the run's files are written."""
    from georsclip_jax.evals.suite import markdown_table

    workdir = storage.resolve(workdir)
    last = results.get("last", {})
    loss = f", final loss {last['loss']:.4f}" if "loss" in last else ""
    if results["preempted"]:
        return (f"preempted: saved step {results['steps']} in {storage.join(workdir, 'checkpoints')}; "
                "re-run the same command to resume")
    lines = [f"trained {results['steps']} steps{loss}"]
    evaluation = dict(results.get("eval", {}))
    val_loss = evaluation.pop("val_loss", None)
    if val_loss is not None:
        lines.append(f"validation loss: {val_loss:.4f}")
    if evaluation:
        lines += ["", markdown_table(evaluation, model_name), ""]
    written = [("checkpoints", storage.join(workdir, "checkpoints")),
               ("metrics", storage.join(workdir, "metrics.jsonl")),
               ("results", storage.join(workdir, "results.json"))]
    if storage.exists(storage.join(workdir, "loss.png")):
        written.append(("loss curve", storage.join(workdir, "loss.png")))
    written += [(name, results[key]) for name, key in (("open_clip export", "open_clip_export"),
                                                        ("LoRA adapter", "adapter")) if key in results]
    width = max(len(name) for name, _ in written)
    lines += [f"{name + ':':<{width + 1}} {path}" for name, path in written]
    lines.append(f"{'TensorBoard:':<{width + 1}} tensorboard --logdir {storage.join(workdir, 'tensorboard')}")
    return "\n".join(lines)

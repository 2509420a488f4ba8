"""The README.md model card written with a Hugging Face export, so uploading the folder publishes a card:
architecture, activation, preprocessing, training data when known, and our evaluation in the Hub's
model-card metadata (`model-index`, which the Hub renders as an evaluation table and indexes).

Metadata is YAML front matter; every scalar is written in JSON syntax, which YAML reads unchanged, so
no YAML library is needed to write it.
"""

from __future__ import annotations

import json
import re

from georsclip_jax.models.configs import CLIPConfig, PreprocessConfig

RETRIEVAL = re.compile(r"retrieval-(image2text|text2image)-R@(\d+)-(.+)")
FEWSHOT = re.compile(r"(.+)-(\d+)shot-acc")
TASKS = {  # our result key -> (task type, task name, metric name), the key's dataset part excluded
    "zeroshot-acc": ("zero-shot-image-classification", "Zero-shot classification", "top-1 accuracy (%)"),
    "knn-acc": ("image-classification", "k-NN classification (frozen features)", "k-NN top-1 accuracy (%)"),
    "linear-probe-acc": ("image-classification", "Linear probe (frozen features)", "linear-probe top-1 accuracy (%)"),
}
DIRECTIONS = {"image2text": ("image-to-text", "Image-to-text retrieval"),
              "text2image": ("text-to-image", "Text-to-image retrieval")}


def metric_entry(key: str, value: float) -> tuple[tuple, str, dict] | None:
    """((task type, task name), dataset, metric) for one result key, or None for keys the card omits."""
    match = RETRIEVAL.fullmatch(key)
    if match:
        direction, k, dataset = match.groups()
        return DIRECTIONS[direction], dataset, {"type": "recall", "name": f"R@{k} (%)", "value": value}
    if key.startswith("retrieval-mean-recall-"):
        task = ("image-text-retrieval", "Image-text retrieval, mean recall")
        return task, key.removeprefix("retrieval-mean-recall-"), {"type": "recall", "name": "mR (%)", "value": value}
    match = FEWSHOT.fullmatch(key)
    if match:
        return (("image-classification", "Few-shot linear probe (frozen features)"), match.group(1),
                {"type": "accuracy", "name": f"{match.group(2)}-shot top-1 accuracy (%)", "value": value})
    if key.startswith("Selo_"):
        return (("semantic-localization", "Semantic localization"), "AIR-SLT",
                {"type": key.removeprefix("Selo_"), "name": key.removeprefix("Selo_"), "value": value})
    for suffix, (task_type, task_name, metric) in TASKS.items():
        if key.endswith(f"-{suffix}"):
            return (task_type, task_name), key.removesuffix(f"-{suffix}"), {"type": "accuracy", "name": metric,
                                                                            "value": value}
    return None


def read_results(path: str) -> dict[str, float]:
    """The evaluation in a results.json: a training run's (`eval`) or the evaluate CLI's (`results`)."""
    with open(path) as f:
        data = json.load(f)
    results = data.get("eval", data.get("results"))
    if not isinstance(results, dict):
        raise ValueError(f"{path}: no evaluation in it (expected an 'eval' or 'results' object)")
    return {k: v for k, v in results.items() if isinstance(v, (int, float))}


def model_index(name: str, results: dict[str, float]) -> list[dict]:
    """The Hub's `model-index`: one entry per (task, dataset), its metrics in our key order."""
    grouped: dict[tuple, list[dict]] = {}
    for key, value in results.items():
        entry = metric_entry(key, float(value))
        if entry is not None:
            task, dataset, metric = entry
            grouped.setdefault((task, dataset), []).append(metric)
    return [{"name": name, "results": [
        {"task": {"type": task_type, "name": task_name}, "dataset": {"name": dataset, "type": dataset.lower()},
         "metrics": metrics} for ((task_type, task_name), dataset), metrics in grouped.items()]}]


def _yaml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z_][\w-]*", key) else json.dumps(key)


def to_yaml(value, indent: int = 0) -> str:
    """Block-style YAML of nested dicts and lists; scalars in JSON syntax."""
    pad, lines = " " * indent, []
    if isinstance(value, dict):
        for key, item in value.items():
            nested = isinstance(item, (dict, list)) and item
            body = f"\n{to_yaml(item, indent + 2)}" if nested else f" {json.dumps(item)}\n"
            lines.append(f"{pad}{_yaml_key(key)}:{body}")
    else:
        for item in value:
            nested = isinstance(item, (dict, list)) and item
            lines.append(f"{pad}- " + (to_yaml(item, indent + 2)[indent + 2:] if nested else f"{json.dumps(item)}\n"))
    return "".join(lines)


def model_card(config: CLIPConfig, preprocess: PreprocessConfig, name: str, results: dict[str, float] | None = None,
               training_data: str | None = None) -> str:
    from georsclip_jax.evals.suite import markdown_table

    metadata = {"library_name": "transformers", "pipeline_tag": "zero-shot-image-classification",
                "tags": ["clip", "remote-sensing", "georsclip-jax"]}
    if results:
        metadata["model-index"] = model_index(name, results)
    v, t, pre = config.vision, config.text, preprocess
    why = " (OpenAI-derived weights need it)." if config.act == "quick_gelu" else "."
    preprocessing = (f"Resize the {pre.resize_mode} side to {pre.image_size} px ({pre.interpolation}), center-crop "
                     f"{pre.image_size}, RGB, normalize with mean {list(pre.mean)} and std {list(pre.std)} "
                     "(`preprocessor_config.json`); captions lowercased by the CLIP tokenizer.")
    lines = [
        "---", to_yaml(metadata).rstrip("\n"), "---", "", f"# {name}", "",
        "A CLIP model for remote-sensing imagery, exported from georsclip-jax to a transformers `CLIPModel`.", "",
        "## Architecture", "",
        f"- Image tower: ViT, {v.layers} layers, width {v.width}, patch {v.patch_size}, {v.image_size} px.",
        f"- Text tower: {t.layers} layers, width {t.width}, {t.heads} heads, context {t.context_length} tokens.",
        f"- Embedding dimension {config.embed_dim}; activation **{config.act}**{why}", "",
        "## Preprocessing", "", preprocessing, "",
        "## Training data", "", training_data or "Not recorded with this export.", "",
        "## Usage", "", "```python", "from transformers import CLIPModel, CLIPProcessor",
        'model = CLIPModel.from_pretrained("PATH_OR_REPO")',
        'processor = CLIPProcessor.from_pretrained("PATH_OR_REPO")',
        "```", ""]
    if results:
        intro = "GeoRSCLIP's protocols, computed by georsclip-jax (zero-shot and probe accuracies and recalls in %):"
        lines += ["## Evaluation", "", intro, "", markdown_table(results, name), ""]
    return "\n".join(lines)

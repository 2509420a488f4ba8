"""A tour of the public API on inputs it generates: create, preprocess, tokenize, encode, save, reload,
export to open_clip and Hugging Face, and check every step. (The trainer's demo will replace it.)

Usage: python -m georsclip_jax.tour [--model ViT-B-32-quickgelu] [--out /tmp/georsclip_tour]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from PIL import Image, ImageDraw

import georsclip_jax as gj
from georsclip_jax.interop.params import flat_params

SCENES = {
    "water": ((40, 90, 160), "a satellite image of open water"),
    "forest": ((30, 100, 40), "an aerial image of a dense green forest"),
    "desert": ((210, 180, 120), "a remote sensing image of a sandy desert"),
    "residential": ((150, 150, 150), "many buildings in a residential area"),
}


def draw_scene(color, seed: int, size: int = 256) -> Image.Image:
    """A plain overhead 'scene': a base colour with texture and a few rectangles (buildings, fields)."""
    rng = np.random.default_rng(seed)
    base = np.clip(np.asarray(color) + rng.normal(0, 18, (size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rng.integers(0, size - 40, 2)
        w, h = rng.integers(10, 40, 2)
        draw.rectangle([x, y, x + w, y + h], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return img


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32-quickgelu")
    p.add_argument("--out", default="/tmp/georsclip_tour")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    print(f"1. create_model({args.model!r}) with random weights (no downloads here)")
    model = gj.create_model(args.model, seed=0)
    tokenizer = gj.get_tokenizer(args.model)
    preprocess = gj.image_transform(model.config.vision.image_size)

    print("2. preprocess generated scenes (PIL, exact open_clip eval transform) and tokenize captions")
    names = list(SCENES)
    images = np.stack([preprocess(draw_scene(SCENES[n][0], seed=i)) for i, n in enumerate(names)])
    tokens = tokenizer([SCENES[n][1] for n in names])

    print("3. encode both towers (jitted) and compare")
    graphdef, state = nnx.split(model)
    encode = jax.jit(lambda s, x, t: nnx.merge(graphdef, s)(x, t))
    features = encode(state, images, tokens)
    similarity = np.asarray(features["image_features"] @ features["text_features"].T)

    print(f"4. save_pretrained -> {out / 'model'}, reload, check bit-exact")
    gj.save_pretrained(model, out / "model")
    reloaded = gj.create_model(pretrained=out / "model")
    before, after = flat_params(model), flat_params(reloaded)
    assert all(np.array_equal(before[k], after[k]) for k in before), "reload changed the weights"

    print(f"5. export_open_clip -> {out / 'open_clip'}, export_hf -> {out / 'hf'}, re-import both")
    gj.export_open_clip(model, out / "open_clip")
    gj.export_hf(model, out / "hf")
    max_diff = {}
    for fmt in ("open_clip", "hf"):
        back = gj.create_model(pretrained=out / fmt)
        again = jax.jit(lambda s, x, t, g=nnx.graphdef(back): nnx.merge(g, s)(x, t))(nnx.state(back), images, tokens)
        max_diff[fmt] = float(np.abs(np.asarray(again["image_features"]) - np.asarray(features["image_features"])).max())

    results = {
        "model": args.model, "act": model.config.act,
        "parameters_millions": sum(v.size for v in before.values()) / 1e6,
        "image_features_shape": list(features["image_features"].shape),
        "similarity": {n: dict(zip(names, map(float, row))) for n, row in zip(names, similarity)},
        "round_trip_max_abs_diff": max_diff,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n" + "image / caption".ljust(16) + "".join(f"{n:>13}" for n in names))
    for n, row in zip(names, similarity):
        print(f"{n:<16}" + "".join(f"{v:>13.4f}" for v in row))
    print(f"\nround trips (max |diff| of image features): {max_diff}")
    print(f"results: {out / 'results.json'} (random weights: similarities are not meaningful yet)")


if __name__ == "__main__":
    main()

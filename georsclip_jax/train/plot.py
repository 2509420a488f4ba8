"""The loss curve as a PNG, drawn with PIL (no plotting library needed at run time)."""

from __future__ import annotations

import json

from PIL import Image, ImageDraw

WIDTH, HEIGHT, MARGIN = 640, 400, 50


def plot_loss(jsonl_path: str, png_path: str) -> None:
    points = []
    with open(jsonl_path) as f:
        for line in f:
            row = json.loads(line)
            if "loss" in row:
                points.append((row["step"], row["loss"]))
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((MARGIN, MARGIN // 2, WIDTH - MARGIN // 2, HEIGHT - MARGIN), outline="black")
    draw.text((WIDTH // 2 - 40, 5), "training loss", fill="black")
    if points:
        steps, losses = zip(*sorted(points))
        s0, s1 = min(steps), max(max(steps), min(steps) + 1)
        l0, l1 = min(losses), max(max(losses), min(losses) + 1e-6)
        x = lambda s: MARGIN + (s - s0) / (s1 - s0) * (WIDTH - 1.5 * MARGIN)
        y = lambda v: HEIGHT - MARGIN - (v - l0) / (l1 - l0) * (HEIGHT - 1.5 * MARGIN)
        draw.line([(x(s), y(v)) for s, v in zip(steps, losses)], fill=(30, 90, 200), width=2)
        draw.text((5, MARGIN // 2), f"{l1:.2f}", fill="black")
        draw.text((5, HEIGHT - MARGIN - 10), f"{l0:.2f}", fill="black")
        draw.text((MARGIN, HEIGHT - MARGIN + 5), f"step {s0}", fill="black")
        draw.text((WIDTH - 2 * MARGIN, HEIGHT - MARGIN + 5), f"step {s1}", fill="black")
    img.save(png_path)

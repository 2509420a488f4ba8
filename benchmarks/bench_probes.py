"""Probe kernels vs scikit-learn on the same features: linear probe (logistic regression, one C) and k-NN.

Features: `--rows` L2-normalized vectors of `--dim` (default 50,000 x 768, ViT-L-sized embeddings) in
`--classes` overlapping Gaussian classes, 80 % train / 20 % test; both stop at gradient tolerance `--tol`. Ours: `probes.fit_logistic` (L-BFGS in
a jitted while_loop) and `probes.knn_predict` (sharded top-k + jitted vote); scikit-learn:
`LogisticRegression(C, lbfgs)` and `KNeighborsClassifier(k, metric="cosine", algorithm="brute")`. Same
process, interleaved, median of `--repeats`; compile time reported apart. Accuracies must agree.

Usage: python benchmarks/bench_probes.py [--rows 50000] [--dim 768] [--classes 45] [--repeats 3] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from georsclip_jax.evals import probes


def features(rows: int, dim: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=rows).astype(np.int32)
    x = rng.normal(size=(classes, dim))[labels] + 8.0 * rng.normal(size=(rows, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=45)
    parser.add_argument("--c", type=float, default=1.0)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--tol", type=float, default=1e-4, help="gradient tolerance, both (scikit-learn's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    x, y = features(args.rows, args.dim, args.classes)
    cut = int(0.8 * args.rows)
    train_x, train_y, test_x, test_y = x[:cut], y[:cut], x[cut:], y[cut:]
    padded_train, padded_test = probes.pad_with_mask(train_x, train_y, 256), probes.pad_with_mask(test_x, test_y, 256)
    c_grid = jnp.asarray([args.c], jnp.float32)

    def ours_probe():
        w, b = probes.fit_logistic(*padded_train, c_grid, num_classes=args.classes, max_iter=args.max_iter,
                                   tol=args.tol)
        return 100 * float(probes.logistic_accuracies(w, b, *padded_test)[0])

    def sklearn_probe():
        model = LogisticRegression(C=args.c, max_iter=args.max_iter, tol=args.tol).fit(train_x, train_y)
        return 100 * float((model.predict(test_x) == test_y).mean())

    def ours_knn():
        return 100 * float((probes.knn_predict(train_x, train_y, test_x, args.classes, args.k) == test_y).mean())

    def sklearn_knn():
        model = KNeighborsClassifier(args.k, metric="cosine", algorithm="brute").fit(train_x, train_y)
        return 100 * float((model.predict(test_x) == test_y).mean())

    compile_s = {"linear_probe": timed(ours_probe)[0], "knn": timed(ours_knn)[0]}  # first calls compile
    rows = {}
    for name, ours, theirs in (("linear_probe", ours_probe, sklearn_probe), ("knn", ours_knn, sklearn_knn)):
        ours_t, theirs_t = [], []
        for _ in range(args.repeats):
            t, ours_acc = timed(ours)
            ours_t.append(t)
            t, theirs_acc = timed(theirs)
            theirs_t.append(t)
        rows[name] = {"ours_s": statistics.median(ours_t), "sklearn_s": statistics.median(theirs_t),
                      "speedup": statistics.median(theirs_t) / statistics.median(ours_t), "ours_acc": ours_acc,
                      "sklearn_acc": theirs_acc, "first_call_s": compile_s[name]}
        r = rows[name]
        print(f"{name:12s}: ours {r['ours_s']:.2f} s (first call {r['first_call_s']:.2f} s), scikit-learn "
              f"{r['sklearn_s']:.2f} s, {r['speedup']:.2f}x; accuracy ours {r['ours_acc']:.2f} %, "
              f"scikit-learn {r['sklearn_acc']:.2f} %", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"host": platform.machine(), "cpus": os.cpu_count(), "devices": jax.device_count(),
                       **vars(args), "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()

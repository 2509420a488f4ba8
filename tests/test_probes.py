"""k-NN, few-shot ridge regression and the logistic linear probe against independent oracles:
NumPy (k-NN votes, least squares by lstsq) and scikit-learn's LogisticRegression."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from georsclip_jax.evals import probes


def clusters(n: int, dim: int, num_classes: int, seed: int, spread: float = 1.6):
    """Overlapping Gaussian classes, L2-normalized like CLIP embeddings: accuracy well below 100 %."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    labels = rng.integers(num_classes, size=n).astype(np.int32)
    x = centres[labels] + spread * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def knn_oracle(train_x, train_y, test_x, num_classes, k, weighted):
    scores = test_x.astype(np.float64) @ train_x.T.astype(np.float64)
    index = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(test_x), num_classes))
    for i, row in enumerate(index):
        for j in row:
            votes[i, train_y[j]] += scores[i, j] if weighted else 1.0
    return votes.argmax(1)


@pytest.mark.parametrize("weighted", [False, True])
def test_knn_equals_the_numpy_oracle(weighted):
    train_x, train_y = clusters(403, 24, 7, seed=0)  # 403 rows: padded over the 8 devices
    test_x, _ = clusters(150, 24, 7, seed=1)
    ours = probes.knn_predict(train_x, train_y, test_x, 7, k=9, weighted=weighted)
    np.testing.assert_array_equal(ours, knn_oracle(train_x, train_y, test_x, 7, 9, weighted))


def ridge_oracle(x, y, num_classes, l2):
    """argmin over (W, b) of ||X W + b - Y||^2 + l2 ||W||^2 as one least-squares problem in float64:
    [X 1; sqrt(l2) I 0] [W; b] = [Y; 0] (the bias column unpenalized)."""
    x = x.astype(np.float64)
    xw = (x - x.mean(0)) / (x.std(0) + 1e-5)
    n, dim = xw.shape
    targets = 2.0 * np.eye(num_classes)[y] - 1.0
    a = np.block([[xw, np.ones((n, 1))], [np.sqrt(l2) * np.eye(dim), np.zeros((dim, 1))]])
    b = np.concatenate([targets, np.zeros((dim, num_classes))])
    solution = np.linalg.lstsq(a, b, rcond=None)[0]
    return solution[:dim], solution[dim]


def digit_shots(shots: int, seed: int):
    """scikit-learn's 8x8 digits, `shots` per class: integer pixels with constant and near-duplicate
    columns, so the shots span fewer directions than their 64 dimensions (exactly, in float32 too)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    index = np.concatenate([rng.choice(np.flatnonzero(y == c), shots, replace=False) for c in range(10)])
    return x[index].astype(np.float32), y[index].astype(np.int32), 10


def duplicated_columns():
    x, y = clusters(100, 24, 5, seed=4)
    return np.concatenate([x, x[:, :8], np.full((100, 1), 0.25, np.float32)], axis=1), y, 5


def repeated_shots():
    x, y = clusters(10, 48, 5, seed=5)
    return np.concatenate([x, x]), np.concatenate([y, y]), 5


RIDGE_DATA = {
    "clusters N>=D": lambda: (*clusters(90, 16, 5, seed=2), 5),
    "clusters N<D": lambda: (*clusters(20, 48, 5, seed=2), 5),
    "digits 12-shot N>=D": lambda: digit_shots(12, seed=0),
    "digits 8-shot N>=D": lambda: digit_shots(8, seed=1),
    "digits 3-shot N<D": lambda: digit_shots(3, seed=2),
    "duplicated and constant columns": duplicated_columns,
    "repeated shots N<D": repeated_shots,
}


@pytest.mark.parametrize("data", RIDGE_DATA)
def test_fewshot_ridge_solution_equals_lstsq_over_the_whole_grid(data):
    """Every l2 of big_vision's grid, 2^-10 ... 2^19, within 1e-5 of max |W| of the float64 solution, on
    full-rank and rank-deficient shots (the null directions are where an eigh of X^T X in float32 went
    wrong by 14 % at 2^-10), with padding rows that must count for nothing."""
    x, y, num_classes = RIDGE_DATA[data]()
    x = x * 3.0 + 0.5  # whitening must undo scale and offset
    n, dim = x.shape
    padded_x = np.concatenate([x, np.full((6, dim), 7.0, np.float32)])  # padding rows: mask 0
    padded_y = np.concatenate([y, np.zeros(6, np.int32)])
    mask = np.concatenate([np.ones(n), np.zeros(6)]).astype(np.float32)
    grid = probes.FEWSHOT_L2_GRID
    with jax.default_matmul_precision("highest"):
        weights, bias, _, _ = probes.ridge_solutions(jnp.asarray(padded_x), jnp.asarray(padded_y), jnp.asarray(mask),
                                                     jnp.asarray(grid, jnp.float32), num_classes=num_classes)
    for got, l2 in zip(np.asarray(weights), grid):
        want, want_bias = ridge_oracle(x, y, num_classes, l2)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max(), err_msg=f"l2 = {l2}")
        np.testing.assert_allclose(np.asarray(bias), want_bias, rtol=0, atol=1e-5)


def test_fewshot_draws_are_seeded_and_choose_l2_on_the_held_out_split():
    x, y = clusters(600, 32, 6, seed=3)
    args = (x[:300], y[:300], x[300:400], y[300:400], x[400:], y[400:], 6)
    first = probes.fewshot_accuracy(*args, shots=4, seeds=(0, 1, 2))
    again = probes.fewshot_accuracy(*args, shots=4, seeds=(0, 1, 2))
    assert first == again
    assert len(first["draws"]) == 3 and first["std"] > 0
    assert np.isclose(first["acc"], np.mean(first["draws"]))
    more = probes.fewshot_accuracy(*args, shots=16, seeds=(0, 1, 2))
    assert more["acc"] > first["acc"] > 100 / 6  # more shots help; both beat chance


def test_linear_probe_matches_scikit_learn_at_the_same_c():
    x, y = clusters(1200, 64, 10, seed=4, spread=2.2)
    train_x, train_y, test_x, test_y = x[:900], y[:900], x[900:], y[900:]
    for c in (0.1, 1.0, 100.0):
        sk = LogisticRegression(C=c, max_iter=5000, tol=1e-8).fit(train_x, train_y)
        sk_acc = 100 * (sk.predict(test_x) == test_y).mean()
        w, b = probes.fit_logistic(*probes.pad_with_mask(train_x, train_y, 256), jnp.asarray([c], jnp.float32),
                                   num_classes=10, max_iter=1000)
        ours = 100 * float(probes.logistic_accuracies(w, b, *probes.pad_with_mask(test_x, test_y, 256))[0])
        assert abs(ours - sk_acc) <= 0.5, (c, ours, sk_acc)
        assert 20 < sk_acc < 99  # a probe that can be wrong


def test_linear_probe_sweep_picks_c_on_validation_and_refits():
    x, y = clusters(1000, 32, 5, seed=5, spread=2.0)
    result = probes.linear_probe_accuracy(x[:600], y[:600], x[600:800], y[600:800], x[800:], y[800:], 5)
    assert result["C"] in probes.LINEAR_PROBE_C_GRID
    sk = LogisticRegression(C=result["C"], max_iter=5000, tol=1e-8).fit(x[:800], y[:800])
    assert abs(result["acc"] - 100 * (sk.predict(x[800:]) == y[800:]).mean()) <= 0.5


def test_split_per_class_follows_remoteclip_rule():
    labels = np.array([0, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0])
    names = ["e.jpg", "b.jpg", "a.jpg", "a.jpg", "d.jpg", "c.jpg", "c.jpg", "f.jpg", "e.jpg", "d.jpg", "g.jpg"]
    train, test = probes.split_per_class(labels, names)
    # class 0 sorted: a(2) c(5) d(4) e(0) f(7) g(10): 6 * 0.8 -> first 4 train; class 1: a(3) b(1) c(6) d(9) e(8)
    assert sorted(train.tolist()) == sorted([2, 5, 4, 0, 3, 1, 6, 9])
    assert sorted(test.tolist()) == [7, 8, 10]

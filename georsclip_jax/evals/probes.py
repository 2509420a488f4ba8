"""Classifiers on frozen image embeddings: k-NN, few-shot ridge regression, logistic linear probe.

What RemoteCLIP and SkyScript report beside zero-shot, as jitted kernels over fixed shapes (padding
rows carry mask 0), so evaluating new parameters never recompiles:
- k-NN: cosine top-k over the train embeddings (`topk.topk_search`, sharded), majority or
  similarity-weighted vote; ties go to the lower class index.
- few-shot (big_vision's `fewshot_lsr`): n-way k-shot draws, features whitened on the shots, an
  unpenalized bias, closed-form L2-regularized least squares onto one-hot targets in {-1, 1},
  solved for a whole grid of regularizations from one eigendecomposition; the regularization is
  chosen on a held-out part of the train split, accuracy reported on the test split.
- linear probe: multinomial logistic regression with scikit-learn's objective (C times the summed
  cross-entropy plus half the squared weight norm; bias unpenalized), L-BFGS in a jitted loop, every
  C of the sweep fitted at once (vmap); C chosen on a validation split, then refit on the train split.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from georsclip_jax.evals.topk import pad_rows, topk_search

FEWSHOT_L2_GRID = tuple(2.0 ** i for i in range(-10, 20))   # big_vision's grid
LINEAR_PROBE_C_GRID = tuple(10.0 ** i for i in range(-4, 5))


# --- k-NN -----------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("num_classes", "weighted"))
def _vote(scores, neighbour_labels, *, num_classes: int, weighted: bool):
    weights = scores if weighted else jnp.ones_like(scores)
    votes = (jax.nn.one_hot(neighbour_labels, num_classes) * weights[..., None]).sum(1)
    return jnp.argmax(votes, axis=1)  # first maximum: ties go to the lower class index


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int, k: int = 20,
                weighted: bool = False, mesh=None) -> np.ndarray:
    """Class of each test row by its k most cosine-similar train rows (embeddings L2-normalized)."""
    k = min(k, len(train_x))
    scores, index = topk_search(test_x, train_x, k, mesh=mesh)
    return np.asarray(_vote(scores, np.asarray(train_y)[index], num_classes=num_classes, weighted=weighted))


# --- few-shot: closed-form ridge regression -------------------------------------------------------

def _whiten(x, mean, std):
    return (x - mean) / std


@functools.partial(jax.jit, static_argnames="num_classes")
def ridge_solutions(x, y, mask, l2_grid, *, num_classes: int):
    """(W [len(l2_grid), D, C], b [C], mean, std): for every l2 at once, W and b minimizing
    ||X W + b - Y||^2 + l2 ||W||^2, X the shots whitened (mean 0, std 1 over the unmasked rows), Y
    one-hot in {-1, 1}; masked rows count for nothing. big_vision appends a constant feature of 100
    for the bias (almost unpenalized); here it is exactly unpenalized, which centring makes separable
    (b = mean of Y) and keeps X well conditioned in float32."""
    valid = mask[:, None]
    count = mask.sum()
    mean = (x * valid).sum(0, keepdims=True) / count
    std = jnp.sqrt((jnp.square(x - mean) * valid).sum(0, keepdims=True) / count) + 1e-5
    xw = _whiten(x, mean, std) * valid
    targets = 2.0 * jax.nn.one_hot(y, num_classes) - 1.0
    bias = (targets * valid).sum(0) / count
    centred = (targets - bias) * valid
    # X = U S V^T: W = V diag(s / (s^2 + l2)) U^T Y for every l2, from one SVD of X (not an eigh of
    # X^T X, which would square X's condition number). Directions the shots do not span (constant or
    # duplicated feature columns, repeated shots) have s = 0, which float32 returns as rounding noise:
    # they are dropped below lstsq's own cutoff, eps * max(N, D) * s_max.
    u, s, vt = jnp.linalg.svd(xw, full_matrices=False)
    kept = s > jnp.finfo(s.dtype).eps * max(xw.shape) * s[0]
    rhs = u.T @ centred
    weights = jax.vmap(lambda l2: (vt.T * jnp.where(kept, s / (s * s + l2), 0.0)[None, :]) @ rhs)(l2_grid)
    return weights, bias, mean, std


@jax.jit
def _ridge_accuracies(weights, bias, mean, std, x, y, mask):
    """Accuracy [len(grid)] of every weight matrix on the masked rows (x, y)."""
    scores = jnp.einsum("nd,gdc->gnc", _whiten(x, mean, std), weights) + bias
    hits = (jnp.argmax(scores, axis=-1) == y[None]) * mask[None]
    return hits.sum(1) / mask.sum()


def _draw_shots(labels: np.ndarray, shots: int, num_classes: int, rng: np.random.Generator):
    """Indices [num_classes * shots] (k per class, fewer where a class has fewer; -1 pads) and mask."""
    index = np.full(num_classes * shots, -1, np.int64)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        chosen = rng.choice(members, min(shots, len(members)), replace=False)
        index[c * shots:c * shots + len(chosen)] = chosen
    return index, index >= 0


def fewshot_accuracy(train_x, train_y, val_x, val_y, test_x, test_y, num_classes: int, shots: int,
                     seeds=(0, 1, 2, 3, 4), l2_grid=FEWSHOT_L2_GRID) -> dict:
    """Mean and std (percent) over seeded draws of `shots` per class; l2 chosen per draw on (val_x, val_y)."""
    grid = jnp.asarray(l2_grid, jnp.float32)
    val, test = pad_with_mask(val_x, val_y, 256), pad_with_mask(test_x, test_y, 256)
    accuracies, chosen = [], []
    for seed in seeds:
        index, mask = _draw_shots(np.asarray(train_y), shots, num_classes, np.random.default_rng([seed, shots]))
        weights, bias, mean, std = ridge_solutions(jnp.asarray(train_x[np.maximum(index, 0)]),
                                             jnp.asarray(train_y[np.maximum(index, 0)]),
                                             jnp.asarray(mask, jnp.float32), grid, num_classes=num_classes)
        best = int(np.argmax(np.asarray(_ridge_accuracies(weights, bias, mean, std, *val))))
        accuracies.append(100 * float(_ridge_accuracies(weights[best:best + 1], bias, mean, std, *test)[0]))
        chosen.append(l2_grid[best])
    return {"acc": float(np.mean(accuracies)), "std": float(np.std(accuracies)), "draws": accuracies, "l2": chosen}


# --- linear probe: logistic regression ------------------------------------------------------------

def _logistic_objective(params, x, y_onehot, mask, penalty):
    """scikit-learn's objective divided by C * n: mean cross-entropy + ||W||^2 / (2 C n)."""
    w, b = params
    ce = -(y_onehot * jax.nn.log_softmax(x @ w + b)).sum(-1)
    return (ce * mask).sum() / mask.sum() + 0.5 * penalty * jnp.sum(w * w)


@functools.partial(jax.jit, static_argnames=("num_classes", "max_iter"))
def fit_logistic(x, y, mask, c_grid, *, num_classes: int, max_iter: int = 500, tol: float = 1e-6):
    """(W [len(c_grid), D, C], b [len(c_grid), C]): one L-BFGS fit per C, vmapped."""
    y_onehot = jax.nn.one_hot(y, num_classes) * mask[:, None]
    count = mask.sum()
    optimizer = optax.lbfgs()

    def fit(c):
        objective = functools.partial(_logistic_objective, x=x, y_onehot=y_onehot, mask=mask, penalty=1.0 / (c * count))
        value_and_grad = optax.value_and_grad_from_state(objective)
        params = (jnp.zeros((x.shape[1], num_classes), x.dtype), jnp.zeros((num_classes,), x.dtype))

        def step(carry):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = optimizer.update(grad, state, params, value=value, grad=grad, value_fn=objective)
            return optax.apply_updates(params, updates), state

        def unfinished(carry):
            _, state = carry
            count = optax.tree.get(state, "count")
            return (count == 0) | ((count < max_iter) & (optax.tree.norm(optax.tree.get(state, "grad")) >= tol))

        params, _ = jax.lax.while_loop(unfinished, step, (params, optimizer.init(params)))
        return params

    return jax.vmap(fit)(c_grid)


@jax.jit
def logistic_accuracies(w, b, x, y, mask):
    hits = (jnp.argmax(jnp.einsum("nd,gdc->gnc", x, w) + b[:, None], axis=-1) == y[None]) * mask[None]
    return hits.sum(1) / mask.sum()


def linear_probe_accuracy(train_x, train_y, val_x, val_y, test_x, test_y, num_classes: int,
                          c_grid=LINEAR_PROBE_C_GRID, max_iter: int = 500, pad_to: int = 256) -> dict:
    """C chosen on (val_x, val_y) from fits on the train rows, then refit on train + val; test accuracy.
    Rows are padded to a multiple of `pad_to` (masked), so similar-sized sets share compilations."""
    grid = jnp.asarray(c_grid, jnp.float32)
    w, b = fit_logistic(*pad_with_mask(train_x, train_y, pad_to), grid, num_classes=num_classes, max_iter=max_iter)
    val_acc = np.asarray(logistic_accuracies(w, b, *pad_with_mask(val_x, val_y, pad_to)))
    best = int(np.argmax(val_acc))
    w, b = fit_logistic(*pad_with_mask(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]), pad_to),
                        grid[best:best + 1], num_classes=num_classes, max_iter=max_iter)
    test_acc = logistic_accuracies(w, b, *pad_with_mask(test_x, test_y, pad_to))
    return {"acc": 100 * float(test_acc[0]), "C": float(c_grid[best]), "val_acc": 100 * float(val_acc[best])}


def pad_with_mask(x: np.ndarray, y: np.ndarray, multiple: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x, y, mask) with rows padded to a multiple; padding rows have mask 0."""
    mask = np.ones(len(x), np.float32)
    return tuple(jnp.asarray(pad_rows(np.asarray(a), multiple)) for a in (x, y, mask))


def split_per_class(labels: np.ndarray, names, train_fraction: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """RemoteCLIP's rule for sets without official splits: per class, files sorted by name, the first
    floor(80 %) train, the rest test. Returns (train indices, test indices)."""
    train, test = [], []
    for c in np.unique(labels):
        members = sorted(np.flatnonzero(labels == c), key=lambda i: (names[i], i))
        cut = int(len(members) * train_fraction)
        train += members[:cut]
        test += members[cut:]
    return np.asarray(sorted(train), np.int64), np.asarray(sorted(test), np.int64)


PROBE_TASKS = ("knn", "fewshot", "linear_probe")


def evaluate_probes(embeddings: np.ndarray, labels: np.ndarray, names, num_classes: int, tasks=PROBE_TASKS,
                    knn_k: int = 20, shots=(1, 4, 8, 16), draws: int = 5, mesh=None) -> dict:
    """The probe tasks on one classification set's embeddings, split by RemoteCLIP's rule (train 80 %,
    test 20 %; the train part split again 80/20 into fit and validation for the hyperparameters).
    Returns {"knn": acc, "fewshot": {shots: {"acc", "std", ...}}, "linear_probe": {"acc", "C", ...}} (%)."""
    train, test = split_per_class(labels, names)
    fit_part, val_part = split_per_class(labels[train], [names[i] for i in train])
    fit, val = train[fit_part], train[val_part]
    x, y = np.asarray(embeddings, np.float32), np.asarray(labels, np.int32)
    out = {}
    if "knn" in tasks:
        predicted = knn_predict(x[train], y[train], x[test], num_classes, knn_k, mesh=mesh)
        out["knn"] = 100 * float((predicted == y[test]).mean())
    if "fewshot" in tasks:
        out["fewshot"] = {k: fewshot_accuracy(x[fit], y[fit], x[val], y[val], x[test], y[test], num_classes, k,
                                              seeds=tuple(range(draws))) for k in shots}
    if "linear_probe" in tasks:
        out["linear_probe"] = linear_probe_accuracy(x[fit], y[fit], x[val], y[val], x[test], y[test], num_classes)
    return out

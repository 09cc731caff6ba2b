"""Aggregate scores as rliable defines them (Agarwal et al., 2021, "Deep RL at the Edge of the
Statistical Precipice"), in numpy only.

Scores are matrices ``[runs, games]``: ``scores[n, m]`` is run ``n`` on game ``m``. As in
``rliable/metrics.py``:

* :func:`aggregate_mean` / :func:`aggregate_median`: mean / median over games of the per-game
  mean over runs;
* :func:`iqm`: the interquartile mean, ``scipy.stats.trim_mean(scores, 0.25, axis=None)``,
  i.e. the mean of the middle 50% of *all* run x game scores.

:func:`stratified_bootstrap_ci` is rliable's ``StratifiedBootstrap`` with the percentile
interval (``get_interval_estimates(..., method='percentile', task_bootstrap=False)``): each
replicate redraws, independently for every game, that game's runs with replacement.

Every metric here also accepts a batch ``[..., runs, games]`` and reduces the last two axes,
so the bootstrap evaluates all replicates in one vectorized call. A 1-D input is read as one
run over games (e.g. per-game mean scores).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Metric = Callable[[np.ndarray], np.ndarray]


def _as_matrix(scores: np.ndarray | list) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError(f"expected a score matrix [runs, games], found a scalar {x!r}")
    if x.ndim == 1:
        x = x[None, :]
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"expected a non-empty score matrix [runs, games], found shape {x.shape}")
    return x


def trim_mean(values: np.ndarray | list, proportion_to_cut: float, axis: int | None = None) -> np.ndarray | float:
    """``scipy.stats.trim_mean``: mean after cutting ``int(proportion_to_cut * n)`` values at
    each end of the sorted data (``axis=None``: of all values, flattened)."""
    a = np.asarray(values, dtype=np.float64)
    if axis is None:
        a, axis = a.reshape(-1), 0
    n = a.shape[axis]
    if n == 0:
        raise ValueError("trim_mean of an empty array")
    lowercut = int(proportion_to_cut * n)
    uppercut = n - lowercut
    if lowercut >= uppercut:
        raise ValueError(f"proportion_to_cut={proportion_to_cut} leaves no value of {n}")
    part = np.partition(a, (lowercut, uppercut - 1), axis=axis)
    kept = np.take(part, np.arange(lowercut, uppercut), axis=axis)
    out = kept.mean(axis=axis)
    return float(out) if out.ndim == 0 else out


def iqm(scores: np.ndarray | list) -> np.ndarray | float:
    """Interquartile mean: 25% trimmed mean of all run x game scores (rliable ``aggregate_iqm``).

    ``[runs, games]`` (or 1-D) -> float; ``[..., runs, games]`` -> ``[...]``.
    """
    x = _as_matrix(scores)
    flat = x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])
    return trim_mean(flat, 0.25, axis=-1)


def aggregate_mean(scores: np.ndarray | list) -> np.ndarray | float:
    """Mean over games of the per-game mean over runs (rliable ``aggregate_mean``)."""
    out = _as_matrix(scores).mean(axis=-2).mean(axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def aggregate_median(scores: np.ndarray | list) -> np.ndarray | float:
    """Median over games of the per-game mean over runs (rliable ``aggregate_median``)."""
    out = np.median(_as_matrix(scores).mean(axis=-2), axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def iqm_of_game_means(scores: np.ndarray | list) -> np.ndarray | float:
    """IQM over games of the per-game mean over runs (one point per game)."""
    return iqm(_as_matrix(scores).mean(axis=-2, keepdims=True))


def stratified_bootstrap_ci(
    score_matrix: np.ndarray | list,
    metric: Metric,
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile confidence interval of ``metric`` by stratified bootstrap over runs.

    Each of ``reps`` replicates redraws, for every game independently, ``runs`` of that game's
    runs with replacement (rliable's ``StratifiedBootstrap`` with ``task_bootstrap=False``);
    the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of
    ``metric`` over the replicates. Deterministic for a given ``seed``.

    ``metric`` maps ``[runs, games]`` to a number. The metrics of this module also take a
    batch ``[reps, runs, games]`` and are evaluated on all replicates at once; another callable
    whose output is not one value per replicate is called on each replicate in turn.

    Returns ``(lower, upper)``.
    """
    x = _as_matrix(score_matrix)
    if x.ndim != 2:
        raise ValueError(f"expected a score matrix [runs, games], found shape {x.shape}")
    if reps < 1:
        raise ValueError(f"reps must be at least 1, found {reps}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), found {confidence}")
    runs, games = x.shape
    rng = np.random.default_rng(seed)
    # Replicates are drawn in chunks of at most ~4M scores to bound memory.
    chunk = max(1, (1 << 22) // (runs * games))
    values = []
    for start in range(0, reps, chunk):
        n = min(chunk, reps - start)
        rows = rng.integers(0, runs, size=(n, runs, games))
        samples = x[rows, np.arange(games)]  # [n, runs, games]: game m keeps its own column
        out = np.asarray(metric(samples), dtype=np.float64)
        if out.shape != (n,):
            out = np.array([float(metric(s)) for s in samples])
        values.append(out)
    stats = np.concatenate(values)
    alpha = 1.0 - confidence
    lower, upper = np.percentile(stats, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(lower), float(upper)

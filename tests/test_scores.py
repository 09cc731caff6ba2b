"""rliable's aggregate metrics and stratified bootstrap, checked on hand-made numbers."""

import numpy as np
import pytest

from scaled_ql.eval.scores import (
    aggregate_mean,
    aggregate_median,
    iqm,
    iqm_of_game_means,
    stratified_bootstrap_ci,
    trim_mean,
)


def test_iqm_is_mean_of_middle_half():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    # Order does not matter and the matrix is flattened (axis=None, as rliable does).
    assert iqm(np.array([[8, 1, 6, 3], [2, 7, 4, 5]])) == pytest.approx(4.5)


def test_iqm_follows_scipy_trim_mean_rounding():
    # scipy cuts int(0.25 * n) values from each end: n=10 cuts 2 -> mean of 3..8.
    assert iqm(np.arange(1, 11)) == pytest.approx(5.5)
    # n=3 cuts nothing.
    assert iqm([1.0, 2.0, 30.0]) == pytest.approx(11.0)
    assert trim_mean([1, 2, 3, 4, 100], 0.2) == pytest.approx(3.0)
    assert trim_mean(np.array([[1, 9], [2, 8], [3, 7]]), 0.34, axis=0).tolist() == [2.0, 8.0]
    with pytest.raises(ValueError):
        trim_mean([1.0, 2.0], 0.5)


def test_iqm_ignores_outliers():
    assert iqm(np.array([[0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1e6]])) == pytest.approx(1.0)


def test_mean_median_and_game_iqm_average_runs_first():
    scores = np.array([[1.0, 2.0, 10.0], [3.0, 4.0, 20.0]])  # per-game means 2, 3, 15
    assert aggregate_mean(scores) == pytest.approx(20.0 / 3.0)
    assert aggregate_median(scores) == pytest.approx(3.0)
    assert iqm_of_game_means(scores) == pytest.approx(20.0 / 3.0)  # 3 points: nothing trimmed
    per_game = np.array([[5.0, 1.0, 2.0, 3.0, 4.0, 100.0, -50.0, 6.0]])
    assert iqm_of_game_means(per_game) == pytest.approx(3.5)  # mean of 2, 3, 4, 5


def test_metrics_reduce_last_two_axes_of_a_batch():
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(5, 3, 7))
    for metric in (iqm, aggregate_mean, aggregate_median, iqm_of_game_means):
        np.testing.assert_allclose(metric(batch), [metric(m) for m in batch])


def test_bootstrap_ci_brackets_point_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    scores = rng.normal(loc=[0.5, 1.0, 2.0, 0.1, 0.8], scale=0.3, size=(10, 5))
    for metric in (iqm, aggregate_mean, aggregate_median):
        lo, hi = stratified_bootstrap_ci(scores, metric, reps=500, seed=3)
        assert lo < metric(scores) < hi
        assert (lo, hi) == stratified_bootstrap_ci(scores, metric, reps=500, seed=3)
    assert stratified_bootstrap_ci(scores, iqm, reps=500, seed=4) != stratified_bootstrap_ci(scores, iqm, reps=500, seed=3)


def test_bootstrap_ci_is_zero_width_when_nothing_varies():
    scores = np.full((6, 4), 0.37)
    assert stratified_bootstrap_ci(scores, iqm, reps=200, seed=0) == pytest.approx((0.37, 0.37))
    # One run per game: every resample is the data itself.
    one_run = np.array([[0.1, 0.5, 0.9, 2.0]])
    assert stratified_bootstrap_ci(one_run, aggregate_mean, reps=50, seed=0) == pytest.approx((0.875, 0.875))


def test_bootstrap_resamples_runs_within_each_game():
    # Game 0 scores are 0 or 1, game 1 scores 100 or 101: a resample of game 0's column
    # must only ever contain game 0's runs, so its mean stays within [0, 1].
    scores = np.array([[0.0, 100.0], [1.0, 101.0], [0.0, 101.0], [1.0, 100.0]])
    lo, hi = stratified_bootstrap_ci(scores, lambda m: float(np.mean(m[:, 0])), reps=300, seed=0)
    assert 0.0 <= lo < hi <= 1.0
    # By hand: a game's resampled mean is Binomial(4, 1/2) / 4; the 2.5% and 97.5% points of
    # the mean over 2 games of such means are well inside [0, 1] and symmetric about 0.5.
    lo, hi = stratified_bootstrap_ci(scores - [0.0, 100.0], aggregate_mean, reps=4000, seed=0)
    assert lo == pytest.approx(1.0 - hi, abs=0.05) and 0.1 < lo < 0.4


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="confidence"):
        stratified_bootstrap_ci(np.ones((2, 2)), iqm, reps=10, seed=0, confidence=1.5)
    with pytest.raises(ValueError, match="non-empty"):
        stratified_bootstrap_ci(np.ones((0, 2)), iqm, reps=10, seed=0)

"""Evaluation: ALE episodes of a policy, human-normalized scores, rliable aggregates, plots.

The score functions (numpy only) import eagerly; the ALE evaluator and the plots load on first
use, so ``scaled_ql.eval.scores`` needs neither ale_py nor matplotlib.

The evaluator's entry point is ``scaled_ql.eval.evaluate.evaluate`` (import it from the
module: ``scaled_ql.eval.evaluate`` is the module, not re-bound to the function).
"""

from __future__ import annotations

from typing import Any

from scaled_ql.eval.scores import (
    aggregate_mean,
    aggregate_median,
    iqm,
    stratified_bootstrap_ci,
    trim_mean,
)

_LAZY = {
    "evaluate_game": "scaled_ql.eval.evaluate",
    "aggregate_scores": "scaled_ql.eval.evaluate",
    "format_score_table": "scaled_ql.eval.evaluate",
    "plot_normalized_scores": "scaled_ql.eval.plots",
}

__all__ = [
    "aggregate_mean",
    "aggregate_median",
    "iqm",
    "stratified_bootstrap_ci",
    "trim_mean",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib  # the lazy names above: ALE and matplotlib load on first use, not with the scores

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scaled_ql.eval' has no attribute '{name}'")

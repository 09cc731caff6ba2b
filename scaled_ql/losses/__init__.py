"""Losses: pure functions of tensors that return tensors (and detached metrics), and the
algorithms built from them.

Every function asserts its input shapes at entry and raises ValueError naming the argument,
the expected and the found shape, so nothing broadcasts silently. ``VALUE_KINDS`` holds each
value representation (``model.value``) with its TD loss; ``ALGORITHMS`` each learning algorithm
(``loss.algorithm``: q_learning with its Cal-QL variant, bc, iql, brac), built once from the
config by :func:`make_algorithm` and called as ``algorithm(outputs, batch) -> (loss, metrics)``.
"""

from scaled_ql.losses.algorithms import (ALGORITHMS, Algorithm, CalQL, NetworkOutputs, Passes, QLearning, check_algorithm,
                                         make_algorithm)
from scaled_ql.losses.cql import cql_penalty
from scaled_ql.losses.distributional import c51_td_loss, categorical_projection, hl_gauss_target, hl_gauss_td_loss
from scaled_ql.losses.dr3 import dr3_penalty
from scaled_ql.losses.td import double_q_target_scalar, gather_actions, scalar_td_loss
from scaled_ql.losses.total import ValueOutput, per_game_q, total_loss
from scaled_ql.losses.values import VALUE_KINDS, ValueKind

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "CalQL",
    "NetworkOutputs",
    "Passes",
    "QLearning",
    "VALUE_KINDS",
    "ValueKind",
    "ValueOutput",
    "c51_td_loss",
    "categorical_projection",
    "check_algorithm",
    "cql_penalty",
    "double_q_target_scalar",
    "dr3_penalty",
    "gather_actions",
    "hl_gauss_target",
    "hl_gauss_td_loss",
    "make_algorithm",
    "per_game_q",
    "scalar_td_loss",
    "total_loss",
]

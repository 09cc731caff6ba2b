"""Losses: pure functions of tensors that return tensors (and detached metrics).

Every function asserts its input shapes at entry and raises ValueError naming the argument,
the expected and the found shape, so nothing broadcasts silently. ``TD_LOSSES`` maps each value
representation (``model.value``) to its TD loss; :func:`total_loss` dispatches through it.
``ALGORITHM_LOSSES`` maps each ``loss.algorithm`` (q_learning, bc, iql, brac) to its loss.
"""

from scaled_ql.losses.algorithms import ALGORITHM_LOSSES, AlgorithmLoss, LossInputs, algorithm_loss
from scaled_ql.losses.cql import cql_penalty
from scaled_ql.losses.distributional import c51_td_loss, categorical_projection, hl_gauss_target, hl_gauss_td_loss
from scaled_ql.losses.dr3 import dr3_penalty
from scaled_ql.losses.td import double_q_target_scalar, gather_actions, scalar_td_loss
from scaled_ql.losses.total import TD_LOSSES, TDInputs, TDLoss, ValueOutput, per_game_q, total_loss

__all__ = [
    "ALGORITHM_LOSSES",
    "AlgorithmLoss",
    "LossInputs",
    "algorithm_loss",
    "TD_LOSSES",
    "TDInputs",
    "TDLoss",
    "ValueOutput",
    "c51_td_loss",
    "categorical_projection",
    "cql_penalty",
    "double_q_target_scalar",
    "dr3_penalty",
    "gather_actions",
    "hl_gauss_target",
    "hl_gauss_td_loss",
    "per_game_q",
    "scalar_td_loss",
    "total_loss",
]

"""Losses: pure functions of tensors that return tensors (and detached metrics).

Every function asserts its input shapes at entry and raises ValueError naming the argument,
the expected and the found shape, so nothing broadcasts silently.
"""

from scaled_ql.losses.cql import cql_penalty
from scaled_ql.losses.distributional import c51_td_loss, categorical_projection
from scaled_ql.losses.dr3 import dr3_penalty
from scaled_ql.losses.td import double_q_target_scalar, gather_actions, scalar_td_loss
from scaled_ql.losses.total import ValueOutput, per_game_q, total_loss

__all__ = [
    "ValueOutput",
    "c51_td_loss",
    "categorical_projection",
    "cql_penalty",
    "double_q_target_scalar",
    "dr3_penalty",
    "gather_actions",
    "per_game_q",
    "scalar_td_loss",
    "total_loss",
]

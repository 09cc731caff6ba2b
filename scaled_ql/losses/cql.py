"""Conservative Q-learning for discrete actions, CQL(H) (Kumar et al., 2020, eq. 4)."""

from __future__ import annotations

import torch
from torch import Tensor

from scaled_ql.losses.td import check_action, check_shape, gather_actions


def cql_penalty(q: Tensor, action: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """penalty = mean_b [ logsumexp_a Q(s_b, a) - Q(s_b, a_data) ]: pushes down all actions'
    values (softmax-weighted) and pushes up the data action's. Actions with Q = -inf (absent in
    the sample's game) get zero weight in the logsumexp and zero gradient. For C51 pass the
    expected Q. q [B, A], action int64 [B].

    Returns (penalty, {"q/logsumexp": mean_b logsumexp_a Q(s_b, a)}), the metric detached.
    """
    check_shape("q", q, "[B, A]", (None, None))
    check_action("action", action, q.shape[0])
    q = q.float()
    lse = torch.logsumexp(q, dim=-1)
    return (lse - gather_actions(q, action)).mean(), {"q/logsumexp": lse.mean().detach()}

"""Behaviour cloning: a classifier of the data action, the baseline offline Q-learning must beat
(as in Kumar et al., 2023, Scaled QL, and Agarwal et al., 2020, where BC on DQN-Replay is the
reference point for offline agents)."""

from __future__ import annotations

import torch
from torch import Tensor

from scaled_ql.losses.td import check_action, check_shape, gather_actions


def bc_loss(logits: Tensor, action: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """loss = mean_b -log softmax(logits_b)[a_data_b], the cross-entropy of the data action.

    logits [B, A] with -inf at actions absent in the sample's game (they get probability 0 and
    zero gradient; a data action whose logit is -inf gives an infinite loss, which the masks
    rule out); action int64 [B]. Computed in float32.

    Returns (loss, metrics), metrics detached:
      bc/accuracy  fraction of samples whose argmax_a logits is the data action;
      bc/entropy   mean_b entropy of softmax(logits_b) over the valid actions (nats).
    """
    check_shape("logits", logits, "[B, A]", (None, None))
    check_action("action", action, logits.shape[0])
    log_probs = logits.float().log_softmax(-1)
    loss = -gather_actions(log_probs, action).mean()
    with torch.no_grad():
        probs = log_probs.exp()
        # 0 * log 0 is 0 for the masked actions (where() rather than 0 * -inf = nan).
        entropy = -torch.where(probs > 0, probs * log_probs, torch.zeros_like(probs)).sum(-1)
        metrics = {
            "bc/accuracy": (logits.argmax(-1) == action).float().mean(),
            "bc/entropy": entropy.mean(),
        }
    return loss, metrics


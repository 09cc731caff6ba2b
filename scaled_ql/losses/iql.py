"""Implicit Q-learning, IQL (Kostrikov, Nair & Levine, ICLR 2022, "Offline Reinforcement Learning
with Implicit Q-Learning"), for discrete actions.

IQL never evaluates Q at an action outside the data. Three regressions, each on in-sample
(s, a_data) pairs:

  value   (eq. 5)  L_V  = E_D[ L2^tau(Q_target(s, a) - V(s)) ],  L2^tau(u) = |tau - 1(u < 0)| u^2
  Q       (eq. 6)  L_Q  = E_D[ (r + gamma V(s') - Q(s, a))^2 ]
  policy  (eq. 7)  L_pi = E_D[ -exp(beta (Q_target(s, a) - V(s))) log pi(a | s) ]

With tau > 1/2 the expectile V(s) approaches the maximum of Q over the actions the data supports
as tau -> 1, so the Q regression backs up an in-sample maximum instead of max_a Q(s', a). For
discrete actions nothing else changes: pi is a softmax over the game's actions (-inf logits
masked) and log pi(a | s) the log-softmax of the data action. The reference code
(github.com/ikostrikov/implicit_q_learning; CORL's ``iql.py``) clips exp(beta A) at 100 and uses
expectile 0.7 / beta 3 (locomotion) or 0.9 / 10 (AntMaze).

Here ``discount`` is the batch's (gamma^k after k steps, 0 after a terminal), so the Q target is
the n-step r_{t:t+k} + gamma^k V(s_{t+k}).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from scaled_ql.losses.td import check_action, check_shape, gather_actions


def iql_value_loss(v: Tensor, q_data_target: Tensor, expectile: float) -> Tensor:
    """mean_b |tau - 1(u_b < 0)| * u_b^2 with u_b = Q_target(s_b, a_data_b) - V(s_b), tau = ``expectile``.

    v V(s) [B] (gets the gradient); q_data_target [B], the target network's Q at the data action
    (detached here); expectile tau in (0, 1), 0.5 being the mean (half the MSE). Computed in float32.
    """
    if not 0.0 < expectile < 1.0:
        raise ValueError(f"expectile: expected a number in (0, 1), found {expectile!r}")
    check_shape("v", v, "[B]", (None,))
    check_shape("q_data_target", q_data_target, "[B]", tuple(v.shape))
    u = q_data_target.detach().float() - v.float()
    weight = torch.where(u < 0, 1.0 - expectile, expectile)
    return (weight * u.square()).mean()


def iql_q_loss(
    q: Tensor, action: Tensor, reward: Tensor, discount: Tensor, next_v: Tensor, huber_delta: float | None = None
) -> Tensor:
    """mean_b loss(y_b - Q(s_b, a_data_b)), y_b = reward_b + discount_b * V(s'_b) (no gradient).

    loss is the squared error (the paper's, ``huber_delta`` None) or the Huber loss with that
    delta (the repository's TD loss; see :func:`scaled_ql.losses.td.scalar_td_loss`).
    q [B, A], action int64 [B], reward and discount [B] (the batch's n-step return and gamma^k or
    0), next_v V(s') [B] from the value network (detached here). Computed in float32.
    """
    check_shape("q", q, "[B, A]", (None, None))
    b = q.shape[0]
    check_action("action", action, b)
    check_shape("reward", reward, "[B]", (b,))
    check_shape("discount", discount, "[B]", (b,))
    check_shape("next_v", next_v, "[B]", (b,))
    target = (reward.float() + discount.float() * next_v.detach().float()).detach()
    q_data = gather_actions(q, action).float()
    if huber_delta is None:
        return F.mse_loss(q_data, target)
    return F.huber_loss(q_data, target, delta=huber_delta)


def iql_policy_loss(policy_logits: Tensor, action: Tensor, advantage: Tensor, beta: float, max_weight: float = 100.0) -> Tensor:
    """Advantage-weighted behaviour cloning: mean_b -w_b * log softmax(policy_logits_b)[a_data_b],
    w_b = min(exp(beta * A_b), max_weight) with A_b = Q_target(s_b, a_data_b) - V(s_b) (no gradient).

    policy_logits [B, A] (-inf at absent actions), action int64 [B], advantage [B] (detached
    here); beta >= 0 the inverse temperature (beta = 0 is plain BC); max_weight > 0 the clip
    (100 in the reference code). Computed in float32.
    """
    if not beta >= 0:
        raise ValueError(f"beta: expected a number >= 0, found {beta!r}")
    if not max_weight > 0:
        raise ValueError(f"max_weight: expected a positive number, found {max_weight!r}")
    check_shape("policy_logits", policy_logits, "[B, A]", (None, None))
    b = policy_logits.shape[0]
    check_action("action", action, b)
    check_shape("advantage", advantage, "[B]", (b,))
    weight = torch.exp(beta * advantage.detach().float()).clamp(max=max_weight)
    log_prob = gather_actions(policy_logits.float().log_softmax(-1), action)
    return -(weight * log_prob).mean()

"""C51: the categorical projection and the distributional cross-entropy TD loss.

Bellemare, Dabney & Munos (2017), "A Distributional Perspective on Reinforcement Learning",
Algorithm 1; the dense form below is Dopamine's ``project_distribution`` / rlax's
``categorical_l2_project``. Scaled QL (Kumar et al., 2023) trains with this loss plus CQL.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scaled_ql.losses.td import check_action, check_shape, gather_actions, next_actions


def categorical_projection(target_support: Tensor, probs: Tensor, support: Tensor) -> Tensor:
    """Project the distribution with atoms ``target_support`` [B, M] and masses ``probs`` [B, M]
    onto the fixed, evenly spaced ``support`` z [M] (= linspace(v_min, v_max, M)).

    Each target atom Tz_j, clipped to [v_min, v_max], splits its mass between its two
    neighbouring atoms in proportion to closeness:
        out[b, i] = sum_j clip(1 - |clip(Tz_bj) - z_i| / dz, 0, 1) * probs[b, j],  dz = z_1 - z_0.
    Rows keep their mass, all of it lands inside the support, and the mean is kept when every
    Tz_j lies inside [v_min, v_max]. For a TD target, target_support = r + discount * z.
    """
    check_shape("support", support, "[M]", (None,))
    m = support.shape[0]
    if m < 2:
        raise ValueError(f"support: expected at least 2 atoms, found {m}")
    check_shape("target_support", target_support, "[B, M]", (None, m))
    check_shape("probs", probs, "[B, M]", tuple(target_support.shape))
    clipped = target_support.clamp(support[0], support[-1])
    dz = support[1] - support[0]
    # weights[b, i, j]: share of target atom j that goes to support atom i.
    weights = (1 - (clipped[:, None, :] - support[None, :, None]).abs() / dz).clamp(0, 1)
    return (weights * probs[:, None, :]).sum(-1)


def c51_td_loss(
    logits: Tensor,
    action: Tensor,
    reward: Tensor,
    discount: Tensor,
    next_logits_target: Tensor,
    next_q_online: Tensor,
    next_q_target: Tensor,
    support: Tensor,
    double_q: bool,
) -> tuple[Tensor, Tensor]:
    """Cross-entropy between the projected target distribution and the online one at a_data:

        p'   = softmax(next_logits_target[b, a*]),  a* = argmax_a Q_online(s', a) (double_q)
                                                       or argmax_a Q_target(s', a)
        m    = categorical_projection(r + discount * z, p', z)        (no gradient)
        loss = mean_b  -sum_i m_bi * log softmax(logits[b, a_data])_i

    logits, next_logits_target [B, A, M]; action int64 [B]; reward, discount [B]; next_q_online,
    next_q_target [B, A] (expected Q, -inf at missing actions; they choose a*); support z [M].
    Returns (loss, td_error [B]) with td_error = E_m[z] - E_online[z | s, a_data], detached
    (the scalar TD error of the two means, for diagnostics). Computed in float32.
    """
    check_shape("logits", logits, "[B, A, M]", (None, None, None))
    b, a, m = logits.shape
    check_action("action", action, b)
    check_shape("reward", reward, "[B]", (b,))
    check_shape("discount", discount, "[B]", (b,))
    check_shape("next_logits_target", next_logits_target, "[B, A, M]", (b, a, m))
    check_shape("next_q_online", next_q_online, "[B, A]", (b, a))
    check_shape("next_q_target", next_q_target, "[B, A]", (b, a))
    check_shape("support", support, "[M]", (m,))
    support = support.float()
    with torch.no_grad():
        a_star = next_actions(next_q_online, next_q_target, double_q)
        next_probs = gather_actions(next_logits_target, a_star).float().softmax(-1)
        target_support = reward.float()[:, None] + discount.float()[:, None] * support
        target = categorical_projection(target_support, next_probs, support)
    log_probs = gather_actions(logits, action).float().log_softmax(-1)
    loss = -(target * log_probs).sum(-1).mean()
    td_error = ((target - log_probs.exp()) * support).sum(-1).detach()
    return loss, td_error

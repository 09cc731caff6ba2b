"""Distributional TD losses: C51 and HL-Gauss, both cross-entropies against a target histogram.

C51: Bellemare, Dabney & Munos (2017), "A Distributional Perspective on Reinforcement Learning",
Algorithm 1; the dense projection below is Dopamine's ``project_distribution`` / rlax's
``categorical_l2_project``. Scaled QL (Kumar et al., 2023) trains with this loss plus CQL.

HL-Gauss: Farebrother et al. (2024), "Stop Regressing: Training Value Functions via
Classification for Scalable Deep RL": the scalar TD target is turned into a histogram by
Gaussian smoothing over fixed bins, and the network's bin logits are trained by cross-entropy.
"""

from __future__ import annotations

import math

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


def hl_gauss_target(target: Tensor, support: Tensor, sigma: float) -> Tensor:
    """The HL-Gauss target histogram (Farebrother et al., 2024, "Stop Regressing", Sec. 3.1 and
    their reference ``transform_to_probs``): the probability mass that N(y, s^2) puts in each bin.

    The bins have evenly spaced centers ``support`` z [M] and width w = z_1 - z_0, so their edges
    are e_0 = z_0 - w/2, ..., e_M = z_{M-1} + w/2 (= linspace(v_min, v_max, M + 1)); s = sigma * w
    (``sigma`` in bin widths, the paper's sigma/zeta, 0.75 by default). With Phi the normal CDF,
        p_bi = (Phi((e_{i+1} - y_b)/s) - Phi((e_i - y_b)/s)) / (Phi((e_M - y_b)/s) - Phi((e_0 - y_b)/s)),
    computed as differences of erf((e - y)/(sqrt(2) s)) like the reference code. Dividing by
    the mass inside [e_0, e_M] renormalizes: the Gaussian's tails outside the support are
    spread over the bins in proportion to their mass rather than piled onto the edge bins.

    One departure from the reference code: ``target`` y [B] is first clamped to [e_0, e_M]. Inside
    the support this changes nothing; outside, the reference's normalizer underflows to 0 in
    float32 once y is a few s beyond an edge (0/0 = NaN), while the clamped target puts its mass
    on the edge bins (about 82% on the last bin and 17% on the one before at sigma = 0.75), as
    C51's projection clips to its end atoms. Returns probs [B, M], rows summing to 1, no gradient.
    """
    check_shape("support", support, "[M]", (None,))
    if support.shape[0] < 2:
        raise ValueError(f"support: expected at least 2 bin centers, found {support.shape[0]}")
    check_shape("target", target, "[B]", (None,))
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive number of bin widths, found {sigma!r}")
    with torch.no_grad():
        support = support.float()
        width = support[1] - support[0]
        edges = torch.cat([support - width / 2, support[-1:] + width / 2])  # [M + 1]
        y = target.float().clamp(edges[0], edges[-1])
        cdf = torch.erf((edges - y[:, None]) / (math.sqrt(2.0) * sigma * width))  # [B, M + 1], 2 Phi - 1
        return (cdf[:, 1:] - cdf[:, :-1]) / (cdf[:, -1:] - cdf[:, :1])


def hl_gauss_td_loss(logits: Tensor, action: Tensor, target: Tensor, support: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """Cross-entropy between the HL-Gauss histogram of the scalar TD target and the online
    distribution at a_data (Farebrother et al., 2024):

        p    = hl_gauss_target(y, z, sigma)                            (no gradient)
        loss = mean_b  -sum_i p_bi * log softmax(logits[b, a_data])_i

    logits [B, A, M]; action int64 [B]; target y [B], the scalar TD target r + discount *
    Q_target(s', a*) with Q the expected value sum_i softmax(logits)_i z_i (detached here);
    support z [M], the bin centers; sigma in bin widths. Returns (loss, td_error [B]) with
    td_error = y - E_online[z | s, a_data], detached. Computed in float32.
    """
    check_shape("logits", logits, "[B, A, M]", (None, None, None))
    b, _, m = logits.shape
    check_action("action", action, b)
    check_shape("target", target, "[B]", (b,))
    check_shape("support", support, "[M]", (m,))
    probs = hl_gauss_target(target.detach(), support, sigma)
    log_probs = gather_actions(logits, action).float().log_softmax(-1)
    loss = -(probs * log_probs).sum(-1).mean()
    td_error = (target.detach().float() - (log_probs.exp() * support.float()).sum(-1)).detach()
    return loss, td_error

"""Calibrated Q-learning, Cal-QL (Nakamoto et al., NeurIPS 2023, "Cal-QL: Calibrated Offline RL
Pre-Training for Efficient Online Fine-Tuning"), in its discrete-action form.

Cal-QL's conservative regularizer (paper eq. 5.1) is CQL's with the pushed-down values bounded
below by a reference value V_ref(s), the discounted Monte-Carlo return of the policy that
collected the data:

    R(theta) = E_{s~D, a~pi(.|s)} [ max(Q(s, a), V_ref(s)) ] - E_{s,a~D} [ Q(s, a) ]

Only the push-down term is clipped; the push-up term on the data action is CQL's. In the
reference code (github.com/nakamotoo/Cal-QL, and CORL's ``algorithms/finetune/cal_ql.py``) the
clip is ``torch.maximum(q, mc_return)`` applied to the Q-values of the *policy's* actions (at s
and s') before the logsumexp; the uniformly random actions' Q-values are left unclipped.

Discrete form. CQL(H) (Kumar et al., 2020, eq. 4) chooses pi as the maximizer of
E_{a~pi}[Q(s, a)] + H(pi(.|s)), which is pi = softmax(Q(s, .)) with value logsumexp_a Q(s, a);
with A discrete the expectation is exact, no sampled actions or importance weights. The same
entropy-regularized maximization over pi of the Cal-QL push-down term gives

    max_pi E_{a~pi}[max(Q(s, a), V_ref(s))] + H(pi) = logsumexp_a max(Q(s, a), V_ref(s)),

    calql_penalty = mean_b [ logsumexp_a max(Q(s_b, a), V_ref(s_b)) - Q(s_b, a_data_b) ].

Where Q(s, a) < V_ref(s) the clipped value is the constant V_ref, so that action gets no
push-down gradient (Q is already below what the data policy achieves: calibrated), while its
exp(V_ref) still weighs in the softmax that shares the push-down among the other actions. With
V_ref = -inf everywhere this is CQL's penalty exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scaled_ql.losses.td import check_action, check_shape, gather_actions


def calql_penalty(q: Tensor, action: Tensor, mc_return: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """penalty = mean_b [ logsumexp_a max(Q(s_b, a), V_ref(s_b)) - Q(s_b, a_data) ] (discrete
    Cal-QL, see the module docstring for the derivation).

    q [B, A] (for C51 or HL-Gauss pass the expected Q), action int64 [B], mc_return V_ref float
    [B] (``Batch.mc_return``: discounted return-to-go of the data, no gradient). Actions with
    Q = -inf (absent in the sample's game) stay -inf: the clip applies only to valid actions, so
    max(-inf, V_ref) never brings them back into the logsumexp. Computed in float32.

    Returns (penalty, metrics), metrics detached:
      calql/clipped_fraction  fraction of the (sample, valid action) pairs with Q(s, a) < V_ref(s)
                              (CORL's ``bound_rate``);
      q/logsumexp_calibrated  mean_b logsumexp_a max(Q(s_b, a), V_ref(s_b)).
    """
    check_shape("q", q, "[B, A]", (None, None))
    b = q.shape[0]
    check_action("action", action, b)
    check_shape("mc_return", mc_return, "[B]", (b,))
    if not mc_return.is_floating_point():
        raise ValueError(f"mc_return: expected a floating-point tensor, found {mc_return.dtype}")
    q = q.float()
    v_ref = mc_return.detach().float()[:, None]  # [B, 1], broadcast over actions on purpose
    valid = q > -torch.inf
    clipped = valid & (q < v_ref)
    q_cal = torch.where(clipped, v_ref, q)  # -inf actions are never clipped, so they stay -inf
    lse = torch.logsumexp(q_cal, dim=-1)
    penalty = (lse - gather_actions(q, action)).mean()
    with torch.no_grad():
        metrics = {
            "calql/clipped_fraction": clipped.sum() / valid.sum().clamp(min=1),
            "q/logsumexp_calibrated": lse.mean(),
        }
    return penalty, metrics


def calql_term(q: Tensor, batch) -> tuple[Tensor, dict[str, Tensor]]:
    """Cal-QL's push-down term on a batch: :func:`calql_penalty` with V_ref = ``batch.mc_return``
    (the conservative penalty of the Cal-QL variant, ``scaled_ql.losses.algorithms.CalQL``)."""
    if getattr(batch, "mc_return", None) is None:
        raise ValueError("loss.calibrated is true (Cal-QL) but the batch has no mc_return (Monte-Carlo return-to-go)")
    return calql_penalty(q, batch.action, batch.mc_return)

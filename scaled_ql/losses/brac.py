"""A BRAC-style behaviour regularizer for discrete Q-learning (Wu, Tucker & Nachum, 2019,
"Behavior Regularized Offline Reinforcement Learning").

BRAC keeps the learned policy pi close to a behaviour-cloned pi_b by a divergence D(pi, pi_b),
either in the Q target ("value penalty", BRAC-v: r + gamma (Q(s', a') - alpha D(s'))) or in the
actor's objective ("policy regularization", BRAC-p: max_pi E_{a~pi}[Q(s, a)] - alpha D(s)); the
paper compares both forms, with KL among the divergences, on continuous control.

Here there is no separate actor: the policy is the Boltzmann policy of Q itself,
pi_Q = softmax(Q / T). This module takes the policy-regularization form and applies it to Q:

    brac_penalty = mean_b KL( softmax(Q(s_b, .) / T) || softmax(behaviour_logits_b) )
                 = mean_b sum_a pi_Q(a|s_b) [ log pi_Q(a|s_b) - log pi_b(a|s_b) ],

added to the TD loss with a weight alpha, gradient into Q only (pi_b is trained by
:func:`scaled_ql.losses.bc.bc_loss` and detached here). It pulls Q's greedy-ish policy towards
the data's actions, the role CQL's penalty plays, without a second network. Chosen over the value
penalty because it needs only the current state's outputs (no KL at s' inside the target) and
keeps the TD target that the other losses share; for a discrete, exactly computed KL both forms
need the same two heads.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scaled_ql.losses.td import check_shape


def brac_penalty(q: Tensor, behaviour_logits: Tensor, temperature: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """mean_b KL(softmax(Q(s_b, .) / T) || softmax(behaviour_logits_b)) over the valid actions.

    q [B, A] and behaviour_logits [B, A], both -inf at the actions absent in the sample's game
    (those terms are 0, as 0 log 0 = 0, and give no NaN gradient); temperature T > 0. The KL is
    exact (a sum over the actions, no sampling). behaviour_logits is detached: the penalty trains
    Q, not the behaviour-cloning head. An action valid in q but -inf in behaviour_logits makes the
    KL infinite (pi_Q puts mass where pi_b has none): the two masks must agree. Computed in float32.

    Returns (penalty, metrics), metrics detached:
      brac/kl         the penalty's value;
      brac/agreement  fraction of samples where argmax_a Q = argmax_a behaviour_logits.
    """
    if not temperature > 0:
        raise ValueError(f"temperature: expected a positive number, found {temperature!r}")
    check_shape("q", q, "[B, A]", (None, None))
    check_shape("behaviour_logits", behaviour_logits, "[B, A]", tuple(q.shape))
    q = q.float()
    behaviour_logits = behaviour_logits.detach().float()
    valid = q > -torch.inf
    zero = torch.zeros((), device=q.device)
    # Masked entries are set to 0 before the product, so no 0 * inf = nan appears in the value
    # or in the gradient (torch.where passes NaN gradients through the branch it did not pick).
    log_pi = torch.where(valid, (q / temperature).log_softmax(-1), zero)
    log_pi_b = torch.where(valid, behaviour_logits.log_softmax(-1), zero)
    kl = (log_pi.exp() * valid * (log_pi - log_pi_b)).sum(-1)
    penalty = kl.mean()
    with torch.no_grad():
        metrics = {
            "brac/kl": penalty.detach(),
            "brac/agreement": (q.argmax(-1) == behaviour_logits.argmax(-1)).float().mean(),
        }
    return penalty, metrics

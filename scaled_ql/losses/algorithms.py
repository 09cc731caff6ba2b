"""The learning algorithms of ``loss.algorithm``, all over the same network and the same batches.

Each entry of :data:`ALGORITHM_LOSSES` is a loss over the forward passes it declares it needs,
so the update step runs only those (behaviour cloning needs one pass over s; IQL the online
network over s and s' and the target network over s; Q-learning the online network over s and
s' and the target network over s'). The three families the offline-RL literature answers
distribution shift with are all here: pessimism (``q_learning`` with CQL / Cal-QL), a policy
constraint (``brac``) and in-sample learning (``iql``), with behaviour cloning (``bc``) as the
reference every offline agent must beat.

The heads each algorithm needs are given to the network by the config
(``scaled_ql.config.ALGORITHMS``); the names of the two tables are the same (a test checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from scaled_ql.losses.bc import bc_loss
from scaled_ql.losses.brac import brac_penalty
from scaled_ql.losses.dr3 import dr3_penalty
from scaled_ql.losses.iql import iql_policy_loss, iql_q_loss, iql_value_loss
from scaled_ql.losses.td import gather_actions
from scaled_ql.losses.total import ValueOutput, total_loss

if TYPE_CHECKING:
    from scaled_ql.config import LossConfig
    from scaled_ql.data.batch import TorchBatch


@dataclass(frozen=True)
class LossInputs:
    """The forward passes of one update (None where the algorithm did not ask for it)."""

    out: ValueOutput  # online network on s (gradient flows)
    next_online: ValueOutput | None  # online network on s' (gradient flows)
    next_target: ValueOutput | None  # target network on s', no gradient
    target: ValueOutput | None  # target network on s, no gradient
    batch: TorchBatch
    loss_cfg: LossConfig
    value: str = "scalar"  # model.value
    support: Tensor | None = None
    hl_gauss_sigma: float = 0.75


@dataclass(frozen=True)
class AlgorithmLoss:
    """``fn(inputs) -> (loss, detached metrics)`` and the forward passes it reads."""

    fn: Callable[[LossInputs], tuple[Tensor, dict[str, Tensor]]]
    next_online: bool  # the online network on s'
    next_target: bool  # the target network on s'
    target: bool  # the target network on s


def _q_learning(x: LossInputs) -> tuple[Tensor, dict[str, Tensor]]:
    return total_loss(x.out, x.next_online, x.next_target, x.batch, x.loss_cfg,
                      value=x.value, support=x.support, hl_gauss_sigma=x.hl_gauss_sigma)


def _bc(x: LossInputs) -> tuple[Tensor, dict[str, Tensor]]:
    """Behaviour cloning with the per-game head as the classifier: its outputs are logits."""
    loss, metrics = bc_loss(x.out.q, x.batch.action)
    return loss, {"loss/total": loss.detach(), "loss/bc": loss.detach(), **metrics}


def _brac(x: LossInputs) -> tuple[Tensor, dict[str, Tensor]]:
    """The Q-learning loss + brac_alpha * KL(softmax(Q / T) || pi_b) + the BC loss of the pi_b head."""
    if x.out.policy_logits is None:
        raise ValueError("loss.algorithm=brac: the network has no policy head (model.policy_head is false)")
    loss, metrics = _q_learning(x)
    with torch.set_grad_enabled(torch.is_grad_enabled() and x.loss_cfg.brac_alpha > 0):
        kl, kl_metrics = brac_penalty(x.out.q, x.out.policy_logits, x.loss_cfg.brac_temperature)
    bc, bc_metrics = bc_loss(x.out.policy_logits, x.batch.action)
    if x.loss_cfg.brac_alpha > 0:
        loss = loss + x.loss_cfg.brac_alpha * kl
    loss = loss + bc
    metrics |= {"loss/total": loss.detach(), "loss/brac": kl.detach(), "loss/bc": bc.detach(), **kl_metrics, **bc_metrics}
    return loss, metrics


def _iql(x: LossInputs) -> tuple[Tensor, dict[str, Tensor]]:
    """L_V + L_Q + L_pi of :mod:`scaled_ql.losses.iql` (+ dr3_coef * DR3), one shared backbone.

    Q_target(s, a_data) comes from the target network (the reference code's Polyak-averaged
    critic; here the hard-synced target), V(s') from the online network without gradient."""
    out, cfg, batch = x.out, x.loss_cfg, x.batch
    if out.v is None or out.policy_logits is None or x.next_online is None or x.next_online.v is None or x.target is None:
        raise ValueError("loss.algorithm=iql: expected V and policy heads (model.state_value_head, model.policy_head) "
                         "and the online pass over s' and the target pass over s")
    q_data_target = gather_actions(x.target.q, batch.action).detach().float()
    value = iql_value_loss(out.v, q_data_target, cfg.iql_expectile)
    td = iql_q_loss(out.q, batch.action, batch.reward, batch.discount, x.next_online.v, cfg.huber_delta)
    advantage = q_data_target - out.v.detach().float()
    policy = iql_policy_loss(out.policy_logits, batch.action, advantage, cfg.iql_beta, cfg.iql_max_weight)
    loss = value + td + policy
    with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.dr3_coef > 0):
        dr3 = dr3_penalty(out.features, x.next_online.features)
    if cfg.dr3_coef > 0:
        loss = loss + cfg.dr3_coef * dr3
    with torch.no_grad():
        metrics = {
            "loss/total": loss.detach(), "loss/td": td.detach(), "loss/value": value.detach(),
            "loss/policy": policy.detach(), "loss/dr3": dr3.detach(),
            "q/data": gather_actions(out.q, batch.action).float().mean(),
            "q/v": out.v.float().mean(),
            "q/target": (batch.reward.float() + batch.discount.float() * x.next_online.v.float()).mean(),
            "iql/advantage": advantage.mean(),
            "iql/weight": torch.exp(cfg.iql_beta * advantage).clamp(max=cfg.iql_max_weight).mean(),
            "bc/accuracy": (out.policy_logits.argmax(-1) == batch.action).float().mean(),
        }
    return loss, metrics


ALGORITHM_LOSSES: dict[str, AlgorithmLoss] = {
    "q_learning": AlgorithmLoss(_q_learning, next_online=True, next_target=True, target=False),
    "bc": AlgorithmLoss(_bc, next_online=False, next_target=False, target=False),
    "iql": AlgorithmLoss(_iql, next_online=True, next_target=False, target=True),
    "brac": AlgorithmLoss(_brac, next_online=True, next_target=True, target=False),
}
"""``loss.algorithm`` -> its loss; the keys are those of ``scaled_ql.config.ALGORITHMS``."""


def algorithm_loss(algorithm: str, inputs: LossInputs) -> tuple[Tensor, dict[str, Tensor]]:
    if algorithm not in ALGORITHM_LOSSES:
        raise ValueError(f"loss.algorithm: unknown algorithm '{algorithm}'; valid: {', '.join(ALGORITHM_LOSSES)}")
    return ALGORITHM_LOSSES[algorithm].fn(inputs)

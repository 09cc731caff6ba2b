"""The offline Q-learning objective: TD (scalar Huber or C51) + cql_alpha * CQL + dr3_coef * DR3.

This is Dopamine's offline DR3 agent (``offline_dr3_agent.train``) with Scaled QL's C51 option
(Kumar et al., 2023). The network outputs are any objects with ``.q``, ``.logits`` and
``.features`` (``scaled_ql.models.QOutput``); this module imports no model and no data code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from scaled_ql.losses.cql import cql_penalty
from scaled_ql.losses.distributional import c51_td_loss
from scaled_ql.losses.dr3 import dr3_penalty
from scaled_ql.losses.td import check_action, check_shape, double_q_target_scalar, gather_actions, scalar_td_loss

if TYPE_CHECKING:
    from scaled_ql.config import LossConfig
    from scaled_ql.data.batch import TorchBatch


class ValueOutput(Protocol):
    """What the losses read from a network's output (``scaled_ql.models.QOutput`` fits)."""

    q: Tensor  # [B, A], -inf at actions the sample's game lacks
    logits: Tensor | None  # [B, A, M] for C51, None for the scalar head
    features: Tensor  # [B, D], phi(s)


def total_loss(
    out: ValueOutput,
    next_out_online: ValueOutput | None,
    next_out_target: ValueOutput,
    batch: TorchBatch,
    loss_cfg: LossConfig,
    support: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """loss = TD + cql_alpha * CQL + dr3_coef * DR3, and detached scalar metrics.

    out             online network on batch.obs (gradient flows).
    next_out_online online network on batch.next_obs: picks a* for double DQN and gives phi(s')
                    to DR3 (gradient flows through it into DR3). May be None only when
                    ``loss_cfg.double_q`` is False and ``loss_cfg.dr3_coef`` is 0, which saves a
                    forward pass; then ``loss/dr3`` is not reported.
    next_out_target target network on batch.next_obs (computed without gradient by the caller).
    support         the C51 support [M] (linspace(v_min, v_max, M)); required when out.logits is set.

    TD is the Huber loss of :func:`scalar_td_loss` when ``out.logits`` is None, else the C51
    cross-entropy of :func:`c51_td_loss`, whose CQL term uses the expected Q, as Scaled QL does.
    A term whose weight is 0 is left out of the loss but still computed, without gradient, as
    a diagnostic (it costs O(B*A) or O(B*D)), so the metric keys do not depend on the weights.

    Metrics (0-dim detached tensors; no host sync here, the caller calls ``.item()``):
      loss/total, loss/td, loss/cql, loss/dr3 (if next_out_online is given), the unweighted terms;
      q/data      mean_b Q(s, a_data);
      q/pi        mean_b max_a Q(s, a), "how well it thinks it does";
      q/target    mean_b r + discount * Q_target(s', a*) (for C51, the expected target before
                  projection onto the support);
      q/logsumexp mean_b logsumexp_a Q(s, a) (from :func:`cql_penalty`).
    """
    q, action = out.q, batch.action
    check_shape("out.q", q, "[B, A]", (None, None))
    b = q.shape[0]
    check_action("batch.action", action, b)
    check_shape("batch.reward", batch.reward, "[B]", (b,))
    check_shape("batch.discount", batch.discount, "[B]", (b,))
    check_shape("next_out_target.q", next_out_target.q, "[B, A]", tuple(q.shape))
    if next_out_online is None and (loss_cfg.double_q or loss_cfg.dr3_coef > 0):
        raise ValueError(
            "next_out_online: expected the online network's output on batch.next_obs "
            "(needed when loss.double_q is true or loss.dr3_coef > 0), found None"
        )
    next_q_online = next_out_target.q if next_out_online is None else next_out_online.q
    check_shape("next_out_online.q", next_q_online, "[B, A]", tuple(q.shape))

    q_target = double_q_target_scalar(batch.reward, batch.discount, next_q_online, next_out_target.q, loss_cfg.double_q)
    if out.logits is None:
        td, _ = scalar_td_loss(q, action, q_target, loss_cfg.huber_delta)
    else:
        if support is None or next_out_target.logits is None:
            missing = "support" if support is None else "next_out_target.logits"
            raise ValueError(f"{missing}: expected a tensor for the C51 loss (out.logits is set), found None")
        td, _ = c51_td_loss(
            out.logits, action, batch.reward, batch.discount, next_out_target.logits,
            next_q_online, next_out_target.q, support, loss_cfg.double_q,
        )
    loss = td
    metrics = {"loss/td": td.detach()}

    with torch.set_grad_enabled(torch.is_grad_enabled() and loss_cfg.cql_alpha > 0):
        cql, cql_metrics = cql_penalty(q, action)
    if loss_cfg.cql_alpha > 0:
        loss = loss + loss_cfg.cql_alpha * cql
    metrics |= {"loss/cql": cql.detach(), **cql_metrics}

    if next_out_online is not None:
        with torch.set_grad_enabled(torch.is_grad_enabled() and loss_cfg.dr3_coef > 0):
            dr3 = dr3_penalty(out.features, next_out_online.features)
        if loss_cfg.dr3_coef > 0:
            loss = loss + loss_cfg.dr3_coef * dr3
        metrics["loss/dr3"] = dr3.detach()

    with torch.no_grad():
        metrics |= {
            "loss/total": loss.detach(),
            "q/data": gather_actions(q, action).float().mean(),
            "q/pi": q.max(-1).values.float().mean(),
            "q/target": q_target.float().mean(),
        }
    return loss, metrics


def per_game_q(q_data: Tensor, game: Tensor, num_games: int) -> Tensor:
    """Mean of ``q_data`` [B] (e.g. Q(s, a_data) from ``gather_actions(out.q, batch.action)``) over
    the samples of each game id in ``game`` int64 [B] -> [num_games], detached. A game with no
    sample in the batch gets NaN (not 0, which would read as a value). One scatter, no loop, no sync.
    """
    check_shape("q_data", q_data, "[B]", (None,))
    check_action("game", game, q_data.shape[0])
    q_data = q_data.detach().float()
    sums = q_data.new_zeros(num_games).scatter_add_(0, game, q_data)
    counts = q_data.new_zeros(num_games).scatter_add_(0, game, torch.ones_like(q_data))
    return sums / counts  # 0 / 0 = NaN for absent games

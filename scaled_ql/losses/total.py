"""The offline Q-learning objective: TD + cql_alpha * conservative penalty + dr3_coef * DR3.

This is Dopamine's offline DR3 agent (``offline_dr3_agent.train``) with Scaled QL's C51 option
(Kumar et al., 2023) and HL-Gauss (Farebrother et al., 2024). The TD term is the value
representation's (``scaled_ql.losses.values.VALUE_KINDS``, keyed by ``model.value``); the
conservative penalty is CQL's, or Cal-QL's for the Cal-QL variant (``scaled_ql.losses.algorithms``).
The network outputs are any objects with ``.q``, ``.logits`` and ``.features``
(``scaled_ql.models.QOutput``); the batch any object with the fields of a ``TorchBatch``; this
module imports no model and no data code.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from scaled_ql.config import LossConfig
from scaled_ql.losses.cql import cql_penalty
from scaled_ql.losses.dr3 import dr3_penalty
from scaled_ql.losses.td import check_action, check_shape, double_q_target_scalar, gather_actions
from scaled_ql.losses.values import VALUE_KINDS, value_kind


class ValueOutput(Protocol):
    """What the losses read from a network's output (``scaled_ql.models.QOutput`` fits)."""

    q: Tensor  # [B, A], -inf at actions the sample's game lacks
    logits: Tensor | None  # [B, A, M] for a distributional head (c51, hl_gauss), None for scalar
    features: Tensor  # [B, D], phi(s)


class TransitionBatch(Protocol):
    """What the losses read from a batch (``scaled_ql.data.batch.TorchBatch`` fits)."""

    action: Tensor  # int64 [B]
    reward: Tensor  # [B] n-step return
    discount: Tensor  # [B] gamma^k, 0 after a terminal
    mc_return: Tensor | None  # [B] Monte-Carlo return-to-go (Cal-QL's V_ref), or None


ConservativePenalty = Callable[[Tensor, Any], tuple[Tensor, dict[str, Tensor]]]
"""``penalty(q [B, A], batch) -> (penalty, detached metrics)``: CQL's or Cal-QL's push-down term."""


def cql_term(q: Tensor, batch: TransitionBatch) -> tuple[Tensor, dict[str, Tensor]]:
    """CQL(H): :func:`scaled_ql.losses.cql.cql_penalty` on the data actions."""
    return cql_penalty(q, batch.action)


def total_loss(
    out: ValueOutput,
    next_out_online: ValueOutput | None,
    next_out_target: ValueOutput,
    batch: TransitionBatch,
    loss_cfg: LossConfig,
    *,
    value: str = "scalar",
    support: Tensor | None = None,
    hl_gauss_sigma: float = 0.75,
    conservative: ConservativePenalty = cql_term,
) -> tuple[Tensor, dict[str, Tensor]]:
    """loss = TD + cql_alpha * conservative + dr3_coef * DR3, and detached scalar metrics.

    out             online network on batch.obs (gradient flows).
    next_out_online online network on batch.next_obs: picks a* for double DQN and gives phi(s')
                    to DR3 (gradient flows through it into DR3). May be None only when
                    ``loss_cfg.double_q`` is False and ``loss_cfg.dr3_coef`` is 0, which saves a
                    forward pass; then ``loss/dr3`` is not reported.
    next_out_target target network on batch.next_obs (computed without gradient by the caller).
    value           the value representation, a key of ``VALUE_KINDS`` (``model.value``):
                    ``scalar``   Huber loss of :func:`scalar_td_loss` (out.logits must be None);
                    ``c51``      cross-entropy of :func:`c51_td_loss`;
                    ``hl_gauss`` cross-entropy of :func:`hl_gauss_td_loss` to the HL-Gauss
                                 histogram of y = r + discount * Q_target(s', a*).
    support         [M], required by the distributional kinds: the C51 atoms
                    (linspace(v_min, v_max, M)) or the HL-Gauss bin centers (``model.support``).
    hl_gauss_sigma  HL-Gauss smoothing in bin widths (``model.hl_gauss_sigma``); unused otherwise.
    conservative    the push-down term, ``penalty(q, batch)``: :func:`cql_term` (CQL), or Cal-QL's
                    ``scaled_ql.losses.calql.calql_term`` (the Cal-QL variant of the algorithm).

    CQL always acts on the expected Q ``out.q``, as Scaled QL does for C51; DR3 on the features.
    A term whose weight is 0 is left out of the loss but still computed, without gradient, as
    a diagnostic (it costs O(B*A) or O(B*D)), so the metric keys do not depend on the weights.

    Metrics (0-dim detached tensors; no host sync here, the caller calls ``.item()``):
      loss/total, loss/td, loss/cql, loss/dr3 (if next_out_online is given), the unweighted terms;
      q/data      mean_b Q(s, a_data);
      q/pi        mean_b max_a Q(s, a), "how well it thinks it does";
      q/target    mean_b r + discount * Q_target(s', a*) (for c51 and hl_gauss, the expected
                  target before projection onto, or clipping to, the support);
      q/logsumexp mean_b logsumexp_a Q(s, a) (from :func:`cql_penalty`).
    """
    kind = value_kind(value)
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
    if kind.distributional:
        for name, tensor in (("out.logits", out.logits), ("next_out_target.logits", next_out_target.logits), ("support", support)):
            if tensor is None:
                raise ValueError(f"{name}: expected a tensor for the '{value}' TD loss, found None")
    elif out.logits is not None:
        raise ValueError(
            f"out.logits: expected None for value '{value}', found a tensor of shape {list(out.logits.shape)} "
            f"(a distributional head: pass its value kind, one of {', '.join(k for k, v in VALUE_KINDS.items() if v.distributional)})"
        )

    q_target = double_q_target_scalar(batch.reward, batch.discount, next_q_online, next_out_target.q, loss_cfg.double_q)
    td, _ = kind.td(out, batch, q_target, next_q_online, next_out_target, support=support, sigma=hl_gauss_sigma,
                    double_q=loss_cfg.double_q, huber_delta=loss_cfg.huber_delta)
    loss = td
    metrics = {"loss/td": td.detach()}

    with torch.set_grad_enabled(torch.is_grad_enabled() and loss_cfg.cql_alpha > 0):
        cql, cql_metrics = conservative(q, batch)
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

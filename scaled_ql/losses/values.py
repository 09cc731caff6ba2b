"""Value representations (``model.value``): what the network's outputs per action are, and how
TD learning trains them. One entry per representation, used by the network (how many outputs
each action gets, and the values they stand for) and by the losses (which TD loss trains them).

``scalar``   one output per action, Q itself; Huber TD loss (DQN).
``c51``      ``num_atoms`` logits per action over atoms linspace(v_min, v_max, num_atoms);
             cross-entropy to the projected target distribution (Bellemare et al., 2017; Scaled QL).
``hl_gauss`` ``num_atoms`` logits per action over equal bins tiling [v_min, v_max]; cross-entropy
             to the Gaussian-smoothed histogram of the scalar target (Farebrother et al., 2024).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from scaled_ql.losses.distributional import c51_td_loss, hl_gauss_td_loss
from scaled_ql.losses.td import scalar_td_loss


TDLoss = Callable[..., tuple[Tensor, Tensor]]
"""``td(out, batch, q_target, next_q_online, next_out_target, *, support, sigma, double_q,
huber_delta) -> (loss, td_error [B])``: ``out`` and ``next_out_target`` are the online network on
s and the target network on s' (``.q`` [B, A], ``.logits`` [B, A, M] or None), ``q_target`` [B]
is r + discount * Q_target(s', a*) without gradient, ``next_q_online`` [B, A] picks a*."""


@dataclass(frozen=True)
class ValueKind:
    """A value representation: outputs per action, the values z those outputs stand for (None for
    a scalar head: Q is the output itself), and its TD loss (see :data:`TDLoss`)."""

    atoms: Callable[[int], int]  # num_atoms -> outputs per action
    support: Callable[[float, float, int], Tensor | None]  # (v_min, v_max, num_atoms) -> [M] or None
    td: TDLoss

    @property
    def distributional(self) -> bool:
        return self.support(0.0, 1.0, 2) is not None


def c51_support(v_min: float, v_max: float, num_atoms: int) -> Tensor:
    """C51 atoms: ``num_atoms`` points from v_min to v_max, both ends included."""
    return torch.linspace(v_min, v_max, num_atoms)


def hl_gauss_support(v_min: float, v_max: float, num_atoms: int) -> Tensor:
    """HL-Gauss bin centers: ``num_atoms`` bins of equal width tiling [v_min, v_max] (edges
    linspace(v_min, v_max, num_atoms + 1)), so the centers stop half a bin short of each end."""
    edges = torch.linspace(v_min, v_max, num_atoms + 1)
    return (edges[:-1] + edges[1:]) / 2


def _scalar_td(out, batch, q_target, next_q_online, next_out_target, *, support, sigma, double_q, huber_delta):
    return scalar_td_loss(out.q, batch.action, q_target, huber_delta)


def _c51_td(out, batch, q_target, next_q_online, next_out_target, *, support, sigma, double_q, huber_delta):
    return c51_td_loss(out.logits, batch.action, batch.reward, batch.discount, next_out_target.logits, next_q_online,
                       next_out_target.q, support, double_q)


def _hl_gauss_td(out, batch, q_target, next_q_online, next_out_target, *, support, sigma, double_q, huber_delta):
    return hl_gauss_td_loss(out.logits, batch.action, q_target, support, sigma)


VALUE_KINDS: dict[str, ValueKind] = {
    "scalar": ValueKind(atoms=lambda n: 1, support=lambda lo, hi, n: None, td=_scalar_td),
    "c51": ValueKind(atoms=lambda n: n, support=c51_support, td=_c51_td),
    "hl_gauss": ValueKind(atoms=lambda n: n, support=hl_gauss_support, td=_hl_gauss_td),
}
"""``model.value`` -> its representation; the network and the losses both read this table."""


def value_kind(name: str) -> ValueKind:
    if name not in VALUE_KINDS:
        raise ValueError(f"value: unknown value kind '{name}'; valid: {', '.join(sorted(VALUE_KINDS))}")
    return VALUE_KINDS[name]

"""Scalar TD learning: the (double) DQN target and the Huber TD loss.

DQN (Mnih et al., 2015): y = r + gamma^n * max_a Q_target(s', a).
Double DQN (van Hasselt et al., 2016): the online network picks a*, the target network values it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def check_shape(name: str, x: Tensor, dims: str, expected: tuple[int | None, ...]) -> None:
    """Raise ValueError naming ``name`` unless ``x`` has exactly the ``expected`` shape (None: any
    size), so a [B, 1] tensor never broadcasts silently against a [B] one. ``dims`` spells the
    shape for the message, e.g. ``"[B, A]"``."""
    if x.dim() != len(expected) or any(e is not None and e != s for e, s in zip(expected, x.shape)):
        want = ", ".join("*" if e is None else str(e) for e in expected)
        raise ValueError(f"{name}: expected shape {dims} = [{want}], found {list(x.shape)}")


def check_action(name: str, action: Tensor, batch: int) -> None:
    """An int64 index vector [B] (what ``gather`` needs)."""
    check_shape(name, action, "[B]", (batch,))
    if action.dtype != torch.int64:
        raise ValueError(f"{name}: expected dtype torch.int64, found {action.dtype}")


def gather_actions(values: Tensor, action: Tensor) -> Tensor:
    """values[b, action[b]]: [B, A] -> [B], or [B, A, M] -> [B, M]."""
    index = action.view(-1, 1, *([1] * (values.dim() - 2))).expand(-1, 1, *values.shape[2:])
    return values.gather(1, index).squeeze(1)


def next_actions(next_q_online: Tensor, next_q_target: Tensor, double_q: bool) -> Tensor:
    """a* = argmax_a Q_online(s', a) if ``double_q`` else argmax_a Q_target(s', a); -inf actions never win."""
    return (next_q_online if double_q else next_q_target).argmax(-1)


def double_q_target_scalar(
    reward: Tensor, discount: Tensor, next_q_online: Tensor, next_q_target: Tensor, double_q: bool
) -> Tensor:
    """y = r + discount * Q_target(s', a*), a* from :func:`next_actions`; with ``double_q`` False
    this is r + discount * max_a Q_target(s', a).

    reward, discount [B] (discount = gamma^n, 0 after a terminal); next_q_online, next_q_target
    [B, A] with -inf at actions the game lacks. Returns y [B], without gradient.
    """
    check_shape("reward", reward, "[B]", (None,))
    b = reward.shape[0]
    check_shape("discount", discount, "[B]", (b,))
    check_shape("next_q_target", next_q_target, "[B, A]", (b, None))
    check_shape("next_q_online", next_q_online, "[B, A]", tuple(next_q_target.shape))
    with torch.no_grad():
        a_star = next_actions(next_q_online, next_q_target, double_q)
        return reward + discount * gather_actions(next_q_target, a_star)


def scalar_td_loss(q: Tensor, action: Tensor, target: Tensor, huber_delta: float = 1.0) -> tuple[Tensor, Tensor]:
    """mean_b Huber(y_b - Q(s_b, a_b)), Huber(x) = x^2 / 2 if |x| <= delta else delta * (|x| - delta / 2)
    (the DQN loss, as Dopamine's ``huber_loss``).

    q [B, A], action int64 [B], target y [B] (detached here). Returns (loss, td_error [B]) with
    td_error = y - Q(s, a_data), detached. Computed in float32 whatever the dtype of ``q``.
    """
    check_shape("q", q, "[B, A]", (None, None))
    check_action("action", action, q.shape[0])
    check_shape("target", target, "[B]", (q.shape[0],))
    q_data = gather_actions(q, action).float()
    target = target.detach().float()
    return F.huber_loss(q_data, target, delta=huber_delta), (target - q_data).detach()

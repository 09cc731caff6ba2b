"""The update step: one screen, forward -> loss -> backward -> clip -> step."""

from __future__ import annotations

import math

import torch
from torch import nn

from scaled_ql.config import TrainConfig
from scaled_ql.data.batch import TorchBatch
from scaled_ql.losses.algorithms import Algorithm, NetworkOutputs
from scaled_ql.losses.td import gather_actions
from scaled_ql.losses.total import per_game_q
from scaled_ql.train.parallel import LOCAL, Distribution, unwrap
from scaled_ql.train.phases import PhaseClock

_UNTIMED = PhaseClock()


def forward_passes(model: nn.Module, target: nn.Module, batch: TorchBatch, algorithm: Algorithm) -> NetworkOutputs:
    """The forward passes ``algorithm`` reads (its ``passes``), and no others."""
    needs, n, groups = algorithm.passes, batch.obs.shape[0], batch.groups
    if needs.next_online and algorithm.next_online_grad:
        # s and s' go through the online network in one pass: half the kernel launches, and
        # phi(s') for DR3 plus the double-DQN argmax come for free.
        twice = (groups[0] * 2, groups[1]) if groups is not None else None
        out, next_online = model(torch.cat([batch.obs, batch.next_obs]), torch.cat([batch.game, batch.game]), twice).split(n)
    else:
        out, next_online = model(batch.obs, batch.game, groups), None
        if needs.next_online:  # read without gradient (no DR3): the backward runs over s alone, half the work
            with torch.no_grad():
                next_online = model(batch.next_obs, batch.game, groups)
    with torch.no_grad():
        next_target = target(batch.next_obs, batch.game, groups) if needs.next_target else None
        on_obs = target(batch.obs, batch.game, groups) if needs.target else None
    return NetworkOutputs(out, next_online, next_target, on_obs)


def compute_loss(model: nn.Module, target: nn.Module, batch: TorchBatch, algorithm: Algorithm) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward passes and the loss of ``batch`` (the update step without its backward)."""
    outputs = forward_passes(model, target, batch, algorithm)
    loss, metrics = algorithm(outputs, batch)
    q_data = gather_actions(outputs.out.q.detach(), batch.action)
    metrics["q/data_per_game"] = per_game_q(q_data, batch.game, len(unwrap(model).games))
    return loss, metrics


@torch.no_grad()
def holdout_metrics(model: nn.Module, target: nn.Module, batch: TorchBatch, algorithm: Algorithm) -> dict[str, torch.Tensor]:
    """The loss terms on a held-out batch, without gradient: ``holdout/<term>``."""
    was_training = model.training
    model.eval()
    _, metrics = compute_loss(model, target, batch, algorithm)
    model.train(was_training)
    return {f"holdout/{k.split('/')[-1]}": v for k, v in metrics.items() if k.startswith("loss/")}


def train_step(
    model: nn.Module,
    target: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: TorchBatch,
    algorithm: Algorithm,
    grad_clip: float,
    dist: Distribution = LOCAL,
    clock: PhaseClock = _UNTIMED,
) -> dict[str, torch.Tensor]:
    """One gradient update of ``model`` on ``batch``; returns detached metric tensors (no host sync).

    Backward and clipping go through ``dist`` (:mod:`scaled_ql.train.parallel`), so DDP,
    DeepSpeed and gradient accumulation work unchanged: inside ``dist.accumulate`` the wrapped
    optimizer only steps on the last micro-batch, and clipping happens only there. ``clock`` times
    the forward, backward (with clipping) and optimizer phases.
    """
    with clock.phase("forward"):
        loss, metrics = compute_loss(model, target, batch, algorithm)
    with clock.phase("backward"):
        dist.backward(loss)
        if grad_clip > 0:
            norm = dist.clip_grad_norm(model, grad_clip)
            if norm is not None:
                metrics["grad/norm"] = norm
    with clock.phase("optimizer"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return metrics


def lr_factor(update: int, train: TrainConfig) -> float:
    """The learning rate of update ``update`` (0-based) as a fraction of ``train.lr``: linear
    warm-up over ``lr_warmup_steps``, then ``lr_schedule`` down to ``lr_final_ratio`` at
    ``lr_decay_steps`` (``train.steps`` when 0), held after it."""
    warmup = train.lr_warmup_steps
    if update < warmup:
        return (update + 1) / warmup
    if train.lr_schedule == "constant":
        return 1.0
    end = train.lr_decay_steps or train.steps
    t = min(1.0, (update - warmup) / max(1, end - warmup))
    r = train.lr_final_ratio
    if train.lr_schedule == "linear":
        return 1.0 - (1.0 - r) * t
    return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    """Each parameter group's learning rate to its base rate times ``factor``."""
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = base * factor


@torch.no_grad()
def sync_target(model: nn.Module, target: nn.Module) -> None:
    """Hard update: copy the online weights into the target network."""
    for t, s in zip(target.parameters(), model.parameters()):
        t.copy_(s)
    for t, s in zip(target.buffers(), model.buffers()):
        t.copy_(s)

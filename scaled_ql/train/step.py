"""The update step: one screen, forward -> loss -> backward -> clip -> step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from scaled_ql.config import LossConfig
from scaled_ql.data.batch import TorchBatch
from scaled_ql.losses.algorithms import ALGORITHM_LOSSES, LossInputs, algorithm_loss
from scaled_ql.losses.total import per_game_q

if TYPE_CHECKING:
    from accelerate import Accelerator


def compute_loss(model: nn.Module, target: nn.Module, batch: TorchBatch, loss_cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward passes and the loss of ``batch`` (the update step without its backward); only the
    passes ``loss.algorithm`` reads are run (see ``ALGORITHM_LOSSES``)."""
    needs = ALGORITHM_LOSSES[loss_cfg.algorithm]
    n = batch.obs.shape[0]
    if needs.next_online:
        # s and s' go through the online network in one pass: half the kernel launches, and
        # phi(s') for DR3 plus the double-DQN argmax come for free.
        out, next_online = model(torch.cat([batch.obs, batch.next_obs]), torch.cat([batch.game, batch.game])).split(n)
    else:
        out, next_online = model(batch.obs, batch.game), None
    with torch.no_grad():
        next_target = target(batch.next_obs, batch.game) if needs.next_target else None
        on_obs = target(batch.obs, batch.game) if needs.target else None
    net = unwrap(model)
    loss, metrics = algorithm_loss(loss_cfg.algorithm, LossInputs(
        out, next_online, next_target, on_obs, batch, loss_cfg,
        value=net.model_cfg.value, support=net.support, hl_gauss_sigma=net.model_cfg.hl_gauss_sigma,
    ))
    q_data = out.q.detach().gather(1, batch.action[:, None]).squeeze(1)
    metrics["q/data_per_game"] = per_game_q(q_data, batch.game, len(net.games))
    return loss, metrics


@torch.no_grad()
def holdout_metrics(model: nn.Module, target: nn.Module, batch: TorchBatch, loss_cfg: LossConfig) -> dict[str, torch.Tensor]:
    """The loss terms on a held-out batch, without gradient: ``holdout/<term>``."""
    was_training = model.training
    model.eval()
    _, metrics = compute_loss(model, target, batch, loss_cfg)
    model.train(was_training)
    return {f"holdout/{k.split('/')[-1]}": v for k, v in metrics.items() if k.startswith("loss/")}


def train_step(
    model: nn.Module,
    target: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: TorchBatch,
    loss_cfg: LossConfig,
    grad_clip: float,
    accelerator: Accelerator | None = None,
) -> dict[str, torch.Tensor]:
    """One gradient update of ``model`` on ``batch``; returns detached metric tensors (no host sync).

    With an ``accelerator`` (the training loop always passes one) backward, clipping and the
    optimizer step go through it, so DDP, DeepSpeed and gradient accumulation work unchanged:
    inside ``accelerator.accumulate`` the wrapped optimizer only steps on the last micro-batch.
    """
    loss, metrics = compute_loss(model, target, batch, loss_cfg)
    if accelerator is None:
        loss.backward()
        if grad_clip > 0:
            metrics["grad/norm"] = nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:
        accelerator.backward(loss)
        if grad_clip > 0 and accelerator.sync_gradients:
            norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip)  # DeepSpeed: its engine's norm
            if norm is not None:
                metrics["grad/norm"] = torch.as_tensor(norm, dtype=torch.float32)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return metrics


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside its wrappers: DDP, FSDP and DeepSpeed keep it in ``.module``,
    ``torch.compile`` in ``._orig_mod``."""
    while True:
        inner = getattr(model, "module", None)
        if inner is None:
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


@torch.no_grad()
def sync_target(model: nn.Module, target: nn.Module) -> None:
    """Hard update: copy the online weights into the target network."""
    for t, s in zip(target.parameters(), model.parameters()):
        t.copy_(s)
    for t, s in zip(target.buffers(), model.buffers()):
        t.copy_(s)

"""The update step: one screen, forward -> loss -> backward -> clip -> step."""

from __future__ import annotations

import torch
from torch import nn

from scaled_ql.config import LossConfig
from scaled_ql.data.batch import TorchBatch
from scaled_ql.losses.total import per_game_q, total_loss
from scaled_ql.models.output import QOutput


def _split(out: QOutput, n: int) -> tuple[QOutput, QOutput]:
    def half(t: torch.Tensor | None, first: bool) -> torch.Tensor | None:
        return None if t is None else (t[:n] if first else t[n:])

    return (
        QOutput(q=out.q[:n], logits=half(out.logits, True), features=out.features[:n]),
        QOutput(q=out.q[n:], logits=half(out.logits, False), features=out.features[n:]),
    )


def train_step(
    model: nn.Module,
    target: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: TorchBatch,
    loss_cfg: LossConfig,
    grad_clip: float,
) -> dict[str, torch.Tensor]:
    """One gradient update of ``model`` on ``batch``; returns detached metric tensors (no host sync)."""
    n = batch.obs.shape[0]
    # s and s' go through the online network in one pass: half the kernel launches, and
    # phi(s') for DR3 plus the double-DQN argmax come for free.
    out, next_online = _split(model(torch.cat([batch.obs, batch.next_obs]), torch.cat([batch.game, batch.game])), n)
    with torch.no_grad():
        next_target = target(batch.next_obs, batch.game)
    loss, metrics = total_loss(out, next_online, next_target, batch, loss_cfg, getattr(model, "support", None))
    q_data = out.q.detach().gather(1, batch.action[:, None]).squeeze(1)
    metrics["q/data_per_game"] = per_game_q(q_data, batch.game, out_games(model))

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        metrics["grad/norm"] = nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return metrics


def out_games(model: nn.Module) -> int:
    return len(getattr(model, "module", model).games)


@torch.no_grad()
def sync_target(model: nn.Module, target: nn.Module) -> None:
    """Hard update: copy the online weights into the target network."""
    for t, s in zip(target.parameters(), model.parameters()):
        t.copy_(s)
    for t, s in zip(target.buffers(), model.buffers()):
        t.copy_(s)

"""The batch that flows from the sampler to the update step."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass(slots=True)
class Batch:
    """n-step transitions, numpy on the sampler side; ``to_torch`` moves them to a device.

    Shapes (B = batch size, K = frame stack, H = W = frame size):
      obs       uint8   [B, K, H, W]  stacked frames at time t, oldest first; zeros before the episode's first frame
      action    int64   [B]           action taken at t (index into the game's action set)
      reward    float32 [B]           sum_{i<k} gamma^i * clip(r_{t+i}), k = steps until n, terminal or episode end
      discount  float32 [B]           gamma^k if the target bootstraps from next_obs, 0 after a terminal
      next_obs  uint8   [B, K, H, W]  stacked frames at time t+k (the bootstrap state)
      game      int64   [B]           game id: index into the experiment's ``games`` list
      mc_return float32 [B] or None   optional: discounted Monte-Carlo return-to-go of the episode
                                      from row t, sum_{j>=t} gamma^(j-t) * clip(r_j) to the episode's
                                      end (Cal-QL's V_ref(s_t)); filled by the Sampler, None from
                                      producers that do not compute it
    Frames stay uint8 until the network scales them, so host-to-device copies are 4x smaller.
    """

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    next_obs: np.ndarray
    game: np.ndarray
    mc_return: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def to_torch(self, device: torch.device | str = "cpu") -> "TorchBatch":
        non_blocking = torch.device(device).type == "cuda"
        return TorchBatch(
            **{
                f.name: torch.from_numpy(np.ascontiguousarray(value)).to(device, non_blocking=non_blocking)
                for f in fields(self)
                if (value := getattr(self, f.name)) is not None
            },
            groups=game_groups(self.game),
        )


def game_groups(game: np.ndarray) -> tuple[tuple[int, ...], int] | None:
    """``(ids, n)`` when ``game`` is runs of ``n`` samples of each game of ``ids`` in turn (the
    sampler's per-game balanced layout: ``np.repeat(ids, n)``), else None. Read on the host from
    the numpy array, so the network can run each sample through its own head only
    (``MultiGameQNetwork.forward``'s ``groups``) without waiting for the device."""
    game = np.asarray(game)
    if game.ndim != 1 or game.size == 0:
        return None
    starts = np.concatenate([[0], np.flatnonzero(np.diff(game)) + 1])
    ids = game[starts]
    n = game.size // len(starts)
    if n * len(starts) != game.size or np.any(np.diff(np.append(starts, game.size)) != n) or len(np.unique(ids)) != len(ids):
        return None
    return tuple(int(i) for i in ids), int(n)


@dataclass(slots=True)
class TorchBatch:
    """Same fields as :class:`Batch`, as torch tensors on the training device (``mc_return`` None when the Batch had none)."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor
    game: torch.Tensor
    mc_return: torch.Tensor | None = None
    groups: tuple[tuple[int, ...], int] | None = None
    """The layout of ``game`` when it is the sampler's runs of equal length (:func:`game_groups`), else None."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor fields that are set, by name."""
        return {f.name: v for f in fields(self) if isinstance(v := getattr(self, f.name), torch.Tensor)}

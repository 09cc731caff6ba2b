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
            }
        )


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

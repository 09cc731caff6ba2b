"""Image augmentation of a batch on its device: DrQ's random shift (Kostrikov et al., 2020).

Each observation stack is padded by ``pad`` pixels on every side by repeating its border
(replicate padding) and cropped back to its size at a random offset: the same offset for all
frames of one stack, independent offsets for s and s' of a transition and for every transition
(as DrQ does). Frames stay uint8; the shift is a gather per axis.

The offsets come from a generator seeded by ``(seed, step)``, so a resumed run draws the same
shifts as an uninterrupted one without any saved state.
"""

from __future__ import annotations

import dataclasses

import torch

from scaled_ql.data.batch import TorchBatch

AUGMENTATIONS = ("none", "shift")


def random_shift(obs: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """``obs`` [N, K, H, W] shifted by up to ``pad`` pixels in each direction, one shift per stack.

    Equivalent to ``F.pad(obs, (pad,) * 4, mode="replicate")`` followed by an H x W crop at a
    uniformly random corner in ``[0, 2 pad]^2``; done as two index gathers so it works on uint8.
    """
    if obs.ndim != 4:
        raise ValueError(f"random_shift: expected observations [N, K, H, W], got shape {tuple(obs.shape)}")
    if pad == 0:
        return obs
    n, k, h, w = obs.shape
    shift = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=generator.device).to(obs.device) - pad
    rows = (torch.arange(h, device=obs.device)[None, :] + shift[:, :1]).clamp_(0, h - 1)  # [N, H]
    cols = (torch.arange(w, device=obs.device)[None, :] + shift[:, 1:]).clamp_(0, w - 1)  # [N, W]
    out = obs.gather(2, rows[:, None, :, None].expand(n, k, h, w))  # rows first, then columns: two cheap gathers
    return out.gather(3, cols[:, None, None, :].expand(n, k, h, w))


def augment_batch(batch: TorchBatch, kind: str, pad: int, seed: int, step: int) -> TorchBatch:
    """``batch`` with its observations augmented by ``kind`` (``none`` returns it unchanged)."""
    if kind == "none":
        return batch
    if kind != "shift":
        raise ValueError(f"train.augment: expected one of {', '.join(AUGMENTATIONS)}, found '{kind}'")
    device = batch.obs.device
    generator = torch.Generator(device="cuda" if device.type == "cuda" else "cpu")
    generator.manual_seed((seed * 1_000_003 + step) % (2**63))
    return dataclasses.replace(batch, obs=random_shift(batch.obs, pad, generator),
                               next_obs=random_shift(batch.next_obs, pad, generator))

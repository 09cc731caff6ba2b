"""What every Q-network returns (as Dopamine's ``NetworkType(q_values, representation)``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(slots=True)
class QOutput:
    """Values and representation of one forward pass.

    q         float [B, A]     expected Q-values; actions the game does not have are -inf, so
                               argmax and logsumexp ignore them (never average ``q`` directly)
    logits    float [B, A, M]  atom logits of a distributional head (C51), else None
    features  float [B, D]     penultimate representation phi(s), the input of the heads (DR3 uses it)
    """

    q: torch.Tensor
    logits: torch.Tensor | None
    features: torch.Tensor

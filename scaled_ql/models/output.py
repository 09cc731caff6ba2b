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
    policy_logits float [B, A] the policy head's action logits (``model.policy_head``), -inf at
                               absent actions, else None
    v         float [B]        the state-value head V(s) (``model.state_value_head``), else None
    """

    q: torch.Tensor
    logits: torch.Tensor | None
    features: torch.Tensor
    policy_logits: torch.Tensor | None = None
    v: torch.Tensor | None = None

    def split(self, n: int) -> tuple["QOutput", "QOutput"]:
        """The first ``n`` samples and the rest (a forward pass over s and s' stacked)."""
        parts = {name: (None, None) if t is None else (t[:n], t[n:])
                 for name, t in ((f, getattr(self, f)) for f in self.__slots__)}
        return QOutput(**{k: v[0] for k, v in parts.items()}), QOutput(**{k: v[1] for k, v in parts.items()})

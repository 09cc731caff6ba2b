"""DR3, the explicit regularizer against feature co-adaptation (Kumar et al., ICLR 2022)."""

from __future__ import annotations

from torch import Tensor

from scaled_ql.losses.td import check_shape


def dr3_penalty(features: Tensor, next_features: Tensor) -> Tensor:
    """mean_b | phi(s_b) . phi(s'_b) |: the absolute value of each sample's dot product, averaged
    over the batch (as Dopamine's ``compute_dr3_loss``: einsum('ij,ij->i'), then abs, then mean).

    features phi(s) [B, D] and next_features phi(s') [B, D] both come from the ONLINE network
    (on obs and next_obs), and the gradient flows through both.
    """
    check_shape("features", features, "[B, D]", (None, None))
    check_shape("next_features", next_features, "[B, D]", tuple(features.shape))
    return (features.float() * next_features.float()).sum(-1).abs().mean()

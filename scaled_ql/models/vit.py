"""A Vision Transformer backbone built on Hugging Face ``transformers`` (``ViTModel``).

The stacked frames are the image: ``num_channels`` is the frame stack (4), ``image_size`` the
frame size (84), so 12x12 patches make a 7x7 grid of 49 tokens plus the [CLS] token. Width,
depth and heads come from ``model.vit_hidden``, ``model.vit_depth`` and ``model.vit_heads``;
the MLP is 4x the width, dropout is off (the transformers default), as suits TD learning.

Choices:
- Input scaling: ``ViTModel`` does not normalize its input; its image processors feed it
  ``(x - 0.5) / 0.5``. The Q-network gives [0, 1], so the backbone maps it to [-1, 1] first.
- Readout: the [CLS] token of the last layer (after ViT's final layer norm), as
  ``ViTForImageClassification`` reads it, then a linear layer to ``feature_dim`` and a ReLU,
  like every other backbone here.
- ``transformers`` is imported when a ViT is built, never when ``scaled_ql.models`` is.
"""

from __future__ import annotations

import torch
from torch import nn


class ViTBackbone(nn.Module):
    """[B, K, H, W] in [0, 1] -> [B, feature_dim] through a ``transformers.ViTModel``."""

    def __init__(
        self,
        in_channels: int,
        frame_size: int,
        *,
        feature_dim: int = 512,
        patch_size: int = 12,
        hidden: int = 256,
        depth: int = 4,
        heads: int = 4,
    ) -> None:
        super().__init__()
        if patch_size > frame_size:
            raise ValueError(f"config key 'model.patch_size': expected at most env.frame_size={frame_size}, found {patch_size}")
        from transformers import ViTConfig, ViTModel  # heavy: only when a ViT is chosen

        config = ViTConfig(
            image_size=frame_size,
            patch_size=patch_size,
            num_channels=in_channels,
            hidden_size=hidden,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
        )
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.dense = nn.Sequential(nn.Linear(hidden, feature_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit(pixel_values=x * 2.0 - 1.0).last_hidden_state  # [B, 1 + patches, hidden]
        return self.dense(tokens[:, 0])


def build_vit(cfg, *, in_channels: int, frame_size: int) -> ViTBackbone:
    """A ``ViTBackbone`` sized by a ``ModelConfig`` (patch_size, vit_hidden, vit_depth, vit_heads)."""
    return ViTBackbone(
        in_channels, frame_size, feature_dim=cfg.feature_dim, patch_size=cfg.patch_size,
        hidden=cfg.vit_hidden, depth=cfg.vit_depth, heads=cfg.vit_heads,
    )

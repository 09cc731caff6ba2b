"""Backbones: stacked frames -> a feature vector phi(s), picked by name from ``BACKBONES``.

Each backbone maps float input in [0, 1] of shape [B, K, H, W] to [B, feature_dim] after a
final ReLU. The registry ``BACKBONES`` picks one by name: each entry builds its backbone from
the whole ``ModelConfig`` (``build_backbone``). ResNet-GN lives in ``resnet.py``, the ViT in
``vit.py`` (which imports ``transformers`` only when a ViT is built).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

from scaled_ql.config import ModelConfig
from scaled_ql.models.resnet import build_resnet
from scaled_ql.models.vit import build_vit


def _conv_out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class NatureCNN(nn.Module):
    """The DQN network of Mnih et al. (2015): 3 conv layers and a 512-unit dense layer."""

    def __init__(self, in_channels: int, frame_size: int, feature_dim: int = 512, width: int = 1) -> None:
        super().__init__()
        c1, c2, c3 = 32 * width, 64 * width, 64 * width
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, c1, 8, stride=4), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=1), nn.ReLU(),
        )
        side = _conv_out(_conv_out(_conv_out(frame_size, 8, 4), 4, 2), 3, 1)
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(c3 * side * side, feature_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.convs(x))


class ResidualBlock(nn.Module):
    """IMPALA residual block: x + conv(relu(conv(relu(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaCNN(nn.Module):
    """The IMPALA network of Espeholt et al. (2018): 3 stacks of conv, max-pool, 2 residual blocks."""

    def __init__(self, in_channels: int, frame_size: int, feature_dim: int = 512, width: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        side, channels = frame_size, in_channels
        for out in (16 * width, 32 * width, 32 * width):
            layers += [
                nn.Conv2d(channels, out, 3, padding=1),
                nn.MaxPool2d(3, stride=2, padding=1),
                ResidualBlock(out),
                ResidualBlock(out),
            ]
            side, channels = _conv_out(side, 3, 2, 1), out
        self.stacks = nn.Sequential(*layers)
        self.dense = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(channels * side * side, feature_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.stacks(x))


def _build_nature(cfg: ModelConfig, *, in_channels: int, frame_size: int) -> NatureCNN:
    return NatureCNN(in_channels, frame_size, feature_dim=cfg.feature_dim, width=cfg.width)


def _build_impala(cfg: ModelConfig, *, in_channels: int, frame_size: int) -> ImpalaCNN:
    return ImpalaCNN(in_channels, frame_size, feature_dim=cfg.feature_dim, width=cfg.width)


BackboneFactory = Callable[..., nn.Module]
"""``factory(model_cfg, *, in_channels, frame_size) -> nn.Module`` mapping [B, K, H, W] in [0, 1]
to [B, model_cfg.feature_dim]."""
BACKBONES: dict[str, BackboneFactory] = {
    "nature": _build_nature,
    "impala": _build_impala,
    "resnet18": partial(build_resnet, 18),
    "resnet34": partial(build_resnet, 34),
    "resnet50": partial(build_resnet, 50),
    "resnet101": partial(build_resnet, 101),
    "vit": build_vit,
}


def build_backbone(cfg: ModelConfig, *, in_channels: int, frame_size: int) -> nn.Module:
    """The backbone named by ``cfg.backbone``, sized by the rest of ``cfg`` (feature_dim, width,
    norm_groups, patch_size, vit_*)."""
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"config key 'model.backbone': unknown backbone '{cfg.backbone}'; valid: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[cfg.backbone](cfg, in_channels=in_channels, frame_size=frame_size)

"""ResNet-18/34/50/101 as Scaled QL uses them: group norm, a learned spatial embedding.

Scaled QL (Kumar et al., ICLR 2023) trains ResNets "with group normalization and learned
spatial embeddings" instead of batch norm and global average pooling. Batch statistics couple
the samples of a batch (and the online and target passes) and break TD learning; average
pooling throws away where things are on the screen, which matters in Atari.

What is standard here: the stage layout of He et al. (2016): basic blocks [2, 2, 2, 2] (18),
[3, 4, 6, 3] (34), bottleneck blocks [3, 4, 6, 3] (50), [3, 4, 23, 3] (101), stage widths
64/128/256/512 (x4 after a bottleneck) times ``model.width``, stride 2 in the 3x3 conv of the
first block of stages 2-4 (the "v1.5" placement), 1x1 projection shortcuts where the shape
changes. Every batch norm is a ``GroupNorm`` with ``model.norm_groups`` groups (fewer where a
layer's channel count is not divisible). The last norm of each residual branch starts at zero
(Goyal et al., 2017), so every block starts as the identity; that is what lets a 101-layer
network train without batch statistics.

The stem (a documented choice; the paper's text does not give one). The ImageNet stem, as in
the JAX ResNet encoders of the same group (PTR, Kumar et al., 2022): 7x7 conv stride 2, group
norm, ReLU, 3x3 max-pool stride 2. On 84x84 frames the map sizes are 84 -> 42 (conv) -> 21
(pool) -> 21, 11, 6, 3 (stages 1-4): the final map is 3x3 (2048 channels at depth 50/101, 512
at 18/34), each position covering a 28-pixel square of the screen. ``final_spatial_size``
computes it for any frame size.

The learned spatial embedding replaces global average pooling: one learned weight per
(channel, row, column) of the final map, multiplied in and summed over positions, giving one
value per channel ([B, C]); then a linear layer to ``feature_dim`` and a ReLU. Its weights
start at N(0, 1/(H*W)), the LeCun scale of a sum over H*W positions.

Size. The trunks (stem + stages) have exactly torchvision's ImageNet counts without the
classifier, plus 3,136 for the 4-channel stem: 11.18M (18), 21.29M (34), 23.51M (50),
42.50M (101) at width 1. The Q-network adds C*H*W + (C+1)*feature_dim here and the per-game
heads, 41 games x 18 padded actions x 51 atoms = 37,638 outputs per feature unit in
``configs/atari40.yaml``. With ``model.width=1 model.feature_dim=896``: 45.4M (18), 55.5M
(34), 59.1M (50), 78.1M (101), against the paper's about 31M/60M/79M for 34/50/101. ResNet-34
cannot come near 31M with heads of that shape at any feature_dim that puts ResNet-50/101 near
60M/79M: the paper's 29M step from 34 to 50 (where the trunks differ by 2.2M) means about
17k parameters per final-map channel (512 -> 2048) outside the trunk, which this embedding,
with H*W + feature_dim per channel, does not have; the paper does not say how it counted.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def norm_groups_for(channels: int, wanted: int) -> int:
    """The largest group count <= ``wanted`` that divides ``channels`` (GroupNorm needs one)."""
    groups = max(1, min(wanted, channels))
    while channels % groups:
        groups -= 1
    return groups


def group_norm(channels: int, wanted_groups: int, *, zero_init: bool = False) -> nn.GroupNorm:
    norm = nn.GroupNorm(norm_groups_for(channels, wanted_groups), channels)
    if zero_init:
        nn.init.zeros_(norm.weight)
    return norm


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


def _shortcut(cin: int, cout: int, stride: int, groups: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(_conv(cin, cout, 1, stride), group_norm(cout, groups))


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34): relu(x' + gn(conv(relu(gn(conv(x))))))."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, groups: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.norm1 = _conv(cin, width, 3, stride), group_norm(width, groups)
        self.conv2, self.norm2 = _conv(width, cout, 3), group_norm(cout, groups, zero_init=True)
        self.shortcut = _shortcut(cin, cout, stride, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand x4 (ResNet-50/101)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, groups: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.norm1 = _conv(cin, width, 1), group_norm(width, groups)
        self.conv2, self.norm2 = _conv(width, width, 3, stride), group_norm(width, groups)
        self.conv3, self.norm3 = _conv(width, cout, 1), group_norm(cout, groups, zero_init=True)
        self.shortcut = _shortcut(cin, cout, stride, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        y = torch.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return torch.relu(y + self.shortcut(x))


class LearnedSpatialEmbedding(nn.Module):
    """[B, C, H, W] -> [B, C]: sum over positions of the map times a learned (C, H, W) weight."""

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, height, width) / math.sqrt(height * width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Elementwise product and a sum over (H, W): works for any memory format.
        return (x * self.weight).sum(dim=(-2, -1))


STAGE_WIDTHS = (64, 128, 256, 512)
LAYOUTS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def final_spatial_size(frame_size: int) -> int:
    """Side of the last feature map: stem conv /2, max-pool /2, stages 2-4 /2 each (ceil)."""
    side = (frame_size + 2 * 3 - 7) // 2 + 1  # 7x7 conv, stride 2, padding 3
    side = (side + 2 * 1 - 3) // 2 + 1  # 3x3 max-pool, stride 2, padding 1
    for _ in range(3):
        side = (side + 2 * 1 - 3) // 2 + 1  # 3x3 conv, stride 2, padding 1
    return side


class ResNet(nn.Module):
    """ResNet-GN trunk + learned spatial embedding + linear + ReLU -> [B, feature_dim]."""

    def __init__(
        self,
        in_channels: int,
        frame_size: int,
        *,
        depth: int,
        feature_dim: int = 512,
        width: int = 1,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(f"ResNet depth {depth} is not one of {sorted(LAYOUTS)}")
        block, counts = LAYOUTS[depth]
        self.depth = depth
        stem = STAGE_WIDTHS[0] * width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False),
            group_norm(stem, norm_groups),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, cin = [], stem
        for i, (base, count) in enumerate(zip(STAGE_WIDTHS, counts)):
            blocks = []
            for j in range(count):
                blocks.append(block(cin, base * width, 2 if (i > 0 and j == 0) else 1, norm_groups))
                cin = base * width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_channels = cin
        self.final_size = final_spatial_size(frame_size)
        self.spatial_embedding = LearnedSpatialEmbedding(cin, self.final_size, self.final_size)
        self.dense = nn.Sequential(nn.Linear(cin, feature_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.spatial_embedding(self.stages(self.stem(x))))


def build_resnet(depth: int, cfg, *, in_channels: int, frame_size: int) -> ResNet:
    """A ``ResNet`` of ``depth`` sized by a ``ModelConfig`` (feature_dim, width, norm_groups)."""
    return ResNet(
        in_channels, frame_size, depth=depth, feature_dim=cfg.feature_dim, width=cfg.width, norm_groups=cfg.norm_groups,
    )

"""Every registered backbone x value head learns: 30 updates of the real training step on one
fixed batch lower the loss (TD + CQL + DR3), and every loss on the way is finite.

The registries are read at import time, so a backbone or value head registered later is
covered without touching this file. Sizes are tiny so the whole grid runs in well under two
minutes on 2 CPU cores (about 25 s on one thread): feature_dim 32, width 1, a one-layer ViT
of width 32, 11 atoms and, since ``model.width`` cannot go below the published
64/128/256/512 stage widths, ResNets with those widths divided by 8 (every block, group norm
and the spatial embedding still run, at every depth; ResNet-101 drops from 42M to 0.7M
parameters).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from scaled_ql.config import load_config
from scaled_ql.data.batch import Batch
from scaled_ql.losses import VALUE_KINDS, make_algorithm
from scaled_ql.models import BACKBONES
from scaled_ql.train.step import train_step
from scaled_ql.train.trainer import build_training_state

STEPS = 30
SIZE = 84  # the protocol's frames, so every backbone sees the spatial sizes it is built for
SMALL = [
    "games=[Pong, Breakout]",
    "train.batch_size=4",
    "train.lr=3e-4",
    "train.device=cpu",
    f"env.frame_size={SIZE}",
    "model.feature_dim=32",
    "model.width=1",
    "model.num_atoms=11",
    "model.v_min=-3",
    "model.v_max=3",
    "model.vit_hidden=32",
    "model.vit_depth=1",
    "model.vit_heads=2",
    "model.norm_groups=8",
]


def _fixed_batch(action_counts: list[int], seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    game = np.array([0, 0, 1, 1])
    return Batch(
        obs=rng.integers(0, 256, (4, 4, SIZE, SIZE), dtype=np.uint8),
        action=(rng.integers(0, 1 << 30, 4) % np.asarray(action_counts)[game]).astype(np.int64),
        reward=np.array([1.0, -1.0, 0.0, 1.0], dtype=np.float32),
        discount=np.array([0.97, 0.97, 0.0, 0.97], dtype=np.float32),
        next_obs=rng.integers(0, 256, (4, 4, SIZE, SIZE), dtype=np.uint8),
        game=game,
    )


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on 2 cores shared with other work, a second thread that waits for a
    busy core makes these small steps 10x slower, not 2x faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_resnets(monkeypatch):
    """The ResNets at 1/8 of their stage widths (there is no config key below width 1)."""
    from scaled_ql.models import resnet

    monkeypatch.setattr(resnet, "STAGE_WIDTHS", tuple(w // 8 for w in resnet.STAGE_WIDTHS))


@pytest.mark.parametrize("backbone,value", list(itertools.product(sorted(BACKBONES), sorted(VALUE_KINDS))))
def test_recipe_lowers_the_loss_on_a_fixed_batch(backbone, value, request):
    if backbone.startswith("resnet"):
        request.getfixturevalue("small_resnets")
    cfg = load_config(None, [*SMALL, f"model.backbone={backbone}", f"model.value={value}"])
    torch.manual_seed(0)
    model, target, optimizer = build_training_state(cfg, torch.device("cpu"))
    batch = _fixed_batch(model.action_counts).to_torch("cpu")
    algorithm = make_algorithm(cfg)
    model.train()
    losses = []
    for _ in range(STEPS):
        metrics = train_step(model, target, optimizer, batch, algorithm, cfg.train.grad_clip)
        losses.append(float(metrics["loss/total"]))
    assert all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0], f"{backbone} x {value}: loss went from {losses[0]:.4f} to {losses[-1]:.4f}"

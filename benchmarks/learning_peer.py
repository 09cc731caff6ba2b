"""A reference implementation on the same data: d3rlpy's DiscreteCQL (2.x) beside ours.

The learning benchmark's peer row. d3rlpy is an optional benchmark dependency, never a runtime
one (``pip install --no-deps d3rlpy==2.8.1`` and its own dependencies; see the README: d3rlpy
2.8.1 pins gymnasium 1.0.0 while ale-py's environments here need a newer one, and d3rlpy's
offline algorithms run on either).

What is kept the same as our run it is compared with: the dataset (one game's episodes of a
scaled_ql dataset, exported to d3rlpy's ``MDPDataset`` with its ``FrameStackTransitionPicker``
stacking 4 frames, zero-padded before an episode's first frame as our sampler does), the Nature
CNN (d3rlpy's ``PixelEncoderFactory``: 32-8x8/4, 64-4x4/2, 64-3x3/1, 512 units), the batch, the
learning rate, Adam's epsilon, gradient-norm clipping, the target update period, gamma, CQL's
alpha, rewards clipped to [-1, 1], frames scaled by 1/255, and the number of updates. What d3rlpy
does its own way: 1-step returns (its DiscreteCQL has no n-step option; compare with our run at
``data.n_step=1``) and its sampler (uniform over transitions, not balanced per game).

Evaluation is ours, under our protocol: d3rlpy's greedy ``predict`` is the policy played by
:func:`scaled_ql.eval.evaluate.evaluate`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scaled_ql.config import ExperimentConfig
from scaled_ql.data.store import ReplayStore
from scaled_ql.eval.evaluate import evaluate
from scaled_ql.games import get_game


def export_mdp_dataset(data_path: str | Path, game: str, frame_stack: int = 4):
    """One game's episodes of a scaled_ql dataset as a d3rlpy ``MDPDataset``.

    Our episodes end with a final row (the last observation, action 0, reward 0). A terminated
    episode drops it and marks its last step terminal (d3rlpy bootstraps from nothing there); a
    truncated one keeps it, marked as a timeout, so it serves only as the last step's next
    observation (d3rlpy makes no transition from an unterminated episode's last row).
    """
    import d3rlpy  # optional, heavy: the peer's own dependency, installed with --no-deps (see the module docstring)

    store = ReplayStore(data_path, [game], ignore_extra_games=True)
    rows = np.flatnonzero(store.game_id == 0)
    if rows.size == 0:
        raise ValueError(f"dataset '{data_path}': no rows of game '{game}'")
    last = store.is_last_row[rows]
    dropped = last & store.terminal[rows]  # a terminated episode's final row
    keep = rows[~dropped]
    terminals = np.zeros(keep.size, dtype=np.float32)
    timeouts = np.zeros(keep.size, dtype=np.float32)
    kept_last = store.is_last_row[keep]
    terminals[np.flatnonzero(np.isin(keep + 1, rows[dropped]))] = 1.0  # the step before a dropped final row
    timeouts[kept_last] = 1.0
    observations = store.gather_frames(keep)[:, None]  # [N, 1, H, W] uint8: the picker stacks them
    return d3rlpy.dataset.MDPDataset(
        observations=observations,
        actions=store.action[keep].astype(np.int64),
        rewards=store.reward[keep].astype(np.float32),
        terminals=terminals,
        timeouts=timeouts,
        transition_picker=d3rlpy.dataset.FrameStackTransitionPicker(n_frames=frame_stack),
        action_space=d3rlpy.ActionSpace.DISCRETE,
        action_size=get_game(game).num_actions,
    )


def make_d3rlpy_cql(cfg: ExperimentConfig):
    """d3rlpy's DiscreteCQL with ``cfg``'s network size, batch, optimizer, target period, gamma,
    CQL alpha and reward clipping (on the CPU)."""
    import d3rlpy  # optional, heavy: the peer's own dependency, installed with --no-deps (see the module docstring)

    return d3rlpy.algos.DiscreteCQLConfig(
        learning_rate=cfg.train.lr,
        optim_factory=d3rlpy.optimizers.AdamFactory(eps=cfg.train.adam_eps, clip_grad_norm=cfg.train.grad_clip or None),
        encoder_factory=d3rlpy.models.PixelEncoderFactory(feature_size=cfg.model.feature_dim),
        batch_size=cfg.train.batch_size,
        gamma=cfg.data.gamma,
        target_update_interval=cfg.train.target_update_period,
        alpha=cfg.loss.cql_alpha,
        observation_scaler=d3rlpy.preprocessing.PixelObservationScaler(),
        reward_scaler=d3rlpy.preprocessing.ClipRewardScaler(-cfg.data.reward_clip, cfg.data.reward_clip),
    ).create(device="cpu:0")


def train_d3rlpy_cql(cfg: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    """Train d3rlpy's DiscreteCQL on ``cfg``'s single game and dataset with ``cfg``'s network
    size and optimizer, evaluate it every ``train.eval_every`` updates and at the end with our
    evaluator. Returns what a learning-benchmark job records (final evaluation, curves, timing)."""
    import d3rlpy  # optional, heavy: the peer's own dependency, installed with --no-deps (see the module docstring)

    if len(cfg.games) != 1:
        raise ValueError(f"d3rlpy peer: one game at a time (DiscreteCQL is single-task); config games {cfg.games}")
    if cfg.model.backbone != "nature" or cfg.model.value != "scalar":
        raise ValueError(f"d3rlpy peer: compares the Nature CNN with scalar Q; config has model.backbone="
                         f"{cfg.model.backbone}, model.value={cfg.model.value}")
    game = cfg.games[0]
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    d3rlpy.seed(cfg.seed)
    dataset = export_mdp_dataset(cfg.data.path, game, cfg.env.frame_stack)
    algo = make_d3rlpy_cql(cfg)

    def policy(obs: np.ndarray, game_id: int) -> np.ndarray:
        return np.asarray(algo.predict(obs), dtype=np.int64)

    def play(step: int) -> dict[str, Any]:
        return evaluate(policy, [game], cfg.env, cfg.eval, seed=cfg.seed + 1_000_003, out_dir=run_dir / "eval" / f"step_{step:08d}",
                        progress=False, discount=(cfg.data.gamma, cfg.data.reward_clip))

    every = cfg.train.eval_every if cfg.train.eval_every > 0 else cfg.train.steps
    curve: list[list[float]] = []
    train_s, results = 0.0, None
    start = time.perf_counter()
    fitter = algo.fitter(dataset, n_steps=cfg.train.steps, n_steps_per_epoch=every, show_progress=False,
                         save_interval=10**9, logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    for epoch, _metrics in fitter:
        train_s += time.perf_counter() - start
        step = min(epoch * every, cfg.train.steps)
        results = play(step)
        curve.append([step, float(results["games"][game]["mean"])])
        start = time.perf_counter()
    assert results is not None
    res = results["games"][game]
    final = {game: {k: res.get(k) for k in ("mean", "std", "episodes", "returns", "human_normalized",
                                            "discounted_mean", "truncated_episodes")}}
    return {"run_dir": str(run_dir), "updates": cfg.train.steps, "final": final,
            "curves": {f"eval_return/{game}": curve}, "updates_per_s": round(cfg.train.steps / train_s, 2),
            "peer": {"library": "d3rlpy", "version": d3rlpy.__version__, "algorithm": "DiscreteCQL", "n_step": 1},
            "config": json.loads(cfg.to_json())}

"""Evaluation with the policy in the loop against the environments alone (``python -m benchmarks eval``).

Per game of the config: the vector environment of ``eval.num_envs`` ALE emulators under the
evaluation protocol, stepped (a) with uniformly random actions and nothing else, and (b) by the
config's network acting greedily (``scaled_ql.models.policy.greedy_policy``, a fresh network:
its speed does not depend on its weights) exactly as ``scaled-ql evaluate`` does. Reports agent
steps/s (environment steps summed over the emulators) for each, and the ratio.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from scaled_ql.config import ExperimentConfig
from scaled_ql.envs.atari import make_vector_env
from scaled_ql.games import get_game
from scaled_ql.models import build_model
from scaled_ql.models.policy import greedy_policy


def _steps_per_s(game: str, cfg: ExperimentConfig, act, seconds: float, warmup: int = 10) -> float:
    env = make_vector_env(get_game(game).name, cfg.eval.num_envs, cfg.env, max_episode_steps=cfg.eval.max_episode_steps)
    try:
        obs, _ = env.reset(seed=0)
        for _ in range(warmup):
            obs = env.step(act(obs))[0]
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            obs = env.step(act(obs))[0]
            steps += 1
        return steps * cfg.eval.num_envs / (time.perf_counter() - start)
    finally:
        env.close()


def bench_eval(cfg: ExperimentConfig, seconds: float = 10.0) -> dict[str, Any]:
    """Agent steps/s of greedy evaluation against random actions in the same environments, per game."""
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = torch.device("cuda" if cfg.train.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    if cfg.train.channels_last:
        model.channels_last = True
        model.to(memory_format=torch.channels_last)
    policy = greedy_policy(model, device)
    rng = np.random.default_rng(0)
    games = {}
    for game_id, game in enumerate(cfg.games):
        n = get_game(game).num_actions
        env_only = _steps_per_s(game, cfg, lambda obs: rng.integers(0, n, size=obs.shape[0]), seconds / 2)
        agent = _steps_per_s(game, cfg, lambda obs: policy(obs, game_id), seconds / 2)  # noqa: B023 - used at once
        games[game] = {"env_only_steps_per_s": round(env_only, 1), "agent_steps_per_s": round(agent, 1),
                       "ratio": round(agent / env_only, 3)}
    ratios = [g["ratio"] for g in games.values()]
    return {"benchmark": "eval", "games": games, "mean_ratio": round(float(np.mean(ratios)), 3), "num_envs": cfg.eval.num_envs,
            "backbone": cfg.model.backbone, "device": str(device), "threads": torch.get_num_threads(),
            "seconds_per_measurement": seconds / 2}

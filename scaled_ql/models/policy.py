"""Policies from a Q-network: ``policy(obs, game_id) -> actions``, what evaluation, the online
actor and data collection call. Exploration (epsilon) is added by those callers, around the
greedy policy, with their own generators."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from scaled_ql.config import ConfigError, EnvConfig
from scaled_ql.models.loading import load_model
from scaled_ql.models.qnet import MultiGameQNetwork

Policy = Callable[[np.ndarray, int], np.ndarray]
"""``policy(obs, game_id) -> actions``: obs uint8 [N, K, H, W]; returns int [N] actions."""


def greedy_policy(model: MultiGameQNetwork, device: torch.device) -> Policy:
    """Greedy policy of ``model``: (uint8 obs [N,K,H,W], game id) -> actions [N] (argmax of Q, or
    of the policy head with ``model.act_with=policy``). The model is in eval mode while it acts."""

    @torch.no_grad()
    def policy(obs: np.ndarray, game_id: int) -> np.ndarray:
        was_training = model.training
        model.eval()
        x = torch.from_numpy(obs).to(device)
        game = torch.full((x.shape[0],), game_id, dtype=torch.long, device=device)
        actions = model.greedy_actions(x, game, ((game_id,), x.shape[0])).cpu().numpy()  # one game: its head only
        model.train(was_training)
        return actions

    return policy


def checkpoint_policy(path: str | Path, games: list[str], env_cfg: EnvConfig | None = None) -> Policy:
    """Greedy policy of a checkpoint for ``games``: ``policy(obs, i)`` acts in ``games[i]``.

    Maps each game to the checkpoint's own head by name, so the caller's game order need not
    match the checkpoint's. Stops naming the game when the checkpoint has no head for it, and
    naming the key when its preprocessing differs from ``env_cfg``.
    """
    model, source = load_model(path)
    missing = [g for g in games if g not in model.games]
    if missing:
        raise ConfigError(f"checkpoint '{source}' has no head for {missing}; it knows {model.games}")
    if env_cfg is not None and model.env_cfg != env_cfg:
        diffs = [f"env.{k}: checkpoint {getattr(model.env_cfg, k)!r}, config {getattr(env_cfg, k)!r}"
                 for k in env_cfg.__dataclass_fields__ if getattr(model.env_cfg, k) != getattr(env_cfg, k)]
        raise ConfigError(f"checkpoint '{source}' expects other preprocessing: {'; '.join(diffs)}")
    greedy = greedy_policy(model, torch.device("cpu"))
    heads = [model.games.index(g) for g in games]
    return lambda obs, i: greedy(obs, heads[i])

"""``scaled-ql evaluate``: load a checkpoint and play its games in ALE."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from scaled_ql.config import ConfigError, EvalConfig
from scaled_ql.eval.evaluate import evaluate, format_score_table
from scaled_ql.models.loading import load_model, load_train_config
from scaled_ql.models.policy import greedy_policy


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    episodes: int | None = None,
    games: list[str] | None = None,
    max_episode_steps: int | None = None,
    num_envs: int | None = None,
    seed: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Play the checkpoint's games (or ``games``) in ALE under its evaluation settings, the given
    ones changed; print the score table and return the results (also written to ``out_dir``)."""
    model, source = load_model(checkpoint)
    cfg = load_train_config(source)
    eval_cfg = cfg.eval if cfg is not None else EvalConfig()
    changes = {k: v for k, v in {"episodes": episodes, "max_episode_steps": max_episode_steps, "num_envs": num_envs}.items() if v is not None}
    eval_cfg = dataclasses.replace(eval_cfg, **changes)
    if eval_cfg.episodes < 1:
        raise ConfigError(f"--episodes: expected at least 1 episode per game, found {eval_cfg.episodes}")
    chosen = games or model.games
    heads = {g: model.head_for(g) for g in chosen}
    unknown = [g for g, head in heads.items() if head is None]
    if unknown:
        raise ConfigError(f"--games: checkpoint '{source}' has no head for {unknown} (nor for their games, if variants); "
                          f"it knows {model.games}")
    for g, head in heads.items():
        if head != g:  # zero-shot: a variant the network never trained on, played with its game's head
            print(f"{g}: no head of its own in the checkpoint; played with {head}'s head (zero-shot)")

    policy = greedy_policy(model, torch.device("cpu"))
    ids = {g: model.games.index(heads[g]) for g in chosen}
    out = Path(out_dir) if out_dir is not None else (Path(source).parent / "eval" if Path(source).exists() else Path("eval"))
    seed = seed if seed is not None else (cfg.seed + 1_000_003 if cfg is not None else 0)
    results = evaluate(
        lambda obs, game_id: policy(obs, game_id), chosen, model.env_cfg, eval_cfg, seed=seed,
        out_dir=out, progress=progress, game_ids=ids,
    )
    borrowed = {g: head for g, head in heads.items() if head != g}
    if borrowed:  # recorded beside the returns: whose head played
        for g, head in borrowed.items():
            results["games"][g]["head"] = head
        (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_score_table(results))
    print(f"wrote {out / 'eval.json'} and {out / 'eval.png'}")
    return json.loads(json.dumps(results))


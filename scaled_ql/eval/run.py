"""``scaled-ql evaluate``: load a checkpoint and play its games in ALE."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from scaled_ql.config import ConfigError, EvalConfig, load_config_json


def load_model(path: str | Path, device: str = "cpu"):
    """Load the Q-network of a run folder, checkpoint folder, ``model/`` folder or Hub repo id."""
    from scaled_ql.models import MultiGameQNetwork
    from scaled_ql.train.checkpoint import CheckpointError, resolve_model_dir

    from scaled_ql.models.weights import WeightsError, looks_like_repo_id

    local = Path(path)
    if not local.exists() and (not looks_like_repo_id(str(path)) or local.parent.is_dir() and str(local.parent) not in ("", ".")):
        # A path (not owner/name, or one whose parent folder is here, like runs/tny): never ask the Hub.
        raise CheckpointError(f"checkpoint '{path}': no such folder" + (f" (nor Hub repo id: expected owner/name)" if not looks_like_repo_id(str(path)) else ""))
    source: str | Path = resolve_model_dir(local) if local.exists() else str(path)
    try:
        model = MultiGameQNetwork.from_pretrained(source, map_location=device, strict=True)
    except WeightsError:
        raise
    except FileNotFoundError:  # huggingface_hub's LocalEntryNotFoundError: offline, or the Hub unreachable
        raise CheckpointError(f"checkpoint '{source}': not a folder here, and as a Hub repo id: could not reach the Hugging Face "
                              f"Hub to download it, and it is not in the local cache (offline? check the network or HF_HUB_OFFLINE)") from None
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint '{source}' does not match this version's Q-network: {err}") from None
    return model.to(device).eval(), source


def _train_config(source: str | Path):
    """The training config saved beside the weights (a local folder or a Hub repo), if any."""
    local = Path(source) / "train_config.json"
    if local.is_file():
        return load_config_json(local)
    if Path(source).exists():
        return None
    from huggingface_hub import hf_hub_download

    try:  # a Hub repo id
        path = hf_hub_download(str(source), "train_config.json")
    except Exception:  # noqa: BLE001 - a repo without it (or offline): evaluate with the defaults
        return None
    return load_config_json(path)


def checkpoint_policy(path: str | Path, games: list[str], env_cfg=None):
    """Greedy policy of a checkpoint for ``games``: ``policy(obs, i)`` acts in ``games[i]``.

    Maps each game to the checkpoint's own head by name, so the caller's game order need not
    match the checkpoint's. Stops naming the game when the checkpoint has no head for it, and
    naming the key when its preprocessing differs from ``env_cfg``.
    """
    import torch

    from scaled_ql.train.trainer import make_policy

    model, source = load_model(path)
    missing = [g for g in games if g not in model.games]
    if missing:
        raise ConfigError(f"checkpoint '{source}' has no head for {missing}; it knows {model.games}")
    if env_cfg is not None and model.env_cfg != env_cfg:
        diffs = [f"env.{k}: checkpoint {getattr(model.env_cfg, k)!r}, config {getattr(env_cfg, k)!r}"
                 for k in env_cfg.__dataclass_fields__ if getattr(model.env_cfg, k) != getattr(env_cfg, k)]
        raise ConfigError(f"checkpoint '{source}' expects other preprocessing: {'; '.join(diffs)}")
    greedy = make_policy(model, torch.device("cpu"))
    heads = [model.games.index(g) for g in games]
    return lambda obs, i: greedy(obs, heads[i])


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
    import torch

    from scaled_ql.eval.evaluate import evaluate, format_score_table
    from scaled_ql.train.trainer import make_policy

    model, source = load_model(checkpoint)
    cfg = _train_config(source)
    eval_cfg = cfg.eval if cfg is not None else EvalConfig()
    changes = {k: v for k, v in {"episodes": episodes, "max_episode_steps": max_episode_steps, "num_envs": num_envs}.items() if v is not None}
    eval_cfg = dataclasses.replace(eval_cfg, **changes)
    if eval_cfg.episodes < 1:
        raise ConfigError(f"--episodes: expected at least 1 episode per game, found {eval_cfg.episodes}")
    chosen = games or model.games
    unknown = [g for g in chosen if g not in model.games]
    if unknown:
        raise ConfigError(f"--games: checkpoint '{source}' has no head for {unknown}; it knows {model.games}")

    policy = make_policy(model, torch.device("cpu"))
    ids = {g: model.games.index(g) for g in chosen}
    out = Path(out_dir) if out_dir is not None else (Path(source).parent / "eval" if Path(source).exists() else Path("eval"))
    seed = seed if seed is not None else (cfg.seed + 1_000_003 if cfg is not None else 0)
    results = evaluate(
        lambda obs, game_id: policy(obs, game_id), chosen, model.env_cfg, eval_cfg, seed=seed,
        out_dir=out, progress=progress, game_ids=ids,
    )
    print(format_score_table(results))
    print(f"wrote {out / 'eval.json'} and {out / 'eval.png'}")
    return json.loads(json.dumps(results))

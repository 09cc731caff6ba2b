"""Model cards the Hub understands, rendered from ``model_cards/q_network.md``.

The YAML header carries ``library_name``, tags and a ``model-index`` with, per game, the mean
episodic return (with its std) and the human-normalized score on ``ALE/<Game>-v5``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from model_cards import template_path
from scaled_ql.games import get_game

TAGS = ["reinforcement-learning", "offline-rl", "atari", "deep-q-learning", "cql", "scaled_ql"]


def eval_results(results: dict[str, Any]) -> list[EvalResult]:
    """One mean-return result (and one human-normalized result, where defined) per game. A game
    whose evaluation cut episodes at ``max_episode_steps`` (``capped``) is left out: its score is
    not the game's score, and the model-index would publish it as such."""
    out = []
    for game, res in results["games"].items():
        if res.get("capped"):
            continue
        spec = get_game(game)
        name = f"{spec.env_id} mode {spec.mode} difficulty {spec.difficulty}" if spec.is_variant else spec.env_id
        common = dict(task_type="reinforcement-learning", task_name="reinforcement-learning",
                      dataset_type=spec.env_id, dataset_name=name)
        out.append(EvalResult(metric_type="mean_reward", metric_name="mean_reward",
                              metric_value=f"{res['mean']:.2f} +/- {res['std']:.2f}", **common))
        if res.get("human_normalized") is not None:
            out.append(EvalResult(metric_type="human_normalized_score", metric_name="human_normalized_score",
                                  metric_value=round(float(res["human_normalized"]), 4), **common))
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _data_description(train_cfg: dict[str, Any]) -> str:
    path = Path(train_cfg["data"]["path"])
    meta_file = path / "scaled_ql_dataset.json"
    lines = [f"Offline dataset `{path}` (scaled_ql format: one row per step, single 84x84 frames), "
             f"{train_cfg['data']['n_step']}-step returns with gamma {train_cfg['data']['gamma']}, "
             f"rewards clipped to +/-{train_cfg['data']['reward_clip']} for training."]
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        collection = meta.get("collection") or {}
        if collection:
            lines.append(f"Source: {collection.get('source', 'n/a')}; behaviour policy: {collection.get('policy', 'n/a')} "
                         f"(epsilon {collection.get('epsilon', 'n/a')}), seed {collection.get('seed', 'n/a')}.")
        games = meta.get("games") or {}
        if isinstance(games, dict) and games:
            lines.append("")
            lines.append("| game | rows | episodes |")
            lines.append("|---|---:|---:|")
            for game, info in games.items():
                lines.append(f"| {game} | {info.get('rows', 'n/a')} | {info.get('episodes', 'n/a')} |")
    return "\n".join(lines)


def render_model_card(
    model_config: dict[str, Any],
    train_config: dict[str, Any],
    results: dict[str, Any] | None,
    repo_id: str,
    parameters: int,
    step: int,
) -> ModelCard:
    """Render the card for a checkpoint; ``results`` is an ``eval.json`` (or None)."""
    model = model_config["model"]
    games = model_config["games"]
    card_data = ModelCardData(
        library_name="scaled_ql",
        license="apache-2.0",
        tags=list(TAGS),
        model_name=repo_id,
        eval_results=eval_results(results) if results else None,
        pipeline_tag="reinforcement-learning",
    )
    rows, aggregate, protocol = [], "", ""
    if results:
        for game, res in results["games"].items():
            mark = " (capped)" if res.get("capped") else ""
            rows.append({"game": game + mark, "episodes": len(res["returns"]), "mean": _fmt(res["mean"]),
                         "std": _fmt(res["std"]), "hns": _fmt(res.get("human_normalized"), 3)})
        agg = results.get("aggregate", {})
        parts = []
        for key in ("iqm", "median", "mean"):
            entry = agg.get(key)
            if isinstance(entry, dict) and entry.get("value") is not None:
                lo, hi = entry.get("ci") or (None, None)
                parts.append(f"{key.upper()} human-normalized: {_fmt(entry['value'], 3)} (95% CI {_fmt(lo, 3)} to {_fmt(hi, 3)})")
        if agg.get("excluded_games"):
            parts.append(f"Left out of the aggregates (no human reference score): {', '.join(agg['excluded_games'])}")
        capped = [g for g, res in results["games"].items() if res.get("capped")]
        if capped:
            cap = results.get("protocol", {}).get("max_episode_steps")
            parts.append(f"Capped: episodes of {', '.join(capped)} were cut at {cap} agent steps, so their scores (and "
                         "aggregates that include them) are not full-game scores; they are not in the model-index")
        aggregate = "\n".join(f"- {p}" for p in parts)
        protocol = ", ".join(f"{k}={v}" for k, v in results.get("protocol", {}).items())
    heads = "one shared 18-action head" if model.get("shared_head") else "one head per game"
    return ModelCard.from_template(
        card_data,
        template_path=template_path(),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        backbone=model["backbone"],
        value=model["value"],
        head_description=heads,
        cql_alpha=train_config["loss"]["cql_alpha"],
        dr3_coef=train_config["loss"]["dr3_coef"],
        games=games,
        variants=[f"{g} is {spec.base} in ALE mode {spec.mode}, difficulty {spec.difficulty}"
                  for g in games if (spec := get_game(g)).is_variant],
        parameters=f"{parameters:,}",
        step=step,
        results_table=rows,
        aggregate=aggregate,
        protocol=protocol,
        data_description=_data_description(train_config),
        env=model_config["env"],
        train_config=json.dumps(train_config, indent=2),
    )

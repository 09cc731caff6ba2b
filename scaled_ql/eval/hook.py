"""Evaluation during and after training: play the network in ALE, set beside it what the network
believes (Q of the data's first states), log both, draw the run's curves.

The training loop calls :func:`run_evaluation` every ``train.eval_every`` updates and at the end,
and :func:`plot_curves` when it closes; they take a network and a sampler, never the loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from scaled_ql.config import ExperimentConfig
from scaled_ql.data.sampler import Sampler
from scaled_ql.eval.compare import compare_runs
from scaled_ql.eval.evaluate import add_baselines, evaluate, format_learning_table, format_score_table
from scaled_ql.models import MultiGameQNetwork
from scaled_ql.models.policy import greedy_policy


def plot_curves(run_dir: Path) -> None:
    """``curves.png``: evaluation returns (what the policy gets) beside the Q-values the network
    believes (data and start states), so over-estimation and unlearning show at a glance."""
    try:
        compare_runs([run_dir], run_dir / "curves.png",
                     ("eval_return/*", "eval_q_start/*", "eval_discounted_return/*", "q/data", "q/pi", "online/return",
                      "holdout/td"))
    except ValueError:  # nothing logged yet (a run shorter than one log period)
        pass


@torch.no_grad()
def start_state_values(model: MultiGameQNetwork, sampler: Sampler, device: torch.device, per_game: int = 64) -> dict[str, float]:
    """Mean max_a Q(s0, a) (V(s0) for a network with a state-value head, as IQL's) over (up to)
    ``per_game`` first states of the data's episodes of each game: how well the network thinks it
    does from the start, to set beside the returns it gets."""
    store, out = sampler.store, {}
    firsts = np.flatnonzero((store.step == 0) & ~store.is_last_row)
    was_training = model.training
    model.eval()
    for g, game in enumerate(model.games):
        rows = firsts[store.game_id[firsts] == g][:per_game]
        if rows.size:
            batch = sampler.batch_at(rows).to_torch(device)
            pred = model(batch.obs, batch.game)
            out[game] = float((pred.v if pred.v is not None else pred.q.max(-1).values).mean())
    model.train(was_training)
    return out


def run_evaluation(
    cfg: ExperimentConfig,
    model: MultiGameQNetwork,
    device: torch.device,
    out_dir: Path,
    writer: SummaryWriter | None,
    step: int,
    progress: bool,
    sampler: Sampler | None = None,
    baselines: bool = False,
    learns_values: bool = True,
) -> dict[str, Any]:
    """Play ``model`` greedily (``cfg.eval``) and write ``out_dir/eval.json``; with a ``sampler`` and
    ``learns_values`` (the algorithm's: behaviour cloning has no values), also the network's
    Q(s0) of the data's first states; with ``baselines``, a random policy's and the data's returns
    beside it. Logs to ``writer`` at ``step`` and prints the score table."""
    results = evaluate(greedy_policy(model, device), cfg.games, cfg.env, cfg.eval, seed=cfg.seed + 1_000_003, out_dir=out_dir,
                       progress=progress, discount=(cfg.data.gamma, cfg.data.reward_clip))
    if sampler is not None and learns_values:  # what it believes, beside what it gets
        for game, value in start_state_values(model, sampler, device).items():
            results["games"][game]["q_start"] = value
            if writer is not None:
                writer.add_scalar(f"eval_q_start/{game}", value, step)
        (out_dir / "eval.json").write_text(json.dumps(results, indent=1))
    if writer is not None:
        for game, res in results["games"].items():
            writer.add_scalar(f"eval_return/{game}", res["mean"], step)
            if "discounted_mean" in res:  # same units as eval_q_start: discounted clipped return
                writer.add_scalar(f"eval_discounted_return/{game}", res["discounted_mean"], step)
            if res.get("human_normalized") is not None:
                writer.add_scalar(f"eval_hns/{game}", res["human_normalized"], step)
        agg = results.get("aggregate", {})
        if isinstance(agg.get("iqm"), dict) and agg["iqm"].get("value") is not None:
            writer.add_scalar("eval_hns/iqm", agg["iqm"]["value"], step)
    tqdm.write(format_score_table(results))
    if baselines:  # the random policy under the same protocol and the data's own return, beside the learned policy
        data = {}
        if sampler is not None:  # the data's whole episodes (not those its collection budget cut short)
            caps = [int(m.collection.get("max_episode_steps") or 0) for m in sampler.store.metadata]
            cap = caps[0] if len(set(caps)) == 1 else 0
            data = {g: float(r.mean()) for g, r in sampler.store.episode_returns(cap).items() if r.size}
        add_baselines(results, cfg.games, cfg.env, cfg.eval, cfg.seed + 2_000_003, data)
        (out_dir / "eval.json").write_text(json.dumps(results, indent=1))
        tqdm.write("\nwhat it learned (returns per episode; Q(s0) and what it gets are discounted sums of clipped rewards):\n"
                   + format_learning_table(results))
    return results

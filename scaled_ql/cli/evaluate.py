"""``scaled-ql evaluate``: play a checkpoint in ALE and report its scores."""

from __future__ import annotations

import argparse
from pathlib import Path

from scaled_ql.eval.run import evaluate_checkpoint


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="play a checkpoint in ALE and report per-game and aggregate scores",
                       description="Run epsilon-greedy episodes (epsilon 0.001) of every game the checkpoint knows; write "
                       "eval.json (returns, mean, std, human-normalized score; mean/median/IQM with 95%% stratified-"
                       "bootstrap CIs) and eval.png.")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="a run folder, a checkpoint folder, its model/ folder, or a Hub model repo id (owner/name; "
                   "only a path that does not exist here is looked up on the Hub)")
    p.add_argument("--episodes", type=int, default=None, help="episodes per game (default: the checkpoint's eval.episodes)")
    p.add_argument("--games", nargs="+", default=None, help="evaluate only these games (default: all the checkpoint's games); a variant of a game it "
                   "knows (Breakout-m0d1) is played with that game's head, zero-shot")
    p.add_argument("--max-episode-steps", type=int, default=None, help="cut episodes after this many agent steps (CPU budget)")
    p.add_argument("--num-envs", type=int, default=None, help="parallel ALE environments per game")
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: the checkpoint's seed)")
    p.add_argument("--out", type=Path, default=None, help="folder for eval.json and eval.png (default: <checkpoint>/eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    evaluate_checkpoint(
        args.checkpoint, episodes=args.episodes, games=args.games, max_episode_steps=args.max_episode_steps,
        num_envs=args.num_envs, seed=args.seed, out_dir=args.out, progress=not args.no_progress,
    )
    return 0


"""``scaled-ql prep [ale|dqn-replay|rlu|hub]``: make a dataset by playing ALE, or convert published data."""

from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.dqn_replay import convert_dqn_replay
from data_prep.hub_datasets import convert_hub_dataset
from data_prep.rl_unplugged import convert_rl_unplugged
from data_prep.rollout import collect_dataset
from scaled_ql.cli.common import command_line
from scaled_ql.config import ExperimentConfig, load_config
from scaled_ql.data.writer import check_output_folder
from scaled_ql.models.policy import checkpoint_policy

from scaled_ql.cli.common import add_config, int_or_override


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("prep", help="make a dataset: play ALE, or convert DQN-Replay / RL Unplugged files",
                       usage="scaled-ql prep [ale|dqn-replay|rlu|hub] --config FILE [options] [key=value ...]",
                       description="SOURCE (first word, default ale): `ale` rolls out the behaviour policy of the "
                       "config's `prep` section (uniform random, or epsilon-greedy from a checkpoint) in every game of "
                       "`games`; `dqn-replay` converts Dopamine replay logs under --root (<Game>/<run>/replay_logs/); "
                       "`rlu` converts RL Unplugged Atari TFRecord shards given by --input; `hub` converts a Hugging Face "
                       "Hub Atari dataset in the JAT format (--repo-id, --hub-config). Every source writes one "
                       "row per step (single 84x84 frame, action, reward, terminal, truncated, episode id, game) as "
                       "Arrow files with a dataset card.")
    add_config(p)
    p.add_argument("--out", type=Path, default=None, help="dataset folder to write (default: the config's data.path)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--root", type=Path, default=None, help="dqn-replay: folder holding <Game>/<run>/replay_logs/")
    p.add_argument("--runs", type=int_or_override, nargs="+", default=[1], help="dqn-replay: run numbers to convert (default: 1)")
    p.add_argument("--checkpoints", type=int_or_override, nargs="+", default=None, help="dqn-replay: checkpoint numbers (default: all)")
    p.add_argument("--first-fraction", type=float, default=None,
                   help="dqn-replay: keep the first fraction of each run's checkpoints (Scaled QL's sub-optimal data: 0.2)")
    p.add_argument("--sample-fraction", type=float, default=None,
                   help="dqn-replay: keep this fraction of each checkpoint's transitions, as whole episodes (CQL: 0.01, 0.1)")
    p.add_argument("--input", nargs="+", default=None, help="rlu: TFRecord files, folders or globs")
    p.add_argument("--repo-id", default=None,
                   help="hub: a Hub dataset repo id (e.g. jat-project/jat-dataset) or a local copy of one")
    p.add_argument("--hub-config", nargs="+", default=None,
                   help="hub: dataset configs to convert (e.g. atari-pong); default: those of the config's games")
    p.add_argument("--max-episodes", type=int, default=None, help="hub: at most this many episodes per config")
    p.add_argument("--skip-bad", action="store_true", help="dqn-replay/rlu: skip unreadable inputs and list them at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    source = "ale"
    if args.overrides and args.overrides[0] in SOURCES:
        source, args.overrides = args.overrides[0], args.overrides[1:]
    cfg = load_config(args.config, args.overrides, training=False)
    out = args.out or Path(cfg.data.path)
    SOURCES[source](cfg, out, args)
    print(f"dataset written to {out}")
    return 0


def _ale(cfg: ExperimentConfig, out: Path, args: argparse.Namespace) -> None:
    """Roll out the ``prep`` section's behaviour policy in every game."""
    check_output_folder(out, args.overwrite)  # before loading a policy; the old folder stays until the new one is whole
    policy = None
    if cfg.prep.policy == "epsilon_greedy":
        if not cfg.prep.checkpoint:
            raise ValueError("config key 'prep.checkpoint': expected a checkpoint for prep.policy=epsilon_greedy, found ''")
        policy = checkpoint_policy(cfg.prep.checkpoint, cfg.games, cfg.env)
    collect_dataset(cfg, out, policy=policy, progress=not args.no_progress, overwrite=args.overwrite, command=command_line(args))


def _dqn_replay(cfg: ExperimentConfig, out: Path, args: argparse.Namespace) -> None:
    if args.root is None:
        raise ValueError("prep dqn-replay: --root is required (the folder holding <Game>/<run>/replay_logs/)")
    convert_dqn_replay(args.root, out, cfg.games, runs=tuple(args.runs), checkpoints=args.checkpoints,
                       first_fraction=args.first_fraction, sample_fraction=args.sample_fraction, seed=cfg.seed,
                       skip_bad=args.skip_bad, overwrite=args.overwrite, command=command_line(args),
                       progress=not args.no_progress)


def _hub(cfg: ExperimentConfig, out: Path, args: argparse.Namespace) -> None:
    if not args.repo_id:
        raise ValueError("prep hub: --repo-id is required (a Hub dataset repo id or a local copy)")
    convert_hub_dataset(args.repo_id, out, None if args.hub_config else cfg.games, config_names=args.hub_config,
                        max_episodes=args.max_episodes, skip_bad=args.skip_bad, overwrite=args.overwrite,
                        command=command_line(args), progress=not args.no_progress)


def _rlu(cfg: ExperimentConfig, out: Path, args: argparse.Namespace) -> None:
    if not args.input:
        raise ValueError("prep rlu: --input is required (TFRecord files, folders or globs)")
    convert_rl_unplugged(args.input, out, games=cfg.games, skip_bad=args.skip_bad, overwrite=args.overwrite,
                         command=command_line(args), progress=not args.no_progress)


SOURCES = {"ale": _ale, "dqn-replay": _dqn_replay, "rlu": _rlu, "hub": _hub}
"""The first word of ``scaled-ql prep`` (default ``ale``) and what makes the dataset from it."""

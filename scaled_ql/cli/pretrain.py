"""``scaled-ql pretrain``: train the multi-game Q-network offline (or resume a run)."""

from __future__ import annotations

import argparse

from scaled_ql.config import load_config, resume_config
from scaled_ql.train.trainer import pretrain

from scaled_ql.cli.common import add_config


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("pretrain", help="train the multi-game Q-network offline (CQL + DR3)",
                       description="Train on the data at data.path (an Arrow folder, memory-mapped; or Parquet shards streamed "
                       "from a folder, a Hub dataset repo id or a URL); checkpoints, TensorBoard logs and the final "
                       "evaluation go to <runs_dir>/<name>.")
    add_config(p)
    p.add_argument("--resume", action="store_true", help="continue the run from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.resume:  # the run's own saved config; only what a resume may change is taken from the command line
        cfg, changes = resume_config(cfg, args.overrides)
        if (cfg.run_dir / "config.json").is_file():
            print(f"resuming run '{cfg.run_dir}' with its saved config.json"
                  + (f"; changed: {'; '.join(changes)}" if changes else " (nothing changed)"))
    result = pretrain(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"run folder: {result.run_dir}  (step {result.step}, checkpoint {result.checkpoint})")
    return 0


"""``scaled-ql push``: publish a checkpoint to the Hugging Face Hub in one commit."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scaled_ql.hub.push import push_checkpoint


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("push", help="publish a checkpoint (weights, config, card, evaluation, TensorBoard logs) to the Hub",
                       description="Build an upload folder from a checkpoint: model.safetensors, config.json, "
                       "train_config.json, a model card (README.md) with a model-index of per-game results, eval.json, "
                       "eval.png and the run's TensorBoard logs; then create the Hub repo and upload it in one commit.")
    p.add_argument("--checkpoint", required=True, type=Path, help="a run folder, a checkpoint folder or its model/ folder")
    p.add_argument("--repo-id", required=True, help="Hub repo id, e.g. your-name/scaled-ql-atari")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--dry-run", action="store_true", help="build the folder and list it; upload nothing")
    p.add_argument("--eval", type=Path, default=None, help="eval.json to report (default: the run's evaluation of that checkpoint)")
    p.add_argument("--out", type=Path, default=None, help="where to build the upload folder (default: a temporary folder)")
    return p


def run(args: argparse.Namespace) -> int:
    report = push_checkpoint(args.checkpoint, args.repo_id, private=args.private, dry_run=args.dry_run,
                             eval_json=args.eval, out_dir=args.out)
    print(json.dumps(report, indent=1))
    return 0


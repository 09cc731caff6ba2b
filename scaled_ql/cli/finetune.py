"""``scaled-ql finetune``: the training loop started from a pretrained checkpoint."""

from __future__ import annotations

import argparse

from scaled_ql.train.finetune import finetune_config
from scaled_ql.train.trainer import pretrain

from scaled_ql.cli.common import add_config


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("finetune", help="fine-tune a pretrained checkpoint to one or more games (offline)",
                       description="Start from a pretrained checkpoint (run/checkpoint/model folder or Hub repo id): its "
                       "backbone, and its head for every game it already knows; other games get a fresh head. Then train "
                       "with the same loop and losses on --data. Without --config the checkpoint's own training config "
                       "is the base, so the architecture matches; the rest comes from key=value overrides.")
    add_config(p)
    p.add_argument("--init", required=True, help="pretrained checkpoint: a run, checkpoint or model folder, or a Hub repo id")
    p.add_argument("--game", nargs="+", required=True, help="the game(s) to fine-tune on, e.g. Alien")
    p.add_argument("--data", required=True, help="the data of those games: an Arrow dataset folder (scaled-ql prep), or Parquet "
                   "shards to stream (a folder, a Hub dataset repo id user/name, an fsspec URL)")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the heads")
    p.add_argument("--backbone-lr-scale", type=float, default=None, help="backbone learning rate = train.lr x this")
    p.add_argument("--resume", action="store_true", help="continue the run from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    cfg = finetune_config(args.init, args.game, args.data, args.config, args.overrides,
                          freeze_backbone=args.freeze_backbone, backbone_lr_scale=args.backbone_lr_scale)
    result = pretrain(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"run folder: {result.run_dir}  (step {result.step}, checkpoint {result.checkpoint})")
    return 0


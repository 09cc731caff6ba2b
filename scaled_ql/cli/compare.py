"""``scaled-ql compare``: learning curves of several runs on one plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from scaled_ql.eval.compare import DEFAULT_TAGS, compare_runs


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="learning curves of several runs on one plot",
                       description="Read the TensorBoard logs of each run folder and draw, per tag, one line per run "
                       "(default tags: eval_return/*, eval_q_start/*, q/data, q/pi, loss/td, holdout/td, online/return) into one PNG, plus the series as JSON.")
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with tb/)")
    p.add_argument("--out", type=Path, default=Path("compare.png"), help="PNG to write (default: compare.png)")
    p.add_argument("--tags", nargs="+", default=None, help="tags to draw; a trailing * matches a prefix")
    return p


def run(args: argparse.Namespace) -> int:
    drawn = compare_runs(args.runs, args.out, tuple(args.tags) if args.tags else DEFAULT_TAGS)
    print(f"wrote {args.out} ({len(drawn)} panels: {', '.join(drawn)})")
    return 0


"""``scaled-ql``: parse the command line and run one command. One module per command, each with
``register(subparsers)`` (its arguments) and ``run(args) -> exit status``, as lerobot's scripts.

    scaled-ql prep      --config configs/tiny.yaml [key=value ...]   make a dataset by playing ALE
    scaled-ql pretrain  --config configs/tiny.yaml [--resume] [key=value ...]
    scaled-ql finetune  --init runs/tiny --game Pong --data data/pong [key=value ...]
    scaled-ql evaluate  --checkpoint runs/tiny [--episodes N]
    scaled-ql bench     train|sampler|model|distributed|parquet|memory|learning   (from a source checkout)
    scaled-ql data      info|verify|show|export-parquet|import-parquet|push
    scaled-ql compare | push | info
"""

from __future__ import annotations

import argparse
import sys

from scaled_ql.cli import bench, compare, data, evaluate, finetune, info, prep, pretrain, push
from scaled_ql.cli.common import parse_with_overrides, run_reporting_errors
from scaled_ql.train.parallel import end_program

COMMANDS = {module.__name__.rsplit(".", 1)[1]: module
            for module in (prep, pretrain, finetune, evaluate, bench, data, compare, push, info)}
"""Each command's module, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaled-ql", description="Offline multi-game Q-learning on Atari (CQL + DR3).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        module.register(sub)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as a namespace; every ``key=value`` word ends up in ``overrides``."""
    return parse_with_overrides(build_parser(), argv)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words and getattr(COMMANDS.get(words[0]), "main", None) is not None:  # a command with its own parser (bench)
        return COMMANDS[words[0]].main(words[1:])
    args = parse_args(argv)
    args.argv = argv
    status = run_reporting_errors(f"scaled-ql {args.command}", lambda: COMMANDS[args.command].run(args))
    # As the program itself (the console script, ``python -m scaled_ql.cli``), not a caller in this process.
    return end_program(status) if argv is None else status

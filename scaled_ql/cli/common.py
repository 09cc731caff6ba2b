"""What every command shares: the ``--config`` option, ``key=value`` overrides, the command line."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from scaled_ql.config import ConfigError
from scaled_ql.train.interrupt import EXIT_INTERRUPTED, TrainingInterrupted

OVERRIDES_HELP = (
    "config overrides as key.sub=value (YAML values), e.g. train.steps=200 data.path=data/mine; "
    "an unknown key or wrong type stops with the key named"
)


OVERRIDE = re.compile(r"[A-Za-z_]\w*(\.\w+)*=")
"""A ``key.sub=value`` override; never taken as the value of an option with several values."""
MULTI_VALUE = ("runs", "checkpoints", "input", "hub_config", "game", "games", "only", "seeds", "tags")


def int_or_override(text: str) -> int | str:
    if OVERRIDE.match(text):
        return text  # moved to the overrides by split_overrides
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None


def split_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options with several values (``--input a b``) take every word up to the next option, so
    ``key=value`` overrides written after them land in their list: move them to the overrides."""
    moved = []
    for name in MULTI_VALUE:
        values = getattr(args, name, None)
        if not isinstance(values, list):
            continue
        mine = [v for v in values if isinstance(v, str) and OVERRIDE.match(v)]
        if mine:
            kept = [v for v in values if v not in mine]
            if not kept:
                parser.error(f"--{name.replace('_', '-')}: expected at least one value before the key=value overrides {mine}")
            setattr(args, name, kept)
            moved += mine
    if moved:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(moved)} (this command takes no key=value overrides)")
        args.overrides = [*args.overrides, *moved]


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, default=None, help="experiment YAML file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)


def parse_with_overrides(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser``'s namespace of ``argv``; every ``key=value`` word ends up in ``overrides``, also
    when it follows options or other positionals (``bench train --config X a.b=1``)."""
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    split_overrides(parser, args)
    return args


def command_line(args: argparse.Namespace) -> str:
    """The command as typed (recorded in a dataset's card)."""
    return " ".join(["scaled-ql", *(sys.argv[1:] if args.argv is None else args.argv)])


def run_reporting_errors(prefix: str, command: Callable[[], int]) -> int:
    """Run ``command()``; an error a user can fix becomes one line on stderr and exit status 2, a
    signal the interrupted exit status (see ``scaled_ql.train.interrupt``)."""
    try:
        return command()
    except TrainingInterrupted as stop:
        print(f"{prefix}: {stop} (exit status {EXIT_INTERRUPTED})", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt as stop:
        print(f"{prefix}: {stop.args[0] if stop.args else 'interrupted'}", file=sys.stderr)
        return 130
    except (ConfigError, FileNotFoundError, FileExistsError, KeyError, IndexError, ValueError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only folder, a full disk, a file where a folder should be: the path and the cause
        where = f"'{err.filename}': " if err.filename else ""
        print(f"{prefix}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2

"""``scaled-ql bench WHAT ...``: the benchmarks of the source checkout (``benchmarks/``, outside the wheel).

The benchmarks have their own parser and entry point (``python -m benchmarks WHAT ...``, in
``benchmarks/cli.py``); this command hands them the rest of the command line (its ``main``
instead of ``run``) when the package runs from a checkout, and says so and stops when it does
not (an installed wheel).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from scaled_ql.cli.common import run_reporting_errors

CHECKOUT = Path(__file__).resolve().parents[2]
"""The folder above the package: the source checkout when the package runs from one."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return sub.add_parser("bench", add_help=False, help="measure a hot path or run the learning benchmark (from a source checkout)",
                          description="train|loop|ops|gpu|eval|sampler|model|distributed|parquet|memory|learning: `scaled-ql bench --help` lists them.")


def main(argv: list[str]) -> int:
    """Run ``python -m benchmarks`` of the checkout with ``argv`` (``WHAT [options] [key=value ...]``)."""
    return run_reporting_errors("scaled-ql bench", lambda: _benchmarks().main(argv, prog="scaled-ql bench"))


def _benchmarks():
    if not ((CHECKOUT / "benchmarks" / "cli.py").is_file() and (CHECKOUT / "pyproject.toml").is_file()):
        raise FileNotFoundError(
            "the benchmarks live in the source checkout's benchmarks/ folder, which this installation does not have "
            f"(expected '{CHECKOUT / 'benchmarks' / 'cli.py'}', found no such file): clone the repository and run "
            "`scaled-ql bench` (or `python -m benchmarks`) from its root")
    if str(CHECKOUT) not in sys.path:  # an editable install maps only the packages, not the checkout's root
        sys.path.insert(0, str(CHECKOUT))
    # Imported by name at run time: the package never imports benchmarks/ (it is not in the wheel).
    return importlib.import_module("benchmarks.cli")


"""``scaled-ql bench WHAT``: the benchmarks of the source checkout (``benchmarks/``, outside the wheel).

The arguments are defined here, once; running them is ``benchmarks.cli.run``. From an installed
wheel without the checkout this says so and stops.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from scaled_ql.cli.common import add_config, int_or_override

CHECKOUT = Path(__file__).resolve().parents[2]
"""The folder above the package: the source checkout when the package runs from one."""

WHATS = ("train", "sampler", "model", "distributed", "parquet", "memory", "learning")

DESCRIPTION = (
    "`train`: update steps/s of the CQL+DR3 step on the config's model and batch size; `sampler`: stacked n-step "
    "transitions/s from a memory-mapped dataset; `model`: parameters, forward+backward time per sample and FLOPs per "
    "update of every backbone; `distributed`: update throughput of 1 process x 1 thread against 2 processes x 1 thread "
    "(scaling efficiency); `parquet`: Parquet export, verify, import and streaming rates; `memory`: memory and rate of "
    "the memory-mapped sampler, cold then warm cache; `learning`: the offline-RL learning benchmark (scripted behaviour "
    "data, BC / DQN / CQL / CQL+DR3 / IQL, multi- vs single-game, fine-tuning vs scratch), resumable, writing "
    "docs/RESULTS.md. The benchmarks live in the source checkout's benchmarks/ folder, outside the installed package; "
    "`python -m benchmarks WHAT ...` runs the same there."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=WHATS, help="which benchmark")
    add_config(p)
    p.add_argument("--seconds", type=float, default=10.0, help="measuring time (after warm-up)")
    p.add_argument("--data", type=Path, default=None, help="sampler: a dataset folder (default: a synthetic one)")
    p.add_argument("--suite", default="cpu-small", help="learning: the suite (cpu-small, smoke)")
    p.add_argument("--only", nargs="+", default=(), metavar="PATTERN",
                   help="learning: run only the jobs whose ids match these shell patterns (and what they need), "
                   "e.g. 'multi/cql*' 'data/*'")
    p.add_argument("--seeds", type=int_or_override, nargs="+", default=None, help="learning: seeds (default: the suite's)")
    p.add_argument("--work", type=Path, default=None, help="learning: datasets and runs (default runs/bench-learning/SUITE)")
    p.add_argument("--results", type=Path, default=None, help="learning: one JSON per finished job (default docs/results/SUITE)")
    p.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"), help="learning: the report")
    p.add_argument("--report-only", action="store_true", help="learning: rewrite the report from the results, run nothing")
    p.add_argument("--list", action="store_true", help="learning: list the jobs and whether each has a result")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="measure a hot path or run the learning benchmark (from a source checkout)",
                       description=DESCRIPTION)
    add_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    if not ((CHECKOUT / "benchmarks" / "cli.py").is_file() and (CHECKOUT / "pyproject.toml").is_file()):
        raise FileNotFoundError(
            f"bench {args.what}: the benchmarks live in the source checkout's benchmarks/ folder, which this installation "
            f"does not have (expected '{CHECKOUT / 'benchmarks' / 'cli.py'}', found no such file): clone the repository and run "
            "`scaled-ql bench` (or `python -m benchmarks`) from its root")
    if str(CHECKOUT) not in sys.path:  # an editable install maps only the packages, not the checkout's root
        sys.path.insert(0, str(CHECKOUT))
    # Imported by name at run time: the package never imports benchmarks/ (it is not in the wheel).
    return importlib.import_module("benchmarks.cli").run(args)

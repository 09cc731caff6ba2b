"""The benchmarks' entry point: ``python -m benchmarks WHAT ...``, and what ``scaled-ql bench WHAT``
runs from a checkout. Each benchmark prints JSON (the learning benchmark writes its report)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import memory, parquet, speed
from benchmarks.learning_bench import LearningBenchmark
from benchmarks.learning_report import write_report
from scaled_ql.cli import run_reporting_errors
from scaled_ql.cli.bench import DESCRIPTION, add_arguments
from scaled_ql.cli.common import parse_with_overrides
from scaled_ql.config import ExperimentConfig, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=DESCRIPTION)
    add_arguments(parser)
    args = parse_with_overrides(parser, argv)
    return run_reporting_errors(f"benchmarks {args.what}", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark ``args.what`` (the arguments of ``scaled_ql.cli.bench.add_arguments``)."""
    if args.what == "learning":
        learning(args)
        return 0
    report = SPEED[args.what](load_config(args.config, args.overrides), args)
    if report is not None:  # under several processes only the main one reports
        print(json.dumps(report, indent=1))
    return 0


def learning(args: argparse.Namespace) -> None:
    if args.overrides:
        raise ValueError(f"bench learning: a suite fixes its settings; found overrides {args.overrides} (use --suite, --seeds, --only)")
    work = args.work or Path("runs/bench-learning") / args.suite
    results = args.results or Path("docs/results") / args.suite
    bench = LearningBenchmark(args.suite, work, results, seeds=tuple(args.seeds) if args.seeds else None, progress=False)
    if args.list:
        for job in bench.jobs:
            print(f"{'done' if bench.result_path(job.id).is_file() else '    '}  {job.id}")
        return
    if not args.report_only:
        bench.run(tuple(args.only))
    print(f"wrote {write_report(bench, args.out)}")


def _memory(cfg: ExperimentConfig, args: argparse.Namespace) -> dict:
    if args.data is None:
        raise ValueError("bench memory: --data is required (a large Arrow dataset folder)")
    return memory.measure_sampling_rss(args.data, batch_size=cfg.train.batch_size, n_step=cfg.data.n_step,
                                       cold_seconds=args.seconds, warm_seconds=args.seconds)


SPEED = {
    "train": lambda cfg, args: speed.bench_train(cfg, seconds=args.seconds),
    "model": lambda cfg, args: speed.bench_model(cfg, batch_size=cfg.train.batch_size),
    # --data None: synthetic noise frames (compression ratio meaningless)
    "parquet": lambda cfg, args: parquet.bench_parquet(args.data),
    "memory": _memory,
    "distributed": lambda cfg, args: speed.bench_distributed(args.config, args.overrides, seconds=args.seconds),
    "sampler": lambda cfg, args: speed.bench_sampler(path=str(args.data) if args.data else None, batch_size=cfg.train.batch_size,
                                                     seconds=args.seconds, games=cfg.games, n_step=cfg.data.n_step),
}
"""``WHAT`` -> its benchmark, from the loaded config and the arguments."""

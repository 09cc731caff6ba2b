"""The benchmarks' entry point: ``python -m benchmarks WHAT ...``, and what ``scaled-ql bench WHAT``
runs from a checkout. Each benchmark prints JSON (the learning benchmark writes its report)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import evaluation, gpu, loop, memory, parquet, speed, streaming
from benchmarks.learning_bench import LearningBenchmark
from benchmarks.learning_report import write_report
from scaled_ql.cli.common import add_config, int_or_override, parse_with_overrides, run_reporting_errors
from scaled_ql.config import ExperimentConfig, load_config

WHATS = ("train", "loop", "ops", "gpu", "eval", "sampler", "model", "distributed", "parquet", "streaming", "memory", "learning")

DESCRIPTION = (
    "`train`: update steps/s of the CQL+DR3 step on the config's model and batch size; `loop`: pretrain's own loop "
    "on a dataset (sampling, copy, update, logging, checkpoints) timed phase by phase, against the floor of this "
    "machine's matrix multiply (and d3rlpy's DiscreteCQL fit loop with --vs-d3rlpy); `ops`: the update operator by operator (time, share, GFLOP/s); `gpu`: the loop of the Nature CNN and of ResNet-101 with C51 "
    "heads at batch 512 (samples/s, TFLOP/s, MFU, phases, channels_last on/off, under torchrun), smaller on a CPU; `eval`: greedy evaluation's "
    "agent steps/s against the same environments stepped with random actions; `sampler`: stacked n-step "
    "transitions/s from a memory-mapped dataset; `model`: parameters, forward+backward time per sample and FLOPs per "
    "update of every backbone; `distributed`: update throughput of 1 process x 1 thread against 2 processes x 1 thread "
    "(scaling efficiency); `parquet`: Parquet export, verify, import and streaming rates; `streaming`: transitions/s "
    "of the streaming sampler (with and without prefetching, alone and beside a simulated update) against the "
    "memory-mapped sampler on the same data; `memory`: memory and rate of "
    "the memory-mapped sampler, cold then warm cache; `learning`: the offline-RL learning benchmark (scripted behaviour "
    "data, BC / DQN / CQL / CQL+DR3 / IQL, multi- vs single-game, fine-tuning vs scratch), resumable, writing "
    "docs/RESULTS.md. The benchmarks live in the source checkout's benchmarks/ folder, outside the installed package; "
    "`python -m benchmarks WHAT ...` runs the same there."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=WHATS, help="which benchmark")
    add_config(p)
    p.add_argument("--seconds", type=float, default=10.0, help="measuring time (after warm-up)")
    p.add_argument("--data", type=Path, default=None, help="sampler, loop: a dataset folder (default: a synthetic one)")
    p.add_argument("--steps", type=int, default=300, help="loop: updates timed (after --warmup)")
    p.add_argument("--warmup", type=int, default=20, help="loop: updates run before timing")
    p.add_argument("--vs-d3rlpy", action="store_true", help="loop: also time d3rlpy's DiscreteCQL fit loop on the same "
                   "game, network, batch and optimizer (both on the first game, 1-step, no DR3)")
    p.add_argument("--no-sync", dest="sync", action="store_false", help="loop: do not synchronize a GPU at phase boundaries")
    p.add_argument("--no-flops", dest="flops", action="store_false", help="loop: do not count the FLOPs of an update")
    p.add_argument("--small", action="store_true", default=None, help="gpu: the small CPU version (default when no GPU)")
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


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_arguments(parser)
    args = parse_with_overrides(parser, argv)
    return run_reporting_errors(f"{prog} {args.what}", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark ``args.what`` (the arguments of :func:`add_arguments`)."""
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
    "eval": lambda cfg, args: evaluation.bench_eval(cfg, seconds=args.seconds),
    "loop": lambda cfg, args: loop.bench_loop(args.config, args.overrides, data=args.data, steps=args.steps, warmup=args.warmup,
                                              vs_d3rlpy=args.vs_d3rlpy, sync=args.sync, flops=args.flops),
    "gpu": lambda cfg, args: gpu.bench_gpu(small=args.small),
    "ops": lambda cfg, args: loop.op_profile(args.config, args.overrides, data=args.data, steps=args.steps if args.steps != 300 else 20),
    # --data None: synthetic noise frames (compression ratio meaningless)
    "parquet": lambda cfg, args: parquet.bench_parquet(args.data),
    "streaming": lambda cfg, args: streaming.bench_streaming(args.data, games=cfg.games if args.data is None else None,
                                                             batch_size=cfg.train.batch_size, seconds=args.seconds,
                                                             buffer_rows=cfg.data.stream_buffer_rows),
    "memory": _memory,
    "distributed": lambda cfg, args: speed.bench_distributed(args.config, args.overrides, seconds=args.seconds),
    "sampler": lambda cfg, args: speed.bench_sampler(path=str(args.data) if args.data else None, batch_size=cfg.train.batch_size,
                                                     seconds=args.seconds, games=cfg.games, n_step=cfg.data.n_step),
}
"""``WHAT`` -> its benchmark, from the loaded config and the arguments."""

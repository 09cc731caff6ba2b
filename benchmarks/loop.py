"""The training loop as ``pretrain`` runs it, timed phase by phase, against the hardware's floor
(``python -m benchmarks loop``).

``bench_loop`` runs ``pretrain`` itself on a dataset (sampling, the host-to-device copy, the
update, logging, target syncs and checkpoints at the config's periods; evaluation off, it has its
own benchmark), with a :class:`~scaled_ql.train.phases.PhaseClock` that synchronizes the device
at each phase boundary, and reports after a warm-up:

- updates/s and milliseconds per update of each phase, and each phase's share of the wall time;
- the floor: the FLOPs of one real update (``torch.utils.flop_counter`` on the real step: the
  convolutions and matmuls of the forward passes and the backward) divided by the rate this
  machine's matrix multiply reaches (fp32 on CPU, bf16 on CUDA, measured here on square
  matrices), and the loop's ratio to it;
- optionally (``vs_d3rlpy``) d3rlpy's DiscreteCQL ``fit`` loop on the same game's data, network,
  batch and optimizer, timed the same way (its updates/s), and our ratio to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.learning_peer import export_mdp_dataset, make_d3rlpy_cql
from benchmarks.speed import write_benchmark_dataset
from scaled_ql.config import ExperimentConfig, load_config
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.schema import read_metadata
from scaled_ql.data.store import ReplayStore
from scaled_ql.losses.algorithms import make_algorithm
from scaled_ql.train.phases import PhaseClock
from scaled_ql.train.step import train_step
from scaled_ql.train.trainer import build_training_state, pretrain


def matmul_rate(device: torch.device | str = "cpu", size: int = 2048, repeats: int = 7) -> dict[str, Any]:
    """FLOP/s of one square matrix multiply on ``device`` (fp32 on CPU, bf16 on CUDA): the median
    of ``repeats`` timed products after a warm-up, 2 * size**3 FLOPs each."""
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    times = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    flops = 2 * size**3 / statistics.median(times)
    return {"flops_per_s": flops, "gflops_per_s": round(flops / 1e9, 1), "dtype": str(dtype).removeprefix("torch."),
            "size": size, "threads": torch.get_num_threads() if device.type == "cpu" else None}


def update_flops(cfg: ExperimentConfig, data_path: str | Path, device: torch.device | str = "cpu") -> int:
    """FLOPs of one real update of ``cfg`` (every forward pass its algorithm makes, the backward),
    counted by ``torch.utils.flop_counter`` on a batch of the dataset, on ``device`` (under bf16
    autocast on CUDA, as training runs; the count depends on the shapes only)."""
    device = torch.device(device)
    model, target, optimizer = build_training_state(cfg, device)
    store = ReplayStore(data_path, cfg.games, ignore_extra_games=cfg.data.ignore_extra_games)
    batch = Sampler.from_config(store, cfg.data, cfg.train.batch_size, frame_stack=cfg.env.frame_stack, seed=0).sample()
    algorithm = make_algorithm(cfg, support=model.support)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with FlopCounterMode(display=False) as counter, autocast:
        train_step(model, target, optimizer, batch.to_torch(device), algorithm, cfg.train.grad_clip)
    return int(counter.get_total_flops())


def bench_loop(config: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *, data: str | Path | None = None,
               steps: int = 300, warmup: int = 20, vs_d3rlpy: bool = False, sync: bool = True,
               flops: bool = True) -> dict[str, Any]:
    """Time ``pretrain``'s loop on the config (a YAML file and ``key=value`` overrides) for
    ``steps`` updates after ``warmup`` (see the module). ``data``: a dataset folder holding the
    config's games (default: a synthetic one). ``sync``: synchronize a GPU at every phase boundary
    (exact phases, no overlap; on CPU it changes nothing). ``flops``: count one update's FLOPs."""
    if vs_d3rlpy:  # both loops on what d3rlpy's DiscreteCQL can run: one game, 1-step returns, no DR3
        first = load_config(config, list(overrides)).games[0]
        overrides = [*overrides, f"games=[{first}]", "data.n_step=1", "loss.dr3_coef=0"]
    cfg = load_config(config, list(overrides))
    if vs_d3rlpy and (cfg.model.backbone, cfg.model.value, cfg.loss.algorithm) != ("nature", "scalar", "q_learning"):
        raise ValueError(f"bench loop --vs-d3rlpy: d3rlpy's DiscreteCQL is the Nature CNN with scalar Q and CQL; the config has "
                         f"model.backbone={cfg.model.backbone}, model.value={cfg.model.value}, loss.algorithm={cfg.loss.algorithm}")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    with tempfile.TemporaryDirectory(prefix="scaled_ql_loop_") as tmp:
        if data is None:
            data = write_benchmark_dataset(Path(tmp) / "data", cfg.games, rows_per_game=10_000)
            source = "synthetic noise frames (10,000 rows per game)"
        else:
            source = str(data)
            meta = read_metadata(data)
            missing = [g for g in cfg.games if g not in meta.games]
            if missing:
                raise ValueError(f"bench loop: dataset '{data}' has no rows of {missing}; it holds {list(meta.games)}")
        run_cfg = load_config(config, [*overrides, f"data.path={data}", "data.ignore_extra_games=true", "eval.episodes=0",
                                       f"runs_dir={Path(tmp) / 'runs'}", "name=loop", f"train.steps={warmup + steps}"])
        device = torch.device("cuda" if run_cfg.train.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
        clock = PhaseClock(device, sync=sync, skip=warmup)
        with contextlib.redirect_stdout(sys.stderr):  # the run's status lines; this command's stdout is its report
            result = pretrain(run_cfg, progress=False, clock=clock)
        ran = json.loads((result.run_dir / "config.json").read_text())["dist"]  # as resolved by the run
        loop = clock.report()
        count = update_flops(run_cfg, data, device) if flops else None
        rate = matmul_rate(device)
        report: dict[str, Any] = {
            "benchmark": "loop", "dataset": source, "games": list(cfg.games), "batch_size": cfg.train.batch_size,
            "backbone": cfg.model.backbone, "value": cfg.model.value, "algorithm": cfg.loss.algorithm,
            "cql_alpha": cfg.loss.cql_alpha, "dr3_coef": cfg.loss.dr3_coef, "n_step": cfg.data.n_step,
            "prefetch": cfg.train.prefetch, "compile": cfg.train.compile, "channels_last": cfg.train.channels_last,
            "log_every": cfg.train.log_every, "checkpoint_every": cfg.train.checkpoint_every,
            "device": str(device), "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "warmup_updates": warmup, **loop, "matmul": {k: v for k, v in rate.items() if k != "flops_per_s"},
            "processes": ran["world_size"], "mixed_precision": ran["mixed_precision"], "backend": ran["backend"],
            # accelerate wraps the model (DDP, DeepSpeed) only when more than one process runs
            "accelerate_wraps_model": ran["world_size"] > 1 or ran["backend"] == "deepspeed",
            "flops_per_update": count,
        }
        if count is not None:
            floor_ms = 1000 * count / rate["flops_per_s"]
            report["floor"] = {"gflops_per_update": round(count / 1e9, 3), "floor_ms_per_update": round(floor_ms, 2),
                               "floor_updates_per_s": round(1000 / floor_ms, 1),
                               "ratio_to_floor": round(loop["updates_per_s"] / (1000 / floor_ms), 3) if loop["updates_per_s"] else None}
        if vs_d3rlpy:
            peer = d3rlpy_fit_rate(load_config(config, [*overrides, f"data.path={data}"]), steps=steps)
            report["d3rlpy"] = peer
            report["ratio_to_d3rlpy"] = round(loop["updates_per_s"] / peer["updates_per_s"], 2)
    return report


def d3rlpy_fit_rate(cfg: ExperimentConfig, *, steps: int) -> dict[str, Any]:
    """Updates/s of d3rlpy's DiscreteCQL ``fit`` loop (its sampling and update, nothing else) on
    ``cfg``'s one game, network, batch and optimizer (:func:`benchmarks.learning_peer.make_d3rlpy_cql`):
    two epochs of ``steps`` updates, the first a warm-up, the second timed."""
    import d3rlpy  # optional, heavy: the peer's own dependency (a benchmark extra, never a runtime one)

    with contextlib.redirect_stdout(sys.stderr):  # d3rlpy logs to stdout; the report is this command's stdout
        return _d3rlpy_fit_rate(d3rlpy, cfg, steps)


def _d3rlpy_fit_rate(d3rlpy, cfg: ExperimentConfig, steps: int) -> dict[str, Any]:
    dataset = export_mdp_dataset(cfg.data.path, cfg.games[0], cfg.env.frame_stack)
    algo = make_d3rlpy_cql(cfg)
    fitter = algo.fitter(dataset, n_steps=2 * steps, n_steps_per_epoch=steps, show_progress=False, save_interval=10**9,
                         logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    times, t0 = [], time.perf_counter()
    for _epoch, _metrics in fitter:
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    return {"library": "d3rlpy", "version": d3rlpy.__version__, "algorithm": "DiscreteCQL", "game": cfg.games[0],
            "updates": steps, "updates_per_s": round(steps / times[-1], 2)}


def op_profile(config: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *, data: str | Path | None = None,
               steps: int = 20, warmup: int = 5, top: int = 12) -> dict[str, Any]:
    """Where one update's time goes, operator by operator (``torch.profiler`` with FLOP counts, on
    the CPU): milliseconds per update, share of the update, and the GFLOP/s each convolution and
    matrix product reaches, beside this machine's matrix-multiply rate. What holds the loop below
    its floor shows here."""
    from torch.profiler import ProfilerActivity, profile  # the profiler: only this diagnostic needs it

    cfg = load_config(config, list(overrides))
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    with tempfile.TemporaryDirectory(prefix="scaled_ql_ops_") as tmp:
        if data is None:
            data = write_benchmark_dataset(Path(tmp) / "data", cfg.games, rows_per_game=5_000)
        cfg = load_config(config, [*overrides, f"data.path={data}", "data.ignore_extra_games=true"])
        model, target, optimizer = build_training_state(cfg, torch.device("cpu"))
        store = ReplayStore(data, cfg.games, ignore_extra_games=True)
        sampler = Sampler.from_config(store, cfg.data, cfg.train.batch_size, frame_stack=cfg.env.frame_stack, seed=0)
        algorithm = make_algorithm(cfg, support=model.support)
        batches = [sampler.sample().to_torch("cpu") for _ in range(steps + warmup)]
        for batch in batches[:warmup]:
            train_step(model, target, optimizer, batch, algorithm, cfg.train.grad_clip)
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            for batch in batches[warmup:]:
                train_step(model, target, optimizer, batch, algorithm, cfg.train.grad_clip)
        wall_ms = 1000 * (time.perf_counter() - t0) / steps
    rate = matmul_rate("cpu")
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        ms = e.self_cpu_time_total / 1000 / steps
        flops = getattr(e, "flops", 0) or 0
        rows.append({"op": e.key, "ms_per_update": round(ms, 3), "calls_per_update": round(e.count / steps, 1),
                     "gflops_per_s": round(flops / steps / (ms / 1000) / 1e9, 1) if flops and ms > 0 else None})
    total_ms = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1000 / steps
    for row in rows:
        row["share"] = round(row["ms_per_update"] / total_ms, 4)
    return {"benchmark": "ops", "batch_size": cfg.train.batch_size, "backbone": cfg.model.backbone, "games": list(cfg.games),
            "threads": torch.get_num_threads(), "ms_per_update_profiled": round(total_ms, 2),
            "ms_per_update_wall_under_profiler": round(wall_ms, 2), "matmul_gflops_per_s": rate["gflops_per_s"], "ops": rows}

"""Speed benchmarks of the two hot loops and the networks (``python -m benchmarks train|sampler|model|
distributed``); each returns a JSON-able dict (not part of the tests)."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from torch.utils.flop_counter import FlopCounterMode

from scaled_ql.config import load_config
from scaled_ql.data.batch import Batch
from scaled_ql.data.schema import CollectionInfo, read_metadata
from scaled_ql.data.writer import write_dataset
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore
from scaled_ql.games import get_game
from scaled_ql.losses.algorithms import make_algorithm
from scaled_ql.models import BACKBONES, build_model, count_parameters
from scaled_ql.train.parallel import Distribution, make_accelerator, prepare, shutdown, unwrap
from scaled_ql.train.step import train_step
from scaled_ql.train.trainer import build_training_state

ROOT = Path(__file__).resolve().parent.parent


def write_benchmark_dataset(
    path: str | Path,
    games: Sequence[str] = ("Pong", "Breakout"),
    rows_per_game: int = 20_000,
    *,
    frame_shape: tuple[int, int] = (84, 84),
    seed: int = 0,
) -> Path:
    """A synthetic dataset in the real format: noise frames, episodes of 50..1000 steps."""
    rng = np.random.default_rng(seed)

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        episode_id = 0
        for game in games:
            num_actions = get_game(game).num_actions  # actions must be in the game's set (the writer checks)
            left = rows_per_game
            while left > 0:
                rows = min(left, int(rng.integers(51, 1001)))
                if left - rows < 2:  # never leave a one-row remainder
                    rows = left
                last = np.arange(rows) == rows - 1
                terminal = bool(rng.random() < 0.5)
                yield {
                    "frame": rng.integers(0, 256, size=(rows, *frame_shape), dtype=np.uint8),
                    "action": np.where(last, 0, rng.integers(0, num_actions, size=rows)).astype(np.int32),
                    "reward": np.where(last, 0, rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0, 10.0], size=rows)).astype(np.float32),
                    "terminal": last & terminal,
                    "truncated": last & (not terminal),
                    "episode_id": np.full(rows, episode_id, dtype=np.int64),
                    "step": np.arange(rows, dtype=np.int32),
                    "game": np.full(rows, game, dtype=object),
                }
                episode_id += 1
                left -= rows

    write_dataset(
        path,
        chunks(),
        collection=CollectionInfo(source="synthetic benchmark data (noise frames)", policy="random", seed=seed, command="benchmarks.speed.write_benchmark_dataset"),
        frame_shape=frame_shape,
    )
    return Path(path)


def bench_sampler(
    path: str | None = None,
    batch_size: int = 256,
    seconds: float = 5.0,
    games: Sequence[str] | None = None,
    *,
    n_step: int = 3,
    rows_per_game: int = 20_000,
    warmup_batches: int = 20,
) -> dict:
    """Time ``Sampler.sample()`` on one thread; builds a synthetic dataset when ``path`` is None.

    ``games`` defaults to every game of the dataset at ``path`` (Pong and Breakout for the
    synthetic one). Returns transitions/s, batches/s and the median batch time.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = None
    try:
        if path is None:
            tmp = tempfile.TemporaryDirectory(prefix="scaled_ql_bench_")
            path = str(write_benchmark_dataset(Path(tmp.name) / "data", games or ("Pong", "Breakout"), rows_per_game))
        if games is None:
            games = list(read_metadata(path).games)
        store = ReplayStore(path, list(games))
        sampler = Sampler(store, batch_size, n_step=n_step, seed=0)
        for _ in range(warmup_batches):
            sampler.sample()
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            sampler.sample()
            times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        return {
            "benchmark": "sampler",
            "dataset": str(path) if tmp is None else "synthetic (temporary)",
            "dataset_rows": len(store),
            "games": list(store.games),
            "batch_size": batch_size,
            "n_step": n_step,
            "frame_stack": sampler.frame_stack,
            "batches": len(times),
            "seconds": round(elapsed, 3),
            "batches_per_s": round(len(times) / elapsed, 2),
            "transitions_per_s": round(len(times) * batch_size / elapsed, 1),
            "median_batch_ms": round(statistics.median(times) * 1e3, 3),
            "threads": 1,
            "cpu_count": os.cpu_count(),
        }
    finally:
        torch.set_num_threads(previous_threads)
        if tmp is not None:
            tmp.cleanup()


def bench_train(cfg, seconds: float = 10.0, warmup_steps: int = 5, windows: int = 10) -> dict:
    """Update steps/s of the full training step (online forward on s and s', target forward,
    TD + CQL + DR3, backward, clip, AdamW) on a fixed batch of random uint8 frames.

    The model, target and optimizer are built and wrapped exactly as ``pretrain`` does (under
    ``torchrun`` each process takes its share of ``train.batch_size``, the global batch); sampling
    is excluded (see ``bench_sampler``). Reports the median over ``windows`` equal time windows;
    under several processes only the main one returns the report (the others return None).
    """
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    accelerator, cfg, topo = make_accelerator(cfg)
    try:
        return _bench_train(cfg, accelerator, topo, seconds, warmup_steps, windows)
    finally:
        shutdown(accelerator)


def _bench_train(cfg, accelerator, topo, seconds: float, warmup_steps: int, windows: int) -> dict | None:
    device = accelerator.device
    torch.manual_seed(cfg.seed)
    model, target, optimizer = build_training_state(cfg, device)
    model, optimizer = prepare(accelerator, model, optimizer)
    algorithm, dist = make_algorithm(cfg, support=unwrap(model).support), Distribution(accelerator)
    rng = np.random.default_rng(cfg.seed + topo.rank)
    b, k, size, games = topo.per_device_batch, cfg.env.frame_stack, cfg.env.frame_size, len(cfg.games)
    game = np.repeat(np.arange(games), b // games)
    counts = np.asarray(unwrap(model).action_counts)
    batch = Batch(
        obs=rng.integers(0, 256, (b, k, size, size), dtype=np.uint8),
        action=(rng.integers(0, 1 << 30, b) % counts[game]).astype(np.int64),
        reward=rng.uniform(-1, 1, b).astype(np.float32),
        discount=np.full(b, cfg.data.gamma ** cfg.data.n_step, dtype=np.float32),
        next_obs=rng.integers(0, 256, (b, k, size, size), dtype=np.uint8),
        game=game.astype(np.int64),
    ).to_torch(device)

    def step() -> None:
        metrics = train_step(model, target, optimizer, batch, algorithm, cfg.train.grad_clip, dist)
        float(metrics["loss/total"])  # host sync, as the training loop does

    start = time.perf_counter()
    for _ in range(warmup_steps):
        step()
    # Every process must run the same number of steps (each one all-reduces gradients), so the
    # steps per window come from the main process's warm-up time.
    per_window = [max(1, round(seconds / windows / ((time.perf_counter() - start) / warmup_steps)))]
    if topo.world_size > 1:
        broadcast_object_list(per_window, from_process=0)
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(per_window[0]):
            step()
        rates.append(per_window[0] / (time.perf_counter() - start))
    if not accelerator.is_main_process:
        return None
    median = statistics.median(rates)
    return {
        "benchmark": "train_step",
        "updates_per_s": round(median, 2),
        "ms_per_update": round(1000 / median, 2),
        "transitions_per_s": round(median * b * topo.world_size, 1),
        "updates_per_s_windows": [round(r, 2) for r in rates],
        "batch_size": b * topo.world_size,
        "per_device_batch": b,
        "processes": topo.world_size,
        "backend": cfg.dist.backend,
        "games": games,
        "backbone": cfg.model.backbone,
        "value": cfg.model.value,
        "parameters": count_parameters(unwrap(model)),
        "cql_alpha": cfg.loss.cql_alpha,
        "dr3_coef": cfg.loss.dr3_coef,
        "channels_last": cfg.train.channels_last,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def bench_model(
    cfg,
    backbones: Sequence[str] | None = None,
    batch_size: int = 32,
    repeats: int = 5,
    *,
    time_batch: int = 8,
    max_seconds: float = 20.0,
) -> dict:
    """Size, CPU speed and compute of the full Q-network for each backbone of ``backbones``.

    Every backbone (default: all of ``BACKBONES``) is built as ``build_model`` builds ``cfg``
    with ``model.backbone`` replaced; all other keys (width, feature_dim, heads, ...) are the
    config's. Per backbone:

    - ``parameters``: of the whole ``MultiGameQNetwork`` (backbone and heads separately too);
    - ``ms_per_sample``: forward + backward of the network on ``time_batch`` random frames
      (fewer for a network that would not fit ``max_seconds`` so), on this machine's CPU in
      fp32 (channels_last as ``train.channels_last`` says), median over up to ``repeats`` timed
      runs after a warm-up, fewer when ``max_seconds`` runs out;
    - ``flops_per_update``: what one update step of batch ``batch_size`` costs: forward and
      backward of 2 * batch_size samples (s and s' in one pass, as ``train_step`` does) plus
      a forward of batch_size samples through the target network, counted analytically by
      ``torch.utils.flop_counter`` on the meta device (no computation; convolutions,
      matmuls and attention, 2 FLOPs per multiply-add; norms and activations not counted).
    """
    names = list(BACKBONES) if backbones is None else list(backbones)
    unknown = [n for n in names if n not in BACKBONES]
    if unknown:
        raise ValueError(f"bench_model: unknown backbone(s) {unknown}; valid: {', '.join(sorted(BACKBONES))}")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    k, size, n_games = cfg.env.frame_stack, cfg.env.frame_size, len(cfg.games)

    def frames(b: int, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        obs = torch.randint(0, 256, (b, k, size, size), dtype=torch.uint8, device=device)
        return obs, torch.arange(b, device=device) % n_games

    def stand_in_loss(model, out) -> torch.Tensor:
        # Stands in for TD + CQL + DR3: reaches every head and the features; its own cost is noise.
        q = out.q.masked_fill(torch.isinf(out.q), 0.0)
        return q.sum() + out.features.pow(2).sum()

    results = {}
    for name in names:
        bcfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=name))
        torch.manual_seed(cfg.seed)

        # Analytic FLOPs on the meta device: shapes only, nothing is computed or allocated.
        with torch.device("meta"):
            online, target = build_model(bcfg), build_model(bcfg)
            obs2, game2 = frames(2 * batch_size, "meta")
            obs1, game1 = frames(batch_size, "meta")
            with FlopCounterMode(display=False) as online_flops:
                stand_in_loss(online, online(obs2, game2)).backward()
            with FlopCounterMode(display=False) as target_flops, torch.no_grad():
                target(obs1, game1)
        forward_flops = target_flops.get_total_flops()
        flops = online_flops.get_total_flops() + forward_flops
        del online, target

        model = build_model(bcfg)
        if cfg.train.channels_last:
            model.channels_last = True
            model.to(memory_format=torch.channels_last)
        model.train()

        def fwd_bwd(obs: torch.Tensor, game: torch.Tensor) -> float:
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            stand_in_loss(model, model(obs, game)).backward()
            return time.perf_counter() - t0

        start = time.perf_counter()
        # One sample first: a network too big for time_batch within max_seconds is timed on fewer.
        fwd_bwd(*frames(1))  # cold start (allocator, oneDNN kernel selection)
        one = fwd_bwd(*frames(1))
        batch = max(1, min(time_batch, int(max_seconds / (max(1, repeats) + 1) / max(one, 1e-6))))
        obs, game = frames(batch)
        if batch > 1:
            fwd_bwd(obs, game)  # warm-up at this shape (allocator, oneDNN kernel selection)
        times: list[float] = []
        while len(times) < max(1, repeats) and (not times or time.perf_counter() - start < max_seconds):
            times.append(fwd_bwd(obs, game))
        params = count_parameters(model)
        backbone_params = count_parameters(model.backbone)
        results[name] = {
            "parameters": params,
            "backbone_parameters": backbone_params,
            "head_parameters": params - backbone_params,
            "ms_per_sample": round(statistics.median(times) * 1e3 / batch, 3),
            "time_batch": batch,
            "timed_repeats": len(times),
            "flops_per_update": int(flops),
            "gflops_per_update": round(flops / 1e9, 2),
            "flops_per_sample_forward": int(forward_flops // batch_size),
        }
        del model
    return {
        "benchmark": "model",
        "batch_size": batch_size,
        "games": n_games,
        "value": cfg.model.value,
        "feature_dim": cfg.model.feature_dim,
        "width": cfg.model.width,
        "frame": [k, size, size],
        "channels_last": cfg.train.channels_last,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "backbones": results,
    }


def bench_distributed(config: str | Path | None, overrides: Sequence[str] = (), seconds: float = 10.0) -> dict:
    """Throughput of 1 process x 1 thread against 2 processes x 1 thread on this machine.

    Each run is ``torchrun --standalone --nproc_per_node N -m benchmarks train`` with
    one thread per process and the same per-process batch (``train.batch_size`` of the config;
    the 2-process run has twice the global batch), so the ratio of transitions/s is the weak-
    scaling speed-up; efficiency = speed-up / 2.
    """
    cfg = load_config(config, list(overrides))
    results = {}
    for nproc in (1, 2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "benchmarks", "train", *(["--config", str(config)] if config else []),
               "--seconds", str(seconds), *overrides, "train.threads=1", f"train.batch_size={cfg.train.batch_size * nproc}"]
        # `-m benchmarks` is found from the checkout's root, wherever this is run from.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"bench distributed: the {nproc}-process run failed:\n{proc.stderr[-3000:]}")
        text = proc.stdout
        results[nproc] = json.loads(text[text.index("{"): text.rindex("}") + 1])
    speedup = results[2]["transitions_per_s"] / results[1]["transitions_per_s"]
    return {
        "benchmark": "distributed",
        "one_process": {k: results[1][k] for k in ("transitions_per_s", "updates_per_s", "batch_size", "threads")},
        "two_processes": {k: results[2][k] for k in ("transitions_per_s", "updates_per_s", "batch_size", "per_device_batch", "threads")},
        "speedup": round(speedup, 3),
        "scaling_efficiency": round(speedup / 2, 3),
        "backend": results[2]["backend"],
    }

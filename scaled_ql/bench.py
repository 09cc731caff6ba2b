"""Benchmarks behind ``scaled-ql bench``; each returns a JSON-able dict (not part of the tests)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np


def write_benchmark_dataset(
    path: str | Path,
    games: Sequence[str] = ("Pong", "Breakout"),
    rows_per_game: int = 20_000,
    *,
    frame_shape: tuple[int, int] = (84, 84),
    seed: int = 0,
) -> Path:
    """A synthetic dataset in the real format: noise frames, episodes of 50..1000 steps."""
    from scaled_ql.data.format import CollectionInfo, write_dataset

    rng = np.random.default_rng(seed)

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        episode_id = 0
        for game in games:
            left = rows_per_game
            while left > 0:
                rows = min(left, int(rng.integers(51, 1001)))
                if left - rows < 2:  # never leave a one-row remainder
                    rows = left
                last = np.arange(rows) == rows - 1
                terminal = bool(rng.random() < 0.5)
                yield {
                    "frame": rng.integers(0, 256, size=(rows, *frame_shape), dtype=np.uint8),
                    "action": np.where(last, 0, rng.integers(0, 6, size=rows)).astype(np.int32),
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
        collection=CollectionInfo(source="synthetic benchmark data (noise frames)", policy="random", seed=seed, command="scaled_ql.bench.write_benchmark_dataset"),
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
    import torch

    from scaled_ql.data.format import read_metadata
    from scaled_ql.data.sampler import Sampler
    from scaled_ql.data.store import ReplayStore

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

    The model, target and optimizer are built exactly as ``pretrain`` builds them; sampling is
    excluded (see ``bench_sampler``). Reports the median over ``windows`` equal time windows.
    """
    import torch

    from scaled_ql.data.batch import Batch
    from scaled_ql.models import count_parameters
    from scaled_ql.train.step import train_step
    from scaled_ql.train.trainer import build_training_state, resolve_device

    device = resolve_device(cfg.train.device)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)
    model, target, optimizer = build_training_state(cfg, device)
    rng = np.random.default_rng(cfg.seed)
    b, k, size, games = cfg.train.batch_size, cfg.env.frame_stack, cfg.env.frame_size, len(cfg.games)
    game = np.repeat(np.arange(games), b // games)
    counts = np.asarray(model.action_counts)
    batch = Batch(
        obs=rng.integers(0, 256, (b, k, size, size), dtype=np.uint8),
        action=(rng.integers(0, 1 << 30, b) % counts[game]).astype(np.int64),
        reward=rng.uniform(-1, 1, b).astype(np.float32),
        discount=np.full(b, cfg.data.gamma ** cfg.data.n_step, dtype=np.float32),
        next_obs=rng.integers(0, 256, (b, k, size, size), dtype=np.uint8),
        game=game.astype(np.int64),
    ).to_torch(device)

    def step() -> None:
        metrics = train_step(model, target, optimizer, batch, cfg.loss, cfg.train.grad_clip)
        float(metrics["loss/total"])  # host sync, as the training loop does

    for _ in range(warmup_steps):
        step()
    rates = []
    window = seconds / windows
    for _ in range(windows):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < window:
            step()
            n += 1
        rates.append(n / (time.perf_counter() - start))
    median = statistics.median(rates)
    return {
        "benchmark": "train_step",
        "updates_per_s": round(median, 2),
        "ms_per_update": round(1000 / median, 2),
        "transitions_per_s": round(median * b, 1),
        "updates_per_s_windows": [round(r, 2) for r in rates],
        "batch_size": b,
        "games": games,
        "backbone": cfg.model.backbone,
        "value": cfg.model.value,
        "parameters": count_parameters(model),
        "cql_alpha": cfg.loss.cql_alpha,
        "dr3_coef": cfg.loss.dr3_coef,
        "channels_last": cfg.train.channels_last,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }

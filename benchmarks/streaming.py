"""Streaming from Parquet shards against the memory-mapped sampler on the same data
(``python -m benchmarks streaming`` / ``scaled-ql bench streaming``; not part of the tests).

Measures, in one process, transitions/s of

* ``mmap``: ``Sampler.sample()`` on the memory-mapped Arrow folder;
* ``stream_prefetch0`` / ``stream_prefetchN``: ``StreamingSampler.sample()`` on its Parquet export,
  reading, checking, decompressing and decoding shards in the calling thread, or ``N`` blocks ahead
  in a background thread (the batches are the same);
* ``*_with_step``: the same while the caller also waits ``step_ms`` per batch, as for a GPU update
  (which releases the GIL): with prefetching, reading overlaps that wait, so the rate approaches
  ``batch_size / step_ms`` when the pipeline is not the bottleneck.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.speed import write_benchmark_dataset
from scaled_ql.data.parquet import export_parquet
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.schema import read_metadata
from scaled_ql.data.store import ReplayStore
from scaled_ql.data.streaming import StreamingSampler


def _rate(draw: Callable[[], Any], batch_size: int, seconds: float, step_s: float = 0.0) -> float:
    draw()  # the first fill (streaming: every game's first buffer)
    drawn, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        draw()
        drawn += batch_size
        if step_s:
            time.sleep(step_s)
    return round(drawn / (time.perf_counter() - start), 1)


def bench_streaming(
    path: str | Path | None = None,
    *,
    games: Sequence[str] | None = None,
    batch_size: int = 256,
    seconds: float = 10.0,
    buffer_rows: int = 10_000,
    prefetch: int = 2,
    rows_per_shard: int = 10_000,
    step_ms: float = 20.0,
    rows_per_game: int = 40_000,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Transitions/s of the memory-mapped sampler and of the streaming sampler (without and with
    prefetching, alone and beside a ``step_ms`` wait per batch) on the same data: the Arrow folder
    ``path`` (default: synthetic noise frames, which do not compress) and its Parquet export."""
    tmp = Path(tempfile.mkdtemp(prefix="scaled_ql_bench_streaming_", dir=work_dir))
    try:
        if path is None:
            path = write_benchmark_dataset(tmp / "arrow", games or ("Pong", "Breakout"), rows_per_game)
            source = f"synthetic noise frames, {rows_per_game} rows per game"
        else:
            source = str(path)
        meta = read_metadata(path)
        names = list(games or meta.games)
        bs = max(len(names), batch_size - batch_size % len(names))
        export = export_parquet(path, tmp / "pq", rows_per_shard=rows_per_shard, verify=False)
        store = ReplayStore(path, names)
        report: dict[str, Any] = {
            "benchmark": "streaming", "dataset": source, "rows": meta.num_rows, "games": names, "batch_size": bs,
            "buffer_rows": buffer_rows, "rows_per_shard": rows_per_shard, "shards": export["shards"],
            "parquet_bytes": export["parquet_bytes"], "arrow_bytes": export["arrow_bytes"], "step_ms": step_ms,
            "cpu_count": os.cpu_count(),
        }
        mmap = Sampler(store, bs, seed=0)
        report["mmap_transitions_per_s"] = _rate(mmap.sample, bs, seconds)
        report["mmap_with_step_transitions_per_s"] = _rate(mmap.sample, bs, seconds, step_ms / 1000)
        for ahead in (0, prefetch):
            for step in (0.0, step_ms / 1000):
                stream = StreamingSampler.from_parquet(tmp / "pq", names, bs, buffer_size=buffer_rows, prefetch=ahead, seed=0)
                key = f"stream_prefetch{ahead}{'_with_step' if step else ''}_transitions_per_s"
                report[key] = _rate(stream.sample, bs, seconds, step)
                stream.close()
        report["stream_over_mmap"] = round(report[f"stream_prefetch{prefetch}_transitions_per_s"] / report["mmap_transitions_per_s"], 3)
        report["step_bound_transitions_per_s"] = round(bs / (step_ms / 1000), 1)
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

"""Parquet conversion and streaming throughput (``python -m benchmarks parquet``; not part of the tests)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.speed import write_benchmark_dataset
from scaled_ql.data.schema import read_metadata
from scaled_ql.data.parquet import export_parquet, import_parquet, verify_parquet
from scaled_ql.data.streaming import StreamingSampler


def bench_parquet(
    path: str | Path | None = None,
    *,
    rows_per_game: int = 20_000,
    games: Sequence[str] = ("Pong", "Breakout"),
    rows_per_shard: int = 100_000,
    stream_batches: int = 200,
    batch_size: int = 256,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Export rows/s, verify MB/s, import rows/s and streaming transitions/s of a dataset folder.

    ``path`` defaults to a synthetic dataset of noise frames (``rows_per_game`` per game): its
    compression ratio means nothing (noise does not compress); pass a real dataset (e.g.
    ``data/tiny``) for that. Everything written goes to a temporary folder, removed at the end.
    """
    tmp = Path(tempfile.mkdtemp(prefix="scaled_ql_bench_parquet_", dir=work_dir))
    try:
        if path is None:
            path = write_benchmark_dataset(tmp / "arrow", games, rows_per_game)
            source = f"synthetic noise frames, {len(games)} games x {rows_per_game} rows"
        else:
            source = str(path)
        meta = read_metadata(path)
        export = export_parquet(path, tmp / "parquet", rows_per_shard=rows_per_shard, verify=False)
        t0 = time.perf_counter()
        verify_parquet(tmp / "parquet")
        verify_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        import_parquet(tmp / "parquet", tmp / "back", verify=False)
        import_s = time.perf_counter() - t0
        shutil.rmtree(tmp / "back")
        names = list(meta.games)
        bs = max(len(names), batch_size - batch_size % len(names))
        sampler = StreamingSampler.from_parquet(tmp / "parquet", names, bs, buffer_size=min(50_000, max(1_000, meta.num_rows // (2 * len(names)))), seed=0)
        it = iter(sampler)
        next(it)  # first fill of every game's buffer
        t0 = time.perf_counter()
        drawn = 0
        for _ in range(stream_batches):
            drawn += len(next(it))
        stream_s = time.perf_counter() - t0
        return {
            "benchmark": "parquet",
            "dataset": source,
            "rows": meta.num_rows,
            "games": names,
            "arrow_bytes": export["arrow_bytes"],
            "parquet_bytes": export["parquet_bytes"],
            "compression_ratio": export["compression_ratio"],
            "shards": export["shards"],
            "export_rows_per_s": export["rows_per_s"],
            "export_MB_per_s": round(export["arrow_bytes"] / export["seconds"] / 1e6, 1),
            "verify_MB_per_s": round(export["parquet_bytes"] / verify_s / 1e6, 1),
            "import_rows_per_s": round(meta.num_rows / import_s, 1),
            "stream_transitions_per_s": round(drawn / stream_s, 1),
            "stream_batch_size": bs,
            "cpu_count": os.cpu_count(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

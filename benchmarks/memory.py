"""Memory and throughput of the memory-mapped sampler, cold then warm page cache (``python -m
benchmarks memory``; not part of the tests)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scaled_ql.data.schema import read_metadata
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore



def process_memory() -> dict[str, int]:
    """This process's resident memory in bytes: ``rss``, ``anon`` (heap: what the process owns),
    ``file`` (resident pages of mapped files: page cache, reclaimable) and ``peak`` (the
    kernel's high-water mark of ``rss`` over the process's life)."""
    fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "peak"}
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in fields:
                    out[fields[key]] = int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        import psutil  # optional: only where /proc is missing

        m = psutil.Process().memory_info()
        out = {"rss": m.rss, "anon": m.rss, "file": 0, "peak": m.rss}
    return out


def drop_page_cache(files: Sequence[str | Path]) -> None:
    """Ask the kernel to drop ``files`` from the page cache (``POSIX_FADV_DONTNEED``; no root needed).
    Dirty pages are written first (only clean pages can be dropped); pages mapped by a running
    process stay."""
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class _PeakAnon:
    """Polls this process's anonymous RSS every few milliseconds while the ``with`` block runs."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak = interval, process_memory().get("anon", 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, process_memory().get("anon", 0))

    def __enter__(self) -> "_PeakAnon":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, process_memory().get("anon", 0))


def _per_row_nbytes(obj, rows: int) -> int:
    """Bytes of ``obj``'s numpy arrays that grow with the rows (about ``rows`` long; the
    sampler's transition starts exclude each episode's last row)."""
    arrays = [v for v in vars(obj).values() if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] >= rows // 2 and v.base is None]
    return sum(int(a.nbytes) for a in arrays)


def measure_sampling_rss(
    path: str | Path,
    *,
    games: Sequence[str] | None = None,
    batch_size: int = 256,
    n_step: int = 3,
    cold_seconds: float = 30.0,
    warm_seconds: float = 20.0,
    interval: float = 2.0,
    prefetch: bool = True,
) -> dict[str, Any]:
    """Memory and throughput of ``Sampler`` on a memory-mapped dataset, cold then warm cache.

    1. Drops the dataset's Arrow files from the page cache, opens the store (sha256 not
       checked) and samples for ``cold_seconds`` (throughput per ``interval`` window: the
       cache fills as it goes).
    2. If ``prefetch``, reads every file once, sequentially (timed: the disk's read rate), so
       the whole dataset sits in the page cache (if RAM allows), then samples for
       ``warm_seconds``.
    Memory is read from ``/proc/self/status`` every window: ``anon`` is what the store and
    sampler own (the small per-row columns), ``file`` the mapped frame pages that are resident
    (page cache shared with the kernel, dropped under memory pressure). Run it in a fresh
    process: heap freed earlier (e.g. by writing the dataset) is reused and hides the store's
    growth. ``array_bytes_per_row_*`` count the store's and sampler's per-row arrays exactly.
    """
    path = Path(path)
    meta = read_metadata(path)
    files = [path / e["name"] for e in meta.files]
    games = list(meta.games) if games is None else list(games)
    bs = max(len(games), batch_size - batch_size % len(games))
    drop_page_cache(files)
    before = process_memory()
    t0 = time.perf_counter()
    with _PeakAnon() as open_peak:
        store = ReplayStore(path, games, verify_checksums=False)
    open_s = time.perf_counter() - t0
    after_open = process_memory()
    with _PeakAnon() as sampler_peak:
        sampler = Sampler(store, bs, n_step=n_step, seed=0)
    after_sampler = process_memory()
    timeline: list[dict[str, Any]] = []
    start = time.perf_counter()

    def run(phase: str, seconds: float) -> dict[str, Any]:
        phase_start = time.perf_counter()
        drawn = window_drawn = 0
        window_start = phase_start
        windows = []
        while True:
            now = time.perf_counter()
            if now - window_start >= interval or now - phase_start >= seconds:
                rate = window_drawn / max(now - window_start, 1e-9)
                windows.append(round(rate, 1))
                timeline.append({"t": round(now - start, 2), "phase": phase, "transitions_per_s": round(rate, 1),
                                 **{k: v for k, v in process_memory().items() if k in ("rss", "anon", "file")}})
                window_start, window_drawn = now, 0
                if now - phase_start >= seconds:
                    break
            sampler.sample()
            drawn += bs
            window_drawn += bs
        elapsed = time.perf_counter() - phase_start
        return {"transitions_per_s": round(drawn / elapsed, 1), "windows_transitions_per_s": windows, "seconds": round(elapsed, 2)}

    cold = run("cold", cold_seconds)
    report: dict[str, Any] = {
        "benchmark": "sampling_rss",
        "dataset": str(path),
        "rows": len(store),
        "games": games,
        "arrow_bytes": sum(int(e["bytes"]) for e in meta.files),
        "arrow_files": len(files),
        "batch_size": bs,
        "n_step": n_step,
        "open_seconds": round(open_s, 2),
        "array_bytes_per_row_store": round(_per_row_nbytes(store, len(store)) / max(len(store), 1), 2),
        "array_bytes_per_row_sampler": round(_per_row_nbytes(sampler, len(store)) / max(len(store), 1), 2),
        "anon_bytes_store": after_open["anon"] - before["anon"],
        "anon_bytes_per_row_store": round((after_open["anon"] - before["anon"]) / max(len(store), 1), 1),
        "anon_bytes_per_row_store_and_sampler": round((after_sampler["anon"] - before["anon"]) / max(len(store), 1), 1),
        "peak_anon_bytes_per_row_open": round((max(open_peak.peak, sampler_peak.peak) - before["anon"]) / max(len(store), 1), 1),
        "cold": cold,
    }
    if prefetch:
        t0 = time.perf_counter()
        for file in files:
            with open(file, "rb") as f:
                while f.read(1 << 24):
                    pass
        read_s = time.perf_counter() - t0
        report["sequential_read_MB_per_s"] = round(report["arrow_bytes"] / read_s / 1e6, 1)
        report["warm"] = run("warm", warm_seconds)
    report["final_memory"] = process_memory()
    report["timeline"] = timeline
    return report

"""Where the training loop's time goes: wall time per phase (sample, host-to-device, forward,
backward, optimizer, logging, checkpoint, evaluation, ...).

The loop always times its phases with :class:`PhaseClock` (a ``perf_counter`` read per phase,
well under a microsecond) and logs them as ``perf/<phase>_ms`` per update. On CPU that is exact:
every kernel finishes before the call returns. On a GPU kernels run asynchronously, so a phase's
time lands in whichever later phase waits for it; ``PhaseClock(sync=True)`` (what
``scaled-ql bench loop`` uses) synchronizes the device at every phase boundary to attribute it
exactly, at the cost of the overlap it removes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch

PHASES = ("act", "sample", "to_device", "forward", "backward", "optimizer", "target_sync", "log", "checkpoint", "evaluate")
"""The loop's phases, in the order they happen; ``other`` is the wall time none of them covers."""


class PhaseClock:
    """Wall time per phase: in a window that the loop's logging takes (:meth:`take`), and summed
    over every update after the first ``skip`` (the warm-up) for :meth:`report`."""

    def __init__(self, device: torch.device | str = "cpu", *, sync: bool = False, skip: int = 0) -> None:
        self.sync = sync and torch.device(device).type == "cuda"
        self.skip = skip
        self.totals: dict[str, float] = defaultdict(float)
        self.window: dict[str, float] = defaultdict(float)
        self.updates = 0
        """Updates whose time :meth:`report` counts (those after the warm-up)."""
        self.wall = 0.0
        """Wall time of the counted updates: from the end of the warm-up to the last :meth:`update_done`."""
        self._seen = 0
        self._t0: float | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            spent = time.perf_counter() - t0
            self.window[name] += spent
            if self._seen >= self.skip:
                self.totals[name] += spent

    def start(self) -> None:
        """The loop starts; without a warm-up the wall time counts from here."""
        if self.skip == 0:
            self._t0 = time.perf_counter()

    def update_done(self) -> None:
        """One update and the periodic work after it are over."""
        now = time.perf_counter()
        self._seen += 1
        if self._seen == self.skip:
            self._t0 = now
        elif self._seen > self.skip and self._t0 is not None:
            self.updates += 1
            self.wall = now - self._t0

    def take(self) -> dict[str, float]:
        """Seconds per phase since the last :meth:`take`, and start a new window."""
        out = dict(self.window)
        self.window.clear()
        return out

    def report(self) -> dict[str, object]:
        """Milliseconds per update for each phase, its share of the wall time, and ``other`` (the
        wall time no phase covers)."""
        n = max(self.updates, 1)
        per = {name: self.totals[name] for name in (*PHASES, *sorted(set(self.totals) - set(PHASES))) if name in self.totals}
        per["other"] = max(self.wall - sum(per.values()), 0.0)
        return {"updates": self.updates, "wall_s": round(self.wall, 3),
                "updates_per_s": round(self.updates / self.wall, 2) if self.wall > 0 else None,
                "ms_per_update": {k: round(1000 * v / n, 3) for k, v in per.items()},
                "share": {k: round(v / self.wall, 4) if self.wall > 0 else None for k, v in per.items()},
                "device_synchronized": self.sync}

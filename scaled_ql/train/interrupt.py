"""Stopping a training run cleanly on SIGTERM, SIGINT or SIGUSR1 (SLURM's warning signal).

While :func:`stop_on_signals` is active and the loop is running (between :func:`enter_loop`
and :func:`leave_loop`), those signals only set a flag; the training loop asks
:func:`stop_requested` after each update, writes a checkpoint and raises
:class:`TrainingInterrupted`, which the CLI turns into one line and the exit code
:data:`EXIT_INTERRUPTED`. Under several processes the flag is agreed on (any rank's signal
stops every rank at the same update), so all of them write the same checkpoint. Outside the
loop (loading before it, the final evaluation after its last checkpoint), and on a second
SIGINT, :class:`StopNow` is raised at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

EXIT_INTERRUPTED = 75
"""Exit status of a run stopped by a signal after writing its checkpoint (sysexits' EX_TEMPFAIL:
try again): ``launch/slurm.sbatch`` requeues the job on it."""

SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)) if s is not None)

_received: list[int] = []
_in_loop: list[bool] = [False]


class StopNow(KeyboardInterrupt):
    """A signal outside the update loop (loading, the final evaluation) or a second SIGINT: stop
    at once; no checkpoint is written at that point (the newest one, if any, is whole)."""

    def __init__(self, signal_name: str) -> None:
        self.signal_name = signal_name
        super().__init__(f"stopped by {signal_name} outside the update loop (or a second Ctrl-C): no checkpoint "
                         "was written at this point; the newest one, if any, is whole")


class TrainingInterrupted(Exception):
    """The run stopped on a signal after writing checkpoint ``checkpoint`` at step ``step``."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path) -> None:
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        super().__init__(f"stopped by {signal_name} at step {step}; checkpoint written to '{checkpoint}'; "
                         "continue with the same command and --resume")


def _handler(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if not _in_loop[0] or (signum == signal.SIGINT and _received):
        raise StopNow(name)
    if not _received:
        print(f"scaled-ql: {name}: finishing the current update, then writing a checkpoint and stopping"
              + (" (Ctrl-C again stops at once)" if signum == signal.SIGINT else ""), file=sys.stderr, flush=True)
    _received.append(signum)


def enter_loop() -> None:
    """From here a signal stops the run after the current update (see the module docstring)."""
    _in_loop[0] = True


def leave_loop() -> None:
    """After the loop (the final checkpoint written) a signal stops at once."""
    _in_loop[0] = False


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Catch :data:`SIGNALS` for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    _in_loop[0] = False
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        _received.clear()
        _in_loop[0] = False


def stop_requested(dist: Any = None, sync: bool = True) -> str | None:
    """The name of the signal that asked the run to stop, or None. With several processes (``dist``,
    a ``scaled_ql.train.parallel.Distribution``) the answer is agreed on (one collective), so only
    ask at ``sync`` points every rank reaches."""
    local = signal.Signals(_received[0]).name if _received else None
    if dist is None or dist.world_size == 1:
        return local
    if not sync:
        return None
    code = torch.tensor([_received[0] if _received else 0], device=dist.device)
    agreed = int(dist.gather(code).max().item())
    return signal.Signals(agreed).name if agreed else None

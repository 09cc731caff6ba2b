"""Stopping a training run cleanly on SIGTERM, SIGINT or SIGUSR1 (SLURM's warning signal).

While :func:`stop_on_signals` is active, those signals only set a flag; the training loop asks
:func:`stop_requested` after each update, writes a checkpoint and raises
:class:`TrainingInterrupted`, which the CLI turns into one line and the exit code
:data:`EXIT_INTERRUPTED`. Under several processes the flag is agreed on (any rank's signal
stops every rank at the same update), so all of them write the same checkpoint. A second
SIGINT while stopping raises ``KeyboardInterrupt`` at once (the user insists).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXIT_INTERRUPTED = 75
"""Exit status of a run stopped by a signal after writing its checkpoint (sysexits' EX_TEMPFAIL:
try again): ``launch/slurm.sbatch`` requeues the job on it."""

SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)) if s is not None)

_received: list[int] = []


class TrainingInterrupted(Exception):
    """The run stopped on a signal after writing checkpoint ``checkpoint`` at step ``step``."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path) -> None:
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        super().__init__(f"stopped by {signal_name} at step {step}; checkpoint written to '{checkpoint}'; "
                         "continue with the same command and --resume")


def _handler(signum: int, frame: Any) -> None:
    if signum == signal.SIGINT and _received:
        raise KeyboardInterrupt
    _received.append(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Catch :data:`SIGNALS` for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        _received.clear()


def stop_requested(accelerator: Any = None, sync: bool = True) -> str | None:
    """The name of the signal that asked the run to stop, or None. With several processes the
    answer is agreed on (one collective), so only ask at ``sync`` points every rank reaches."""
    local = signal.Signals(_received[0]).name if _received else None
    if accelerator is None or accelerator.num_processes == 1:
        return local
    if not sync:
        return None
    import torch

    code = torch.tensor([_received[0] if _received else 0], device=accelerator.device)
    agreed = int(accelerator.gather(code).max().item())
    return signal.Signals(agreed).name if agreed else None

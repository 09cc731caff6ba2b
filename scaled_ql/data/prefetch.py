"""Batches drawn ahead of the update on a background thread, in the order the loop would draw them.

Only the prefetch thread calls ``draw``, one batch after another, so the sequence of batches is
exactly the sequence the loop would have drawn itself; the loop gets them in that order. Beside
each batch the thread records the sampler's state right after drawing it, so
:meth:`Prefetcher.state_dict` is the state after the last batch the loop *took* (not the last one
drawn ahead): a checkpoint resumes with the next batch the loop had not used, as without
prefetching.

On CUDA the frames stay uint8 until they reach the device: the thread copies each batch into
pinned host memory and issues the host-to-device copy on its own stream, so the copy of batch
k+1 overlaps the update on batch k; the loop's stream waits for that copy's event before using
the batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np
import torch

from scaled_ql.data.batch import Batch, TorchBatch, game_groups


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher:
    """Draw ``depth`` batches ahead with ``draw`` and move them to ``device``.

    ``state`` returns the source's resumable state (``Sampler.state_dict``); it is read on the
    prefetch thread right after each draw. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, draw: Callable[[], Batch], state: Callable[[], dict[str, Any]], device: torch.device | str,
                 depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"Prefetcher: depth must be at least 1, got {depth}")
        self.device = torch.device(device)
        self._draw, self._state = draw, state
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._taken_state = state()  # before the first batch: the source's state now
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._thread = threading.Thread(target=self._run, name="scaled_ql-prefetch", daemon=True)
        self._thread.start()

    def _to_device(self, batch: Batch) -> tuple[TorchBatch, Any]:
        if self._stream is None:
            return batch.to_torch(self.device), None
        with torch.cuda.stream(self._stream):
            tensors = {}
            for f in fields(batch):
                value = getattr(batch, f.name)
                if value is not None:
                    host = torch.from_numpy(np.ascontiguousarray(value)).pin_memory()
                    tensors[f.name] = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._stream)
        return TorchBatch(**tensors, groups=game_groups(batch.game)), event

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._draw()
                item = (*self._to_device(batch), self._state())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as error:  # handed to the loop, which raises it where it takes a batch
            self._queue.put(_Failed(error))

    def next(self) -> TorchBatch:
        """The next batch, on the device, ready to use on the current stream."""
        item = self._queue.get()
        if isinstance(item, _Failed):
            raise item.error
        batch, event, state = item
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for value in batch.tensors().values():
                value.record_stream(current)  # the copy stream's memory is in use by this stream now
        self._taken_state = state
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The source's state after the last batch :meth:`next` returned."""
        return self._taken_state

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
            self._thread.join(timeout=0.1)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

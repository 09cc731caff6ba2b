"""What every converter of published data shares (DQN Replay, RL Unplugged, Hub datasets): the
conversion report written beside the dataset, whole episodes gathered into chunks, action
checks against the game's action set, and writing the converted rows as a dataset."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scaled_ql.data.schema import FRAME_SHAPE, CollectionInfo, DatasetFormatError, DatasetMetadata
from scaled_ql.data.writer import check_output_folder, write_dataset
from scaled_ql.games import get_game


REPORT_FILE = "conversion_report.json"
"""Written into the dataset folder by the converters: per-input counts and what was skipped."""


class SkippedInputWarning(UserWarning):
    """Some inputs were bad and were skipped (``skip_bad=True``); the message lists them."""


@dataclass
class ConversionReport:
    """What a conversion read, kept and skipped; saved as ``conversion_report.json``."""

    source: str
    settings: dict[str, Any] = field(default_factory=dict)
    """The conversion's arguments (selection, fractions, seed)."""
    inputs: list[dict[str, Any]] = field(default_factory=list)
    """One entry per converted input (checkpoint or shard) with its counts."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """``{"file": ..., "problem": ...}`` for every input skipped as bad."""

    def skip(self, err: Exception, file: str | Path) -> None:
        self.skipped.append({"file": str(file), "problem": str(err)})

    def summary(self) -> str:
        lines = [f"{len(self.skipped)} bad input(s) skipped:"]
        lines += [f"  {s['file']}: {s['problem']}" for s in self.skipped]
        return "\n".join(lines)

    def write(self, folder: Path) -> None:
        (Path(folder) / REPORT_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    def warn_skipped(self) -> None:
        if self.skipped:
            warnings.warn(self.summary(), SkippedInputWarning, stacklevel=3)


def read_conversion_report(folder: str | Path) -> dict[str, Any]:
    """The ``conversion_report.json`` a converter wrote into the dataset folder ``folder``."""
    return json.loads((Path(folder) / REPORT_FILE).read_text())


class EpisodeChunker:
    """Collects whole episodes (dicts of columns) into chunks of about ``chunk_rows`` rows."""

    def __init__(self, chunk_rows: int) -> None:
        self.chunk_rows = chunk_rows
        self.next_episode_id = 0
        self._pending: list[dict[str, np.ndarray]] = []
        self._rows = 0

    def add(self, game: str, frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminal: bool,
            context: int = 0) -> dict[str, np.ndarray] | None:
        """Add an episode of ``T = len(actions) - context`` steps: ``frames`` [context + T + 1, H, W],
        the last one the final observation, the first ``context`` context rows (an episode joined in
        progress: steps -context .. -1, never transition starts; see ``scaled_ql.data.schema``);
        returns a full chunk when one is ready."""
        rows = len(frames)
        assert rows == len(actions) + 1 == len(rewards) + 1 and rows >= context + 2
        last = np.arange(rows) == rows - 1
        self._pending.append(
            {
                "frame": frames,
                "action": np.append(actions.astype(np.int32, copy=False), np.int32(0)),
                "reward": np.append(rewards.astype(np.float32, copy=False), np.float32(0)),
                "terminal": last & terminal,
                "truncated": last & (not terminal),
                "episode_id": np.full(rows, self.next_episode_id, dtype=np.int64),
                "step": np.arange(-context, rows - context, dtype=np.int32),
                "game": np.full(rows, game, dtype=object),
            }
        )
        self.next_episode_id += 1
        self._rows += rows
        return self.flush() if self._rows >= self.chunk_rows else None

    def flush(self) -> dict[str, np.ndarray] | None:
        if not self._pending:
            return None
        if len(self._pending) == 1:
            chunk = self._pending[0]
        else:
            chunk = {key: np.concatenate([e[key] for e in self._pending]) for key in self._pending[0]}
        self._pending, self._rows = [], 0
        return chunk


def check_fraction(name: str, value: float | None) -> None:
    if value is not None and not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], found {value}")


def round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def check_output(out_dir: str | Path, overwrite: bool) -> None:
    """Fail before any work when ``write_dataset`` would refuse ``out_dir``."""
    check_output_folder(out_dir, overwrite)


def write_converted(out_dir, chunks, collection: CollectionInfo, report: "ConversionReport", bar, *,
                    overwrite: bool, max_shard_size) -> DatasetMetadata:
    """The end every converter shares: write the chunks as a dataset, then its conversion report
    (and a warning listing what ``skip_bad`` skipped)."""
    try:
        meta = write_dataset(out_dir, chunks, collection=collection, frame_shape=FRAME_SHAPE, overwrite=overwrite, max_shard_size=max_shard_size)
    finally:
        bar.close()
    report.write(meta.path)
    report.warn_skipped()
    return meta


def actions_in_range(actions: np.ndarray, num_actions: int | None) -> np.ndarray:
    """bool mask: ``0 <= a < num_actions`` (only ``a >= 0`` when ``num_actions`` is None)."""
    return (actions >= 0) & (actions < (num_actions if num_actions else np.iinfo(np.int32).max))


def check_actions(actions: np.ndarray, num_actions: int | None, where: str) -> None:
    """Actions index the game's minimal action set: ``0 <= a < num_actions``."""
    bad = np.flatnonzero(~actions_in_range(actions, num_actions))
    if bad.size:
        raise DatasetFormatError(f"{where}: step {bad[0]} has action {actions[bad[0]]}, outside the game's {num_actions} actions")


def game_num_actions(game: str) -> int | None:
    """Size of the game's minimal action set (ale_py's ROM), or None when it cannot be read."""
    try:
        return get_game(game).num_actions
    except Exception:  # no ROM in this ale_py: the action range is not checked
        return None

"""Reading Dopamine's ``replay_logs`` (the DQN Replay dataset's files) without unpickling: the
gzipped ``.npy`` arrays of a checkpoint, its observation file read in blocks, finding a game's
runs and checkpoints, and checking one checkpoint's arrays (see :mod:`data_prep.dqn_replay` for
the format and the conversion)."""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_prep.conversion import actions_in_range, round_half_up
from scaled_ql.data.schema import FRAME_SHAPE, DatasetFormatError, canonical_game_name

STACK_SIZE = 4
"""Dopamine's Atari stack size K: K - 1 padding slots start each episode."""


PADDING = STACK_SIZE - 1


CHECKPOINT_FILES = ("$store$_observation", "$store$_action", "$store$_reward", "$store$_terminal", "add_count", "invalid_range")
"""Attribute names of the six files every checkpoint must have (file ``<name>_ckpt.<N>.gz``)."""


_EXPECTED_DTYPES = {"$store$_action": np.dtype(np.int32), "$store$_reward": np.dtype(np.float32), "$store$_terminal": np.dtype(np.uint8)}


_CKPT_NAME = re.compile(r"^(?P<name>.+)_ckpt\.(?P<suffix>\d+)\.gz$")


_READ_BLOCK = 16 << 20


def _gzip_error(path: Path, err: Exception) -> DatasetFormatError:
    if isinstance(err, EOFError):
        problem = "truncated gzip file (the stream ends before its end marker)"
    else:
        problem = f"corrupt gzip file ({type(err).__name__}: {err})"
    return DatasetFormatError(f"'{path}': {problem}")


def load_npy_gz(path: Path) -> np.ndarray:
    """A gzip'd ``np.save`` array, read to the end (so gzip checks its CRC), never unpickled."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError, zlib.error) as err:
        raise _gzip_error(path, err) from None
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower() or "object" in str(err).lower():
            raise DatasetFormatError(f"'{path}': holds a pickled or object array, which is never loaded (expected a plain .npy array): {err}") from None
        raise DatasetFormatError(f"'{path}': not a readable .npy array: {err}") from None
    except (EOFError, OSError) as err:
        raise DatasetFormatError(f"'{path}': not a readable .npy array (truncated?): {err}") from None


class FrameFile:
    """The observation file of a checkpoint, streamed: frames of a slot range without loading all."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = gzip.open(path, "rb")
            version = np.lib.format.read_magic(self._file)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version} (np.save writes 1.0, or 2.0 for huge headers)")
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = header(self._file)
        except (EOFError, OSError, zlib.error) as err:
            raise _gzip_error(path, err) from None
        except ValueError as err:
            raise DatasetFormatError(f"'{path}': not a .npy array: {err}") from None
        if dtype.hasobject:
            raise DatasetFormatError(f"'{path}': holds a pickled object array, which is never loaded (expected uint8 [capacity, 84, 84])")
        if dtype != np.uint8 or len(shape) != 3 or tuple(shape[1:]) != FRAME_SHAPE or fortran_order:
            raise DatasetFormatError(f"'{path}': expected observations uint8 [capacity, 84, 84] (C order), found {dtype} {list(shape)}{' in Fortran order' if fortran_order else ''}")
        self.shape: tuple[int, int, int] = shape
        self.frame_bytes = int(shape[1]) * int(shape[2])
        self._data_start = self._file.tell()
        self._verified = False

    def __len__(self) -> int:
        return int(self.shape[0])

    def _skip_to(self, offset: int) -> None:
        if offset < self._file.tell():
            self._file.rewind()
        remaining = offset - self._file.tell()
        while remaining > 0:
            got = len(self._file.read(min(remaining, _READ_BLOCK)))
            if got == 0:
                raise EOFError("the file ends early")
            remaining -= got

    def read_into(self, start: int, out: np.ndarray) -> None:
        """Fill ``out`` (uint8 [n, H, W], contiguous) with the frames of slots ``[start, start + n)``."""
        stop = start + len(out)
        view = memoryview(out).cast("B")
        try:
            self._skip_to(self._data_start + start * self.frame_bytes)
            filled = 0
            while filled < len(view):
                got = self._file.readinto(view[filled:])
                if not got:
                    raise EOFError("the file ends early")
                filled += got
            if stop == len(self):
                self._check_end()
        except (EOFError, OSError, zlib.error) as err:
            raise _gzip_error(self.path, err) from None

    def _check_end(self) -> None:
        """At the end of the array: nothing may follow, and gzip checks its CRC and length."""
        if self._verified:
            return
        if self._file.read(1):
            raise DatasetFormatError(f"'{self.path}': bytes follow the {list(self.shape)} array")
        self._verified = True

    def verify(self) -> None:
        """Decompress to the end (gzip CRC and length checks) unless already done."""
        if not self._verified:
            try:
                self._skip_to(self._data_start + len(self) * self.frame_bytes)
                self._check_end()
            except (EOFError, OSError, zlib.error) as err:
                raise _gzip_error(self.path, err) from None

    def close(self) -> None:
        self._file.close()


def find_game_dir(root: Path, game: str) -> tuple[str, Path]:
    """(registry name, folder) of ``game`` under ``root``: the name as given, as in the
    registry, or any folder whose name the registry maps to the same game."""
    name = canonical_game_name(game, f"DQN Replay root '{root}'")
    for candidate in (game, name):
        if (root / candidate).is_dir():
            return name, root / candidate
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder.is_dir():
                try:
                    if canonical_game_name(folder.name, "") == name:
                        return name, folder
                except DatasetFormatError:
                    continue
    raise DatasetFormatError(f"DQN Replay root '{root}' has no folder for game '{name}' (expected '{root / name}')")


def list_checkpoints(logs: Path) -> dict[int, dict[str, Path]]:
    """Checkpoint suffix -> {attribute name -> file} of a ``replay_logs`` folder.

    Only the six files of :data:`CHECKPOINT_FILES` are listed; ``episode_end_indices`` (a
    pickle) and anything else are ignored and never opened.
    """
    found: dict[int, dict[str, Path]] = {}
    for file in logs.iterdir():
        match = _CKPT_NAME.match(file.name)
        if match and match["name"] in CHECKPOINT_FILES:
            found.setdefault(int(match["suffix"]), {})[match["name"]] = file
    return dict(sorted(found.items()))


def checkpoint_file(logs: Path, name: str, suffix: int) -> Path:
    return logs / f"{name}_ckpt.{suffix}.gz"


def select_checkpoints(suffixes: Sequence[int], checkpoints: Sequence[int] | None, first_fraction: float | None) -> list[int]:
    """The suffixes to convert of one run (see the module docstring)."""
    if checkpoints is not None:
        return sorted({int(c) for c in checkpoints})
    suffixes = sorted(suffixes)
    if first_fraction is not None:
        return suffixes[: max(1, round_half_up(first_fraction * len(suffixes)))]
    return suffixes


def check_checkpoint(files: dict[str, Path], game: str, num_actions: int | None) -> tuple[dict[str, np.ndarray], int, FrameFile]:
    """Load and check the small arrays of a checkpoint and open its frame file.

    Returns ``(arrays, add_count, frames)``; every problem names its file.
    """
    arrays = {}
    for name in CHECKPOINT_FILES[1:]:
        arrays[name] = load_npy_gz(files[name])
    frames = FrameFile(files["$store$_observation"])
    try:
        capacity = len(frames)
        for name, dtype in _EXPECTED_DTYPES.items():
            a = arrays[name]
            if a.dtype != dtype or a.ndim != 1:
                raise DatasetFormatError(f"'{files[name]}': expected {dtype} [capacity], found {a.dtype} {list(a.shape)}")
            if a.shape[0] != capacity:
                raise DatasetFormatError(f"'{files[name]}': has {a.shape[0]} slots but '{files['$store$_observation'].name}' has {capacity}: the arrays of a checkpoint must have equal lengths")
        add_count_arr = arrays["add_count"]
        if add_count_arr.ndim != 0 or add_count_arr.dtype.kind not in "iu" or int(add_count_arr) < 0:
            raise DatasetFormatError(f"'{files['add_count']}': expected a 0-d non-negative int64 array, found {add_count_arr.dtype} {list(add_count_arr.shape)} {add_count_arr!r}")
        add_count = int(add_count_arr)
        if add_count > 0 and capacity > 0:
            cursor = add_count % capacity
            ir = arrays["invalid_range"]
            if ir.ndim != 1 or ir.dtype.kind not in "iu" or ir.size < STACK_SIZE + 1:
                raise DatasetFormatError(f"'{files['invalid_range']}': expected int64 [K + H] (5 for Atari DQN) around the cursor, found {ir.dtype} {list(ir.shape)}")
            horizon = ir.size - STACK_SIZE
            expected = (np.arange(ir.size) + cursor - horizon) % capacity
            if not np.array_equal(ir, expected):
                raise DatasetFormatError(
                    f"'{files['invalid_range']}': {ir.tolist()} does not surround the cursor {cursor} that add_count {add_count} gives "
                    f"(capacity {capacity}); expected {expected.tolist()}"
                )
            fresh = np.arange(add_count) if add_count < capacity else np.arange(capacity)
            terminal = arrays["$store$_terminal"][fresh]
            bad = np.flatnonzero(terminal > 1)
            if bad.size:
                raise DatasetFormatError(f"'{files['$store$_terminal']}': slot {fresh[bad[0]]} has terminal {terminal[bad[0]]}, expected 0 or 1")
            reward = arrays["$store$_reward"][fresh]
            bad = np.flatnonzero(~np.isfinite(reward))
            if bad.size:
                raise DatasetFormatError(f"'{files['$store$_reward']}': slot {fresh[bad[0]]} has reward {reward[bad[0]]} (rewards must be finite)")
            action = arrays["$store$_action"][fresh]
            bad = np.flatnonzero(~actions_in_range(action, num_actions))
            if bad.size:
                raise DatasetFormatError(f"'{files['$store$_action']}': slot {fresh[bad[0]]} has action {action[bad[0]]}, outside {game}'s {num_actions} actions")
    except BaseException:
        frames.close()
        raise
    return arrays, add_count, frames

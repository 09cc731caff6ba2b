"""The on-disk offline dataset: one folder, Hugging Face ``datasets`` Arrow files, one row per step.

This module is its schema (columns, row convention, metadata and checksums, reading one Arrow
file and checking its episodes and values); :mod:`scaled_ql.data.writer` writes such a folder
and :mod:`scaled_ql.data.card` its dataset card.

A dataset folder is what ``Dataset.save_to_disk`` writes (``data-XXXXX-of-YYYYY.arrow``,
``dataset_info.json``, ``state.json``), so ``datasets.load_from_disk(folder)`` opens it, plus
two files of ours:

* ``scaled_ql_dataset.json``: format name and version, frame shape, row/episode counts per
  game, and the sha256 of every Arrow file (checked when the store opens the folder);
* ``README.md``: a dataset card the Hub understands (task category, tags, how the data was made).

Columns (one row per step; frames are single, never pre-stacked: stacking is the sampler's job):

=============  =========================  ================================================
``frame``      uint8 [H, W] (84 x 84)     observation before the action (fixed-size lists,
                                          so all frames of a record batch are one
                                          contiguous ``[n, H, W]`` buffer)
``action``     int32                      action index in the game's action set
``reward``     float32                    raw reward r_t, NOT clipped
``terminal``   bool                       this row is the episode's last and the game is over
``truncated``  bool                       this row is the episode's last and the episode
                                          was cut (time limit or collection budget)
``episode_id`` int64                      unique across the whole dataset
``step``       int32                      index of the row within its episode (negative:
                                          a context row, see below)
``game``       string                     registry name (``scaled_ql.games``), e.g. "Pong"
=============  =========================  ================================================

Row convention (RLDS-like). An episode of T agent steps is T + 1 contiguous rows, in order.
Row t (0 <= t < T) holds the observation o_t seen before acting, the action a_t and the reward
r_t received for it. Row T holds the final observation o_T (gymnasium's ``info["final_obs"]``)
with action 0, reward 0 and exactly one of ``terminal`` (game over: do not bootstrap) or
``truncated`` (time limit or end of the collection budget: bootstrap from o_T). No other row
has either flag set. Every row except an episode's last is a valid transition start.

Context rows (an episode joined in progress, e.g. the oldest episode of a DQN-Replay checkpoint,
whose start was overwritten). Its first rows may carry negative steps -c .. -1: real earlier
frames kept only so that the frame stacks of the rows after them are made of real frames, not
zero padding. A context row is never a transition start and counts in no transition total; the
episode's step 0 row follows them, and it has at least one transition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from scaled_ql.games import NUM_ACTIONS_FULL, get_game

FORMAT_NAME = "scaled_ql_dataset"
FORMAT_VERSION = 1
METADATA_FILE = "scaled_ql_dataset.json"
CARD_FILE = "README.md"
FRAME_SHAPE = (84, 84)
COLUMNS = ("frame", "action", "reward", "terminal", "truncated", "episode_id", "step", "game")
_SCALAR_TYPES = {
    "action": "int32",
    "reward": "float32",
    "terminal": "bool",
    "truncated": "bool",
    "episode_id": "int64",
    "step": "int32",
    "game": "string",
}


class DatasetFormatError(ValueError):
    """A dataset folder or file is missing, corrupt or not in the expected format; names the file."""


def dataset_features(frame_shape: Sequence[int] = FRAME_SHAPE):
    """The ``datasets.Features`` of a dataset whose frames have ``frame_shape`` (H, W)."""
    from datasets import Features, List, Value  # heavy (about a second to import): loaded when first needed

    height, width = (int(x) for x in frame_shape)
    features = {"frame": List(List(Value("uint8"), length=width), length=height)}
    features.update({name: Value(dtype) for name, dtype in _SCALAR_TYPES.items()})
    return Features(features)


def _frame_arrow_type(frame_shape: Sequence[int]) -> pa.DataType:
    height, width = (int(x) for x in frame_shape)
    return pa.list_(pa.list_(pa.uint8(), width), height)


# ----------------------------------------------------------------------------------------------
# Metadata


@dataclass(slots=True)
class CollectionInfo:
    """How a dataset was made; rendered into the dataset card and the metadata file."""

    source: str = "ALE rollouts"
    policy: str = "random"
    """Behaviour policy: ``random`` or ``epsilon_greedy`` (around ``checkpoint``)."""
    epsilon: float = 1.0
    """Probability of a uniformly random action (1.0 for the random policy)."""
    checkpoint: str = ""
    seed: int = 0
    steps_per_game: int = 0
    num_envs: int = 0
    max_episode_steps: int = 0
    """Extra truncation in agent steps (0: only the protocol's frame cap)."""
    env: dict[str, Any] = field(default_factory=dict)
    """The Atari protocol (``EnvConfig`` as a dict)."""
    command: str = ""
    """The command that made the dataset."""
    good_fraction: float | None = None
    """``mixed`` policy: the share of environments played by the scripted controller."""
    parts: dict[str, Any] = field(default_factory=dict)
    """``mixed`` policy: per game, per controller (``scripted``, ``poor``): its environments and
    the raw returns of its episodes (``episodes``, ``return_mean``, ``return_std``, ...)."""


@dataclass(slots=True)
class DatasetMetadata:
    """Contents of ``scaled_ql_dataset.json`` (see :func:`read_metadata`)."""

    path: Path
    format_version: int
    frame_shape: tuple[int, int]
    games: dict[str, dict[str, Any]]
    """Per game: ``rows``, ``episodes`` and ``steps`` (= rows - episodes, the agent steps), and
    the behaviour policy's raw episode returns ``return_mean``, ``return_std``, ``return_min``,
    ``return_max`` (absent in datasets written before they were recorded)."""
    files: list[dict[str, Any]]
    """Arrow files in row order: ``name``, ``rows``, ``bytes``, ``sha256``."""
    collection: dict[str, Any] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return sum(int(g["rows"]) for g in self.games.values())

    @property
    def num_episodes(self) -> int:
        return sum(int(g["episodes"]) for g in self.games.values())

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "frame_shape": list(self.frame_shape),
            "rows": self.num_rows,
            "episodes": self.num_episodes,
            "games": self.games,
            "files": self.files,
            "collection": self.collection,
        }


def canonical_game_name(name: str, where: str) -> str:
    """The registry's spelling of ``name`` ("pong" -> "Pong"); an unknown game names ``where``."""
    try:
        return get_game(name).name
    except KeyError as err:
        raise DatasetFormatError(f"{where}: {err.args[0] if err.args else f'unknown game {name!r}'}") from None


def read_format_json(meta_path: Path, format_name: str, label: str = "") -> dict[str, Any]:
    """A metadata JSON file that must be an object with ``"format": format_name``; a named
    :class:`DatasetFormatError` otherwise (``label`` prefixes the path in messages)."""
    try:
        raw = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"{label}'{meta_path}' is not valid JSON: {err}") from None
    if not isinstance(raw, dict) or raw.get("format") != format_name:
        raise DatasetFormatError(f"{label}'{meta_path}': expected \"format\": \"{format_name}\", found {raw.get('format') if isinstance(raw, dict) else raw!r}")
    return raw


def read_metadata(path: str | Path) -> DatasetMetadata:
    """Read and check ``scaled_ql_dataset.json`` of the dataset folder ``path``.

    Checks that the folder, the metadata file and every listed Arrow file exist, that the
    format version is supported and that every game is in the registry. Checksums are
    verified separately by :func:`verify_checksums` (they read every byte).
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetFormatError(f"dataset folder '{path}' does not exist")
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise DatasetFormatError(
            f"dataset folder '{path}' has no '{METADATA_FILE}': not a scaled_ql dataset (write one with scaled-ql prep)"
        )
    raw = read_format_json(meta_path, FORMAT_NAME, "dataset metadata ")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetFormatError(f"dataset metadata '{meta_path}': format_version {version!r} is not supported (this scaled_ql reads version {FORMAT_VERSION})")
    for key in ("frame_shape", "games", "files"):
        if key not in raw:
            raise DatasetFormatError(f"dataset metadata '{meta_path}': missing key '{key}'")
    frame_shape = tuple(int(x) for x in raw["frame_shape"])
    if len(frame_shape) != 2:
        raise DatasetFormatError(f"dataset metadata '{meta_path}': frame_shape must be [H, W], found {raw['frame_shape']!r}")
    for game in raw["games"]:
        if canonical_game_name(game, f"dataset metadata '{meta_path}'") != game:
            raise DatasetFormatError(f"dataset metadata '{meta_path}': game {game!r} is not spelled as in the registry ({canonical_game_name(game, '')!r})")
    for entry in raw["files"]:
        file = path / entry["name"]
        if not file.is_file():
            raise DatasetFormatError(f"dataset file '{file}' is missing (listed in '{meta_path}')")
    return DatasetMetadata(
        path=path,
        format_version=version,
        frame_shape=frame_shape,  # type: ignore[arg-type]
        games={g: {k: float(v) if k.startswith("return_") else v if k == "game" else int(v) for k, v in c.items()}
               for g, c in raw["games"].items()},
        files=list(raw["files"]),
        collection=dict(raw.get("collection", {})),
    )


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_checksums(meta: DatasetMetadata) -> None:
    """Recompute the sha256 of every Arrow file; a mismatch names the file."""
    for entry in meta.files:
        file = meta.path / entry["name"]
        size = file.stat().st_size
        if "bytes" in entry and size != int(entry["bytes"]):
            raise DatasetFormatError(f"dataset file '{file}' is corrupt or was modified: {size} bytes, expected {entry['bytes']} (from {METADATA_FILE})")
        digest = sha256_file(file)
        if digest != entry["sha256"]:
            raise DatasetFormatError(f"dataset file '{file}' is corrupt or was modified: sha256 {digest}, expected {entry['sha256']} (from {METADATA_FILE})")


# ----------------------------------------------------------------------------------------------
# Reading one Arrow file, zero-copy


def open_arrow_file(file: str | Path, frame_shape: Sequence[int] = FRAME_SHAPE) -> tuple[pa.Buffer, pa.Table]:
    """Memory-map one Arrow file written by ``save_to_disk`` and check its schema.

    Returns ``(whole, table)``: ``whole`` is a buffer over the entire mapped file and every
    buffer of ``table`` is a zero-copy slice of it (nothing is read into RAM until touched).
    """
    file = Path(file)
    if not file.is_file():
        raise DatasetFormatError(f"dataset file '{file}' is missing")
    try:
        mapped = pa.memory_map(str(file), "r")
        whole = mapped.read_buffer(mapped.size())
        table = pa.ipc.open_stream(whole).read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
        raise DatasetFormatError(f"dataset file '{file}' is not a readable Arrow stream (corrupt?): {err}") from None
    check_schema(table.schema, frame_shape, where=f"dataset file '{file}'")
    return whole, table


def check_schema(schema: pa.Schema, frame_shape: Sequence[int], where: str) -> None:
    """Every column present with its type; frames uint8 of ``frame_shape``."""
    for name in COLUMNS:
        if name not in schema.names:
            raise DatasetFormatError(f"{where}: missing column '{name}' (found columns {schema.names})")
    frame_type = schema.field("frame").type
    if frame_type != _frame_arrow_type(frame_shape):
        raise DatasetFormatError(
            f"{where}: column 'frame' has type {frame_type}, expected uint8 frames of shape {tuple(frame_shape)} "
            f"(fixed_size_list<fixed_size_list<uint8>[{frame_shape[1]}]>[{frame_shape[0]}])"
        )
    for name, dtype in _SCALAR_TYPES.items():
        found = schema.field(name).type
        if found != pa.type_for_alias(dtype) and not (dtype == "string" and found == pa.large_string()):
            raise DatasetFormatError(f"{where}: column '{name}' has type {found}, expected {dtype}")


def frame_chunk_offsets(column: pa.ChunkedArray, whole: pa.Buffer, frame_shape: Sequence[int], where: str) -> np.ndarray:
    """Byte offset, inside the mapped file ``whole``, of every row's frame (int64 [rows])."""
    frame_bytes = int(np.prod(frame_shape))
    parts = []
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        flat = chunk.flatten().flatten()
        if chunk.null_count or flat.null_count or len(flat) != len(chunk) * frame_bytes:
            raise DatasetFormatError(f"{where}: column 'frame' has missing values or pixels")
        data = flat.buffers()[1]
        start = data.address + flat.offset - whole.address
        if start < 0 or start + len(flat) > whole.size:
            raise DatasetFormatError(f"{where}: column 'frame' is not memory-mapped from the file")  # pragma: no cover
        parts.append(start + np.arange(len(chunk), dtype=np.int64) * frame_bytes)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------------------------
# Episode structure


def check_episodes(
    episode_id: np.ndarray,
    step: np.ndarray,
    terminal: np.ndarray,
    truncated: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    where: str,
    row_name=lambda row: f"row {row}",
) -> np.ndarray:
    """Check the row convention (see the module docstring) on whole episodes, vectorized.

    Returns the index of every episode's last row. ``row_name(row)`` names a row in errors.
    """
    n = len(episode_id)
    if n == 0:
        return np.zeros(0, np.int64)
    both = np.flatnonzero(terminal & truncated)
    if both.size:
        raise DatasetFormatError(f"{where}: {row_name(both[0])} is marked both terminal and truncated")
    ends = np.flatnonzero(terminal | truncated)
    if ends.size == 0 or ends[-1] != n - 1:
        raise DatasetFormatError(
            f"{where}: the last row (episode_id {episode_id[-1]}) is not an episode end: "
            "every episode must end with a row marked terminal or truncated"
        )
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    short = np.flatnonzero(lengths < 2)
    if short.size:
        raise DatasetFormatError(f"{where}: episode at {row_name(starts[short[0]])} has a single row; an episode of T >= 1 steps has T + 1 rows")
    changes = np.flatnonzero(np.diff(episode_id) != 0) + 1
    if changes.size != starts.size - 1 or not np.array_equal(changes, starts[1:]):
        bad = np.setxor1d(changes, starts[1:])[0]
        raise DatasetFormatError(
            f"{where}: {row_name(bad)}: episode_id changes where no episode ended (or an episode ended without episode_id changing): "
            "rows of one episode must be contiguous and end with a terminal or truncated row"
        )
    first_step = np.minimum(step[starts].astype(np.int64), 0)  # negative: context rows (see the module docstring)
    expected_step = np.arange(n, dtype=np.int64) - np.repeat(starts - first_step, lengths)
    wrong = np.flatnonzero(step != expected_step)
    if wrong.size:
        row = wrong[0]
        raise DatasetFormatError(f"{where}: {row_name(row)} (episode_id {episode_id[row]}) has step {step[row]}, expected {expected_step[row]}")
    wrong = np.flatnonzero(step[ends] < 1)
    if wrong.size:
        row = ends[wrong[0]]
        raise DatasetFormatError(f"{where}: {row_name(row)} ends an episode with step {step[row]}: after its context rows an "
                                 "episode needs a step 0 row and a final row (at least one transition)")
    wrong = np.flatnonzero((action[ends] != 0) | (reward[ends] != 0))
    if wrong.size:
        row = ends[wrong[0]]
        raise DatasetFormatError(f"{where}: {row_name(row)} is an episode's last row and must have action 0 and reward 0, found {action[row]} and {reward[row]}")
    return ends


def check_values(
    action: np.ndarray,
    reward: np.ndarray,
    game_names: Sequence[str],
    game_index: np.ndarray,
    where: str,
    row_name=lambda row: f"row {row}",
    full_action_space: bool = False,
) -> None:
    """Every reward finite and every action in its game's action set (``0 <= a < n``, n the
    game's minimal set, or 18 with ``full_action_space``); row ``r`` plays ``game_names[game_index[r]]``.
    An error names the row, the game and the value."""
    bad = np.flatnonzero(~np.isfinite(reward))
    if bad.size:
        row = int(bad[0])
        raise DatasetFormatError(f"{where}: {row_name(row)} (game {game_names[game_index[row]]}) has reward {reward[row]}; "
                                 f"rewards must be finite ({bad.size} such rows)")
    bounds = np.asarray([_action_count(name, full_action_space) for name in game_names], dtype=np.int64)
    limit = bounds[game_index] if len(bounds) else np.zeros(0, np.int64)
    bad = np.flatnonzero((action < 0) | (action >= limit))
    if bad.size:
        row = int(bad[0])
        game = game_names[game_index[row]]
        raise DatasetFormatError(f"{where}: {row_name(row)} (game {game}) has action {action[row]}, outside the game's "
                                 f"action set (0 to {limit[row] - 1}, {'full' if full_action_space else 'minimal'} set; {bad.size} such rows)")


def _action_count(game: str, full_action_space: bool) -> int:
    if full_action_space:
        return NUM_ACTIONS_FULL
    spec = known_game(game)
    try:
        return spec.num_actions if spec is not None else NUM_ACTIONS_FULL
    except RuntimeError:  # this ale_py has no ROM of the game: only the full set's bound is known
        return NUM_ACTIONS_FULL


def known_game(name: str):
    """The registry's spec of ``name``, or None for a name it does not know (converters may
    write datasets of games outside the registry)."""
    try:
        return get_game(name)
    except KeyError:
        return None

"""The replay store: one or more dataset folders, memory-mapped, frames never copied into RAM.

Storage is plain (the sampler holds all state). Frames stay in the memory-mapped Arrow files:
for every file the store keeps one read-only numpy view over the whole mapped file, shaped so
that ``view[o]`` is the ``[H, W]`` frame starting at byte ``o``, and one int64 byte offset per
row. Gathering frames is then a single fancy-index per file (``view[offsets[rows]]``), which
copies only the frames asked for, whatever the record-batch layout ``datasets`` chose. The
small per-row columns (actions, rewards, flags, ids: 48 bytes a row against 7 KB of
pixels) are loaded into RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scaled_ql.data.schema import DatasetFormatError, DatasetMetadata, canonical_game_name, check_episodes, check_values, frame_chunk_offsets, open_arrow_file, read_metadata, verify_checksums as _verify_checksums


class ReplayStore:
    """Rows of one or more dataset folders, with game ids mapped to an experiment's ``games``.

    Args:
        paths: a dataset folder or a list of them (rows are concatenated in that order).
        games: the experiment's game list; its order fixes the game ids (``games[i]`` -> ``i``).
        ignore_extra_games: rows of games not in ``games`` get game id -1 (and are never
            sampled) instead of raising an error.
        verify_checksums: check every Arrow file's sha256 against the metadata (reads every byte
            once; pass False for very large datasets already verified).

    Every game in ``games`` must have rows in the data; a game in the data but not in ``games``
    is an error unless ``ignore_extra_games``. Both errors name the game and the folder.

    Attributes (all of length ``len(store)``, in RAM): ``action`` int32, ``reward`` float32
    (raw), ``terminal`` / ``truncated`` bool, ``episode_id`` int64, ``step`` int32,
    ``game_id`` int16, ``episode_start`` / ``episode_end`` int64 (global index of the first and
    last row of the row's episode).
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        games: Sequence[str],
        *,
        ignore_extra_games: bool = False,
        verify_checksums: bool = True,
    ) -> None:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        if not paths:
            raise DatasetFormatError("ReplayStore needs at least one dataset folder")
        self.paths = tuple(Path(p) for p in paths)
        self.games = tuple(canonical_game_name(g, "ReplayStore games") for g in games)
        if len(set(self.games)) != len(self.games):
            raise ValueError(f"ReplayStore games {list(games)} name a game twice")
        self.metadata: list[DatasetMetadata] = [read_metadata(p) for p in self.paths]
        shapes = {m.frame_shape for m in self.metadata}
        if len(shapes) != 1:
            found = ", ".join(f"'{m.path}': {list(m.frame_shape)}" for m in self.metadata)
            raise DatasetFormatError(f"dataset folders have different frame shapes ({found})")
        self.frame_shape: tuple[int, int] = self.metadata[0].frame_shape
        self._check_games(ignore_extra_games)
        if verify_checksums:
            for meta in self.metadata:
                _verify_checksums(meta)

        self._views: list[np.ndarray] = []  # one strided view per Arrow file
        self._file_start: list[int] = []  # first global row of each file
        self._file_names: list[Path] = []
        columns: dict[str, list[np.ndarray]] = {k: [] for k in ("action", "reward", "terminal", "truncated", "episode_id", "step", "game_id", "offset")}
        game_set = pa.array(self.games, pa.string())
        frame_bytes = int(np.prod(self.frame_shape))
        rows = 0
        for meta in self.metadata:
            folder_start = rows
            for entry in meta.files:
                file = meta.path / entry["name"]
                whole, table = open_arrow_file(file, self.frame_shape)
                if table.num_rows != int(entry["rows"]):
                    raise DatasetFormatError(f"dataset file '{file}' has {table.num_rows} rows, its metadata says {entry['rows']}")
                where = f"dataset file '{file}'"
                columns["offset"].append(frame_chunk_offsets(table.column("frame"), whole, self.frame_shape, where))
                for name in ("action", "reward", "terminal", "truncated", "episode_id", "step"):
                    columns[name].append(table.column(name).to_numpy())
                game_col = table.column("game")
                if game_col.type != pa.string():
                    game_col = game_col.cast(pa.string())
                ids = pc.fill_null(pc.index_in(game_col, value_set=game_set), -1)
                codes = pc.dictionary_encode(game_col).combine_chunks()
                check_values(columns["action"][-1], columns["reward"][-1], codes.dictionary.to_pylist(),
                             codes.indices.to_numpy(zero_copy_only=False), where,
                             full_action_space=bool(meta.collection.get("env", {}).get("full_action_space")))
                columns["game_id"].append(ids.to_numpy().astype(np.int16))
                pixels = np.frombuffer(whole, dtype=np.uint8)
                self._views.append(
                    np.lib.stride_tricks.as_strided(
                        pixels,
                        shape=(max(pixels.size - frame_bytes + 1, 0), *self.frame_shape),
                        strides=(1, self.frame_shape[1], 1),
                        writeable=False,
                    )
                )
                self._file_start.append(rows)
                self._file_names.append(file)
                rows += table.num_rows
            folder_rows = rows - folder_start
            if folder_rows != meta.num_rows:
                raise DatasetFormatError(f"dataset folder '{meta.path}' has {folder_rows} rows, its {meta.path.name}/scaled_ql_dataset.json says {meta.num_rows}")

        def cat(name: str, dtype) -> np.ndarray:
            return np.concatenate(columns[name]).astype(dtype, copy=False)

        self.action = cat("action", np.int32)
        self.reward = cat("reward", np.float32)
        self.terminal = cat("terminal", np.bool_)
        self.truncated = cat("truncated", np.bool_)
        self.episode_id = cat("episode_id", np.int64)
        self.step = cat("step", np.int32)
        self.game_id = cat("game_id", np.int16)
        self._offset = cat("offset", np.int64)
        self._file_start_arr = np.asarray(self._file_start, dtype=np.int64)

        # Episode structure, checked per folder (a folder ends with a complete episode).
        ends = []
        start = 0
        for meta in self.metadata:
            stop = start + meta.num_rows
            s = slice(start, stop)
            e = check_episodes(
                self.episode_id[s], self.step[s], self.terminal[s], self.truncated[s], self.action[s], self.reward[s],
                where=f"dataset folder '{meta.path}'",
                row_name=lambda r, start=start: self._row_name(start + int(r)),
            )
            ends.append(e + start)
            start = stop
        episode_end_rows = np.concatenate(ends)
        episode_start_rows = np.concatenate(([0], episode_end_rows[:-1] + 1))
        lengths = episode_end_rows - episode_start_rows + 1
        self.episode_start = np.repeat(episode_start_rows, lengths)
        self.episode_end = np.repeat(episode_end_rows, lengths)
        self.num_episodes = int(len(episode_end_rows))

    # ------------------------------------------------------------------------------------------

    def _check_games(self, ignore_extra_games: bool) -> None:
        present: dict[str, list[Path]] = {}
        for meta in self.metadata:
            for game, counts in meta.games.items():
                if counts.get("rows", 0) > 0:
                    present.setdefault(game, []).append(meta.path)
        where = ", ".join(f"'{p}'" for p in self.paths)
        for game in self.games:
            if game not in present:
                raise DatasetFormatError(f"game '{game}' is in the experiment's games but has no data in dataset folder(s) {where} (they hold {sorted(present)})")
        if not ignore_extra_games:
            for game, folders in present.items():
                if game not in self.games:
                    raise DatasetFormatError(
                        f"dataset folder '{folders[0]}' holds game '{game}', which is not in the experiment's games {list(self.games)} "
                        "(add it to 'games', or open the store with ignore_extra_games=True)"
                    )

    def _row_name(self, row: int) -> str:
        k = int(np.searchsorted(self._file_start_arr, row, side="right") - 1)
        return f"row {row - self._file_start[k]} of dataset file '{self._file_names[k]}'"

    def __len__(self) -> int:
        return int(self.action.shape[0])

    @property
    def num_files(self) -> int:
        return len(self._views)

    @property
    def is_last_row(self) -> np.ndarray:
        """bool [N]: the row is its episode's last (holds the final observation; not a transition start)."""
        return self.terminal | self.truncated

    def episode_returns(self, full_length: int = 0) -> dict[str, np.ndarray]:
        """The raw (unclipped) return of every episode, per game of the store. With
        ``full_length`` > 0, only the episodes that ended by a terminal or ran ``full_length``
        agent steps, leaving out those a collection budget cut short (whose returns are not a
        behaviour policy's episode return)."""
        ends = np.flatnonzero(self.is_last_row)
        starts = self.episode_start[ends]
        sums = np.add.reduceat(self.reward.astype(np.float64), starts) if ends.size else np.zeros(0)
        keep = np.ones(ends.size, dtype=bool) if full_length <= 0 else self.terminal[ends] | (ends - starts >= full_length)
        return {game: sums[keep & (self.game_id[ends] == g)] for g, game in enumerate(self.games)}

    def valid_starts(self, game_id: int) -> np.ndarray:
        """Rows of game ``game_id`` that start a transition (every row but an episode's last and
        its context rows, those of negative step: see ``scaled_ql.data.schema``)."""
        return np.flatnonzero((self.game_id == game_id) & ~self.is_last_row & (self.step >= 0))

    def frame(self, row: int) -> np.ndarray:
        """Zero-copy read-only view of one row's frame, uint8 [H, W]."""
        row = int(row)
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} is out of range for a store of {len(self)} rows")
        k = int(np.searchsorted(self._file_start_arr, row, side="right") - 1)
        return self._views[k][self._offset[row]]

    def gather_frames(self, rows: np.ndarray) -> np.ndarray:
        """Frames of ``rows`` (any integer shape S, values in [0, N)) as a new uint8 array [*S, H, W].

        Only the requested frames are read from the mapped files.
        """
        rows = np.asarray(rows)
        if len(self._views) == 1:
            return self._views[0][self._offset[rows]]
        out = np.empty((*rows.shape, *self.frame_shape), dtype=np.uint8)
        file_of = np.searchsorted(self._file_start_arr, rows, side="right") - 1
        for k in np.unique(file_of).tolist():
            mask = file_of == k
            out[mask] = self._views[k][self._offset[rows[mask]]]
        return out

    def __repr__(self) -> str:
        return f"ReplayStore({len(self)} rows, {self.num_episodes} episodes, games={list(self.games)}, files={self.num_files})"

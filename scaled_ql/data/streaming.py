"""Stream n-step transitions from Parquet shards, for data larger than a disk or RAM.

:class:`StreamingSampler` yields :class:`~scaled_ql.data.batch.Batch` es like
:class:`~scaled_ql.data.sampler.Sampler`, but reads the Parquet shards of
:mod:`scaled_ql.data.parquet` (a local folder, or a Hub repo through ``datasets`` streaming)
instead of a memory-mapped store, so nothing but the buffers sits on the machine.

What it guarantees:

* **Same transitions.** Every transition is built by ``Sampler.batch_at`` itself, on a block of
  whole episodes held in RAM (:class:`EpisodeBlock`), so frame stacks (zero-padded before an
  episode's first frame, never crossing into another episode), n-step returns of clipped
  rewards stopping at the episode's end, discount 0 after a terminal and bootstrapping after a
  truncation are exactly those of the memory-mapped sampler.
* **Per-game balance, per batch.** One buffer per game, each game read from its own shards:
  every batch holds exactly ``batch_size / len(games)`` transitions of each game, games in the
  order of ``games`` (as ``Sampler``). Balance is per batch, not per pass: each game loops over
  its own shards independently, so a small game repeats more often than a large one.
* **Shuffling within a buffer.** A game's buffer is a block of whole episodes of at least
  ``buffer_size`` rows (about 7 KB each; the last episode may overshoot). Its transitions are
  served in a seeded random order, each once; then the next block is read. Transitions are
  therefore uniform within a buffer, not over the whole data: make ``buffer_size`` as large as
  RAM allows (total RAM about ``len(games) * buffer_size * 7 KB`` per process). In each pass
  (epoch) every transition of the rank's shards is served exactly once; a buffer never spans
  two passes. Local shards are visited in a new seeded order every pass.
* **Ranks read disjoint shards.** Rank ``r`` of ``world_size`` reads shards ``r, r + W, ...`` of
  every game (local folders), or those ``datasets.distributed.split_dataset_by_node`` with
  ``strategy="shards"`` gives it (Hub / ``IterableDataset`` sources). A game with fewer shards
  than ranks is an error (re-export with a smaller ``rows_per_shard``). Unlike ``Sampler``, the
  data order depends on the world size.

Not provided: exact resume of the stream (a restarted run starts its passes again with the
same seed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from scaled_ql.data.batch import Batch
from scaled_ql.data.schema import DatasetFormatError, canonical_game_name
from scaled_ql.data.shards import PARQUET_METADATA_FILE, binary_to_frames, iter_shard_tables, iter_whole_episodes, read_parquet_metadata, shards_of
from scaled_ql.data.sampler import Sampler

# A source of one game's rows for one rank: a list of shard readers, each a callable that
# returns an iterator of tables of whole episodes (frames as ``binary``).
ShardReader = Callable[[], Iterable[pa.Table]]


class EpisodeBlock:
    """Whole episodes of one game in RAM, readable by ``Sampler`` like a one-game ``ReplayStore``.

    Holds the attributes ``Sampler`` and ``Sampler.batch_at`` read from a store (``games``,
    ``paths``, ``action``, ``reward``, ``terminal``, ``truncated``, ``episode_id``, ``step``,
    ``game_id`` (all 0), ``episode_start``, ``episode_end``, ``valid_starts``, ``gather_frames``),
    with frames in one uint8 array ``[N, H, W]``.
    """

    def __init__(self, game: str, tables: Sequence[pa.Table], frame_shape: Sequence[int], where: str) -> None:
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        self.games = (game,)
        self.paths = (where,)
        self.frame_shape = tuple(int(x) for x in frame_shape)
        self.frames = np.ascontiguousarray(binary_to_frames(table.column("frame"), self.frame_shape, where))
        col = lambda name, dtype: table.column(name).to_numpy().astype(dtype, copy=False)  # noqa: E731
        self.action = col("action", np.int32)
        self.reward = col("reward", np.float32)
        self.terminal = col("terminal", np.bool_)
        self.truncated = col("truncated", np.bool_)
        self.episode_id = col("episode_id", np.int64)
        self.step = col("step", np.int32)
        games_here = table.column("game").unique().to_pylist()
        if games_here != [game]:
            raise DatasetFormatError(f"{where}: holds rows of {sorted(games_here)}, expected only '{game}'")
        self.game_id = np.zeros(len(self.action), np.int16)
        ends = np.flatnonzero(self.terminal | self.truncated)
        if ends.size == 0 or ends[-1] != len(self.action) - 1:
            raise DatasetFormatError(f"{where}: a block does not end with a whole episode")  # pragma: no cover - the reader checks
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = ends - starts + 1
        self.episode_start = np.repeat(starts, lengths).astype(np.int64)
        self.episode_end = np.repeat(ends, lengths).astype(np.int64)
        self.num_episodes = int(ends.size)

    def __len__(self) -> int:
        return int(self.action.shape[0])

    @property
    def is_last_row(self) -> np.ndarray:
        return self.terminal | self.truncated

    def valid_starts(self, game_id: int = 0) -> np.ndarray:
        # Not an episode's last row, nor a context row (negative step; see scaled_ql.data.schema).
        return np.flatnonzero(~self.is_last_row & (self.step >= 0)) if game_id == 0 else np.zeros(0, np.int64)

    def gather_frames(self, rows: np.ndarray) -> np.ndarray:
        return self.frames[np.asarray(rows)]


def _concat_batches(parts: Sequence[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    out = {}
    for f in fields(Batch):
        values = [getattr(p, f.name) for p in parts]
        out[f.name] = None if any(v is None for v in values) else np.concatenate(values)
    return Batch(**out)


class _GameStream:
    """One game's transitions for this rank: pass after pass over its shards, a buffer at a time."""

    def __init__(self, game: str, game_index: int, readers: Sequence[ShardReader], frame_shape, sampler_kw: dict[str, Any],
                 buffer_size: int, rng: np.random.Generator, shuffle_shards: bool, epochs: int | None, where: str) -> None:
        self.game, self.game_index, self.readers, self.frame_shape = game, game_index, list(readers), frame_shape
        self.sampler_kw, self.buffer_size, self.rng = sampler_kw, buffer_size, rng
        self.shuffle_shards, self.epochs, self.where = shuffle_shards, epochs, where
        self.epoch = 0
        self.blocks_read = 0
        self._blocks = self._iter_blocks()
        self._sampler: Sampler | None = None
        self._order = np.zeros(0, np.int64)
        self._pos = 0

    def _iter_blocks(self) -> Iterator[EpisodeBlock]:
        while self.epochs is None or self.epoch < self.epochs:
            order = self.rng.permutation(len(self.readers)) if self.shuffle_shards else np.arange(len(self.readers))
            pending: list[pa.Table] = []
            rows = 0
            for i in order.tolist():
                for table in self.readers[i]():
                    pending.append(table)
                    rows += table.num_rows
                    if rows >= self.buffer_size:
                        yield EpisodeBlock(self.game, pending, self.frame_shape, self.where)
                        pending, rows = [], 0
            if pending:
                yield EpisodeBlock(self.game, pending, self.frame_shape, self.where)
            elif self.blocks_read == 0:
                raise DatasetFormatError(f"{self.where}: game '{self.game}' has no rows for this rank")
            self.epoch += 1

    def _next_block(self) -> bool:
        block = next(self._blocks, None)
        if block is None:
            return False
        self.blocks_read += 1
        self._sampler = Sampler(block, 1, **self.sampler_kw)  # type: ignore[arg-type]  # EpisodeBlock reads like a store
        starts = block.valid_starts(0)
        self._order = starts[self.rng.permutation(starts.size)]
        self._pos = 0
        return True

    def take(self, n: int) -> Batch | None:
        """The next ``n`` transitions (None once the last pass is spent)."""
        parts = []
        while n > 0:
            if self._pos >= self._order.size and not self._next_block():
                return None
            rows = self._order[self._pos : self._pos + n]
            self._pos += rows.size
            n -= rows.size
            batch = self._sampler.batch_at(rows)  # type: ignore[union-attr]
            batch.game[:] = self.game_index
            parts.append(batch)
        return _concat_batches(parts)


class StreamingSampler:
    """Iterable of :class:`Batch` es of ``batch_size`` transitions streamed from Parquet shards.

    Args:
        sources: game -> this rank's shard readers (see :meth:`from_parquet`,
            :meth:`from_iterable_datasets`); the mapping's order fixes the game ids.
        batch_size: this rank's batch, a multiple of the number of games.
        frame_shape: (H, W) of the frames.
        buffer_size: rows per game buffer (see the module docstring).
        epochs: passes over the data (None: forever).
        shuffle_shards: visit this rank's shards of a game in a new seeded order every pass.

    ``n_step``, ``gamma``, ``reward_clip``, ``frame_stack`` as for :class:`Sampler`.
    """

    def __init__(
        self,
        sources: Mapping[str, Sequence[ShardReader]],
        batch_size: int,
        *,
        frame_shape: Sequence[int] = (84, 84),
        n_step: int = 3,
        gamma: float = 0.99,
        reward_clip: float = 1.0,
        frame_stack: int = 4,
        buffer_size: int = 10_000,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epochs: int | None = None,
        shuffle_shards: bool = True,
        where: str = "streamed dataset",
    ) -> None:
        self.games = tuple(sources)
        if not self.games:
            raise ValueError("StreamingSampler needs at least one game")
        if batch_size < 1 or batch_size % len(self.games):
            raise ValueError(f"batch_size {batch_size} must be a positive multiple of the number of games ({len(self.games)}: {list(self.games)}) so every batch is balanced")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be positive, found {buffer_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.sources = {g: list(r) for g, r in sources.items()}
        self.batch_size = int(batch_size)
        self.per_game = self.batch_size // len(self.games)
        self.frame_shape = tuple(int(x) for x in frame_shape)
        self.sampler_kw = {"n_step": n_step, "gamma": gamma, "reward_clip": reward_clip, "frame_stack": frame_stack}
        self.buffer_size = int(buffer_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epochs = epochs
        self.shuffle_shards = shuffle_shards
        self.where = where

    # ------------------------------------------------------------------------------------------
    # Sources

    @classmethod
    def from_parquet(
        cls,
        path: str | Path,
        games: Sequence[str] | None,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        split: str = "train",
        **kwargs: Any,
    ) -> "StreamingSampler":
        """Stream a Parquet folder written by :func:`~scaled_ql.data.parquet.export_parquet`, or a
        Hub dataset repo id holding one (read through ``datasets.load_dataset(..., streaming=True)``,
        one config per game). ``games`` defaults to all games of the folder."""
        path_ = Path(path)
        if not (path_ / PARQUET_METADATA_FILE).is_file():
            if path_.exists():
                read_parquet_metadata(path_)  # raises, naming what is wrong
            if games is None:
                raise ValueError(f"streaming '{path}' from the Hub: pass the games to read (one config per game)")
            return cls.from_iterable_datasets(open_hub_games(str(path), games, split=split), batch_size, rank=rank, world_size=world_size,
                                              where=f"dataset '{path}'", **kwargs)
        meta = read_parquet_metadata(path_)
        frame_shape = tuple(int(x) for x in meta["frame_shape"])
        names = list(meta["games"]) if games is None else [canonical_game_name(g, f"streaming '{path}'") for g in games]
        sources = {}
        for game in names:
            if game not in meta["games"]:
                raise DatasetFormatError(f"Parquet folder '{path}' has no game '{game}' (it holds {list(meta['games'])})")
            mine = rank_shards(shards_of(meta, game), rank, world_size, f"Parquet folder '{path}', game '{game}'")
            sources[game] = [_local_reader(f, frame_shape) for f in mine]
        return cls(sources, batch_size, frame_shape=frame_shape, rank=rank, world_size=world_size, where=f"Parquet folder '{path}'", **kwargs)

    @classmethod
    def from_iterable_datasets(
        cls,
        datasets_by_game: Mapping[str, Any],
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        frame_shape: Sequence[int] = (84, 84),
        read_rows: int = 1_024,
        **kwargs: Any,
    ) -> "StreamingSampler":
        """Stream ``datasets.IterableDataset`` s, one per game (e.g. ``load_dataset(repo, game,
        streaming=True, split="train")``), each split across ranks by
        ``split_dataset_by_node(..., strategy="shards")`` (a shard = a file of whole episodes).
        Shards are read in the dataset's order every pass; ``frame_shape`` is (H, W) of the frames."""
        from datasets.distributed import split_dataset_by_node  # heavy (about a second to import): loaded when first needed

        sources = {}
        for game, ds in datasets_by_game.items():
            where = f"streamed dataset of game '{game}'"
            if ds.num_shards < world_size:
                raise DatasetFormatError(f"{where}: {ds.num_shards} shard(s), fewer than world_size {world_size}: every rank must read its own shards (re-export with a smaller rows_per_shard)")
            mine = split_dataset_by_node(ds, rank=rank, world_size=world_size, strategy="shards") if world_size > 1 else ds

            def reader(mine=mine, where=where) -> Iterator[pa.Table]:
                return iter_whole_episodes(mine.with_format("arrow").iter(batch_size=read_rows), where)

            sources[canonical_game_name(game, where)] = [reader]
        return cls(sources, batch_size, frame_shape=frame_shape, rank=rank, world_size=world_size, shuffle_shards=False, **kwargs)

    # ------------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        """Batches until the last pass of some game is spent (forever when ``epochs`` is None)."""
        streams = []
        for i, (game, readers) in enumerate(self.sources.items()):
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, self.rank, self.world_size, i])))
            streams.append(_GameStream(game, i, readers, self.frame_shape, self.sampler_kw, self.buffer_size, rng,
                                       self.shuffle_shards, self.epochs, self.where))
        while True:
            parts = [s.take(self.per_game) for s in streams]
            if any(p is None or len(p) < self.per_game for p in parts):
                return
            yield _concat_batches(parts)  # type: ignore[arg-type]


def rank_shards(shards: Sequence[Path], rank: int, world_size: int, where: str) -> list[Path]:
    """Rank ``rank``'s shards: ``shards[rank::world_size]``; an error if some rank would get none."""
    if len(shards) < world_size:
        raise DatasetFormatError(f"{where}: {len(shards)} shard(s), fewer than world_size {world_size}: every rank must read its own shards (re-export with a smaller rows_per_shard)")
    return list(shards[rank::world_size])


def _local_reader(file: Path, frame_shape) -> ShardReader:
    return lambda: iter_shard_tables(file, frame_shape)


def open_hub_games(repo_id: str, games: Sequence[str], *, split: str = "train", **load_kwargs: Any) -> dict[str, Any]:
    """``datasets.load_dataset(repo_id, game, split=split, streaming=True)`` for every game (the
    Parquet card has one config per game). Works for a local Parquet folder too."""
    from datasets import load_dataset  # heavy (about a second to import): loaded when first needed

    return {g: load_dataset(repo_id, g, split=split, streaming=True, **load_kwargs) for g in games}

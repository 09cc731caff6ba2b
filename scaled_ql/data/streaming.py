"""Stream n-step transitions from Parquet shards, for data larger than a disk or RAM.

:class:`StreamingSampler` draws :class:`~scaled_ql.data.batch.Batch` es like
:class:`~scaled_ql.data.sampler.Sampler`, but reads the Parquet shards of
:mod:`scaled_ql.data.parquet` (a local or shared folder, a Hub dataset repo, an fsspec URL:
:mod:`scaled_ql.data.shard_source`) instead of a memory-mapped store, so a node holds only its
buffers. ``pretrain`` and ``finetune`` use it when ``data.path`` is such a source.

What it guarantees:

* **Same transitions.** Every transition is built by ``Sampler.batch_at`` itself, on a block of
  whole episodes held in RAM (:class:`~scaled_ql.data.blocks.EpisodeBlock`), so frame stacks,
  n-step returns of clipped rewards, discounts, truncation bootstrapping and ``mc_return`` (the
  Monte-Carlo return-to-go Cal-QL uses) are exactly those of the memory-mapped sampler.
* **Per-game balance, per batch.** One stream per game, each over its own shards: every batch
  holds exactly ``batch_size / len(games)`` transitions of each game, in the order of ``games``.
  Each game loops over its shards independently, so a small game repeats more often.
* **Shuffling within a buffer.** A game's buffer is a block of whole episodes of at least
  ``buffer_size`` rows (about 7 KB each). Its transitions are served in a seeded random order,
  each once; then the next block. In each pass every transition of the rank's shards is served
  exactly once; the rank's shards are visited in a new seeded order every pass. Transitions are
  uniform within a buffer, not over the whole data: make ``buffer_size`` as large as RAM allows.
* **Holdout split.** ``split="train"`` / ``"holdout"`` with ``holdout_fraction`` keeps whole
  episodes on one side by the same hash of their id as ``Sampler``, whatever the shards.
* **Ranks read disjoint shards.** Rank ``r`` of ``W`` reads shards ``r, r + W, ...`` of every
  game. A game with fewer shards than ranks is an error naming it; with uneven shards (counts not
  a multiple of ``W``, or shards of different sizes) ranks hold different amounts of a game and
  each repeats its own at its own pace. The global batch is ``W`` times the rank's batch, each
  balanced; which transitions it holds depends on ``W`` (unlike ``Sampler``).
* **Exact resume.** :meth:`state_dict` (JSON) holds, per game, the cursor of the block being
  served (pass, block number, position in the pass's shard order, row in that shard) and the
  position in that block's order, plus the shards skipped. The orders are functions of the seed
  and those counters (:mod:`scaled_ql.data.blocks`), so :meth:`load_state_dict` re-reads that
  block and continues with the batches an uninterrupted sampler draws. A state resumes only on
  the same world size and rank (each rank's shards and cursor are its own): another world size
  is refused with a named error.
* **Prefetching.** Each game's next ``prefetch`` blocks are read, checked and decoded in a
  background thread while batches are drawn (order unchanged). RAM per process: about
  ``len(games) * (prefetch + 2) * buffer_size * 7 KB`` (the block served, those queued, the one
  being built), plus one compressed shard per game being read.
* **Faults.** A shard that is missing, truncated or fails its sha256 when the stream reaches it
  raises :class:`~scaled_ql.data.shard_source.ShardReadError` naming it; with
  ``skip_bad_shards`` it is skipped, logged, and listed in the state (so in every checkpoint). A
  remote read that keeps failing is retried with backoff, then stops naming the shard.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from scaled_ql.data.batch import Batch
from scaled_ql.data.blocks import Block, BlockPrefetcher, EpisodeBlock, GameBlocks, Shard
from scaled_ql.data.schema import DatasetFormatError, canonical_game_name
from scaled_ql.data.shard_source import ShardSource
from scaled_ql.data.shards import drop_rows, iter_shard_tables, iter_whole_episodes

__all__ = ["StreamingSampler", "EpisodeBlock", "rank_shards", "open_hub_games"]

STATE_KIND = "streaming"


def _concat_batches(parts: Sequence[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    out = {}
    for f in fields(Batch):
        values = [getattr(p, f.name) for p in parts]
        out[f.name] = None if any(v is None for v in values) else np.concatenate(values)
    return Batch(**out)


class _GameStream:
    """One game's transitions for this rank: the block being served and the position in it."""

    def __init__(self, blocks: GameBlocks, game_index: int, prefetch: int, prefetchers: list[BlockPrefetcher]) -> None:
        self.blocks, self.game_index, self.prefetch, self._prefetchers = blocks, game_index, prefetch, prefetchers
        self.cursor: dict[str, int] | None = None  # of the block being served; None before the first
        self.pos = 0
        self._block: Block | None = None
        self._feed: BlockPrefetcher | None = None

    def restart(self, cursor: dict[str, int] | None, pos: int) -> None:
        if self._feed is not None:
            self._feed.close()
        self.cursor, self.pos, self._block, self._feed = cursor, pos, None, None

    def _advance(self) -> bool:
        resuming = self._feed is None
        if resuming:
            self._feed = BlockPrefetcher(self.blocks.blocks(**(self.cursor or {})), self.prefetch, f"prefetch {self.blocks.game}")
            self._prefetchers.append(self._feed)
        block = self._feed.next()
        if block is None:
            return False
        if resuming and self.cursor is not None and block.cursor != self.cursor:
            raise DatasetFormatError(f"{self.blocks.where}: game '{self.blocks.game}': the saved stream position {self.cursor} "
                                     f"is not where a block starts in these shards (found {block.cursor}); were they re-exported?")
        if not (resuming and self.cursor is not None):
            self.pos = 0
        self._block, self.cursor = block, block.cursor
        return True

    def take(self, n: int) -> Batch | None:
        """The next ``n`` transitions (None once the last pass is spent)."""
        parts = []
        while n > 0:
            if (self._block is None or self.pos >= self._block.order.size) and not self._advance():
                return None
            rows = self._block.order[self.pos : self.pos + n]  # type: ignore[union-attr]
            self.pos += rows.size
            n -= rows.size
            batch = self._block.sampler.batch_at(rows)  # type: ignore[union-attr]
            batch.game[:] = self.game_index
            parts.append(batch)
        return _concat_batches(parts)

    def state(self) -> dict[str, Any]:
        return {"game": self.blocks.game, "shards": [s.name for s in self.blocks.shards], "cursor": self.cursor, "pos": self.pos}


def _close_all(prefetchers: list[BlockPrefetcher]) -> None:
    for p in prefetchers:
        p.close()


class StreamingSampler:
    """Batches of ``batch_size`` transitions streamed from shards: :meth:`sample`, or iterate.

    Args:
        sources: game -> this rank's shards (see :meth:`from_parquet`); the order fixes game ids.
        batch_size: this rank's batch, a multiple of the number of games.
        frame_shape: (H, W) of the frames.
        buffer_size: rows per game buffer (see the module docstring).
        epochs: passes over the data (None: forever).
        shuffle_shards: visit this rank's shards of a game in a new seeded order every pass.
        split, holdout_fraction: ``"all"``, or the ``"train"`` / ``"holdout"`` episodes (as ``Sampler``).
        prefetch: blocks built ahead per game in a background thread (0: none).
        skip_bad_shards: skip (and record) unreadable shards instead of stopping.

    ``n_step``, ``gamma``, ``reward_clip``, ``frame_stack`` as for :class:`Sampler`.
    """

    def __init__(self, sources: Mapping[str, Sequence[Shard]], batch_size: int, *, frame_shape: Sequence[int] = (84, 84),
                 n_step: int = 3, gamma: float = 0.99, reward_clip: float = 1.0, frame_stack: int = 4, buffer_size: int = 10_000,
                 seed: int = 0, rank: int = 0, world_size: int = 1, epochs: int | None = None, shuffle_shards: bool = True,
                 split: str = "all", holdout_fraction: float = 0.0, prefetch: int = 1, skip_bad_shards: bool = False,
                 where: str = "streamed dataset", source: dict[str, Any] | None = None) -> None:
        self.games = tuple(sources)
        if not self.games:
            raise ValueError("StreamingSampler needs at least one game")
        if batch_size < 1 or batch_size % len(self.games):
            raise ValueError(f"batch_size {batch_size} must be a positive multiple of the number of games ({len(self.games)}: {list(self.games)}) so every batch is balanced")
        if buffer_size < 1 or prefetch < 0:
            raise ValueError(f"buffer_size must be positive and prefetch non-negative, found {buffer_size} and {prefetch}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if split not in ("all", "train", "holdout") or not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(f"split must be 'all', 'train' or 'holdout' and holdout_fraction in [0, 1), found {split!r} and {holdout_fraction}")
        self.batch_size = int(batch_size)
        self.per_game = self.batch_size // len(self.games)
        self.frame_shape = tuple(int(x) for x in frame_shape)
        self.buffer_size, self.prefetch = int(buffer_size), int(prefetch)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.split, self.holdout_fraction = split, float(holdout_fraction)
        self.where = where
        self.source = source or {"kind": "shards", "location": where}
        self.batches_drawn = 0
        sampler_kw = {"n_step": n_step, "gamma": gamma, "reward_clip": reward_clip, "frame_stack": frame_stack}
        self._prefetchers: list[BlockPrefetcher] = []
        self._streams = [
            _GameStream(GameBlocks(game, list(shards), self.frame_shape, sampler_kw, self.buffer_size, (self.seed, self.rank, self.world_size, i),
                                   where, shuffle_shards, epochs, split, self.holdout_fraction, skip_bad_shards), i, self.prefetch, self._prefetchers)
            for i, (game, shards) in enumerate(sources.items())
        ]
        self._finalizer = weakref.finalize(self, _close_all, self._prefetchers)  # stop the threads with the sampler

    # ------------------------------------------------------------------------------------------
    # Sources

    @classmethod
    def from_parquet(cls, location: str | Path | ShardSource, games: Sequence[str] | None, batch_size: int, *, rank: int = 0,
                     world_size: int = 1, retries: int = 4, retry_wait_s: float = 1.0, **kwargs: Any) -> "StreamingSampler":
        """Stream a Parquet folder written by :func:`~scaled_ql.data.parquet.export_parquet`: a local
        path, a Hub dataset repo id (``user/name[@revision]``) or an fsspec URL (see
        :mod:`scaled_ql.data.shard_source`), or an open :class:`ShardSource`. ``games`` defaults to
        all games of the folder; this rank reads its own shards of each (:func:`rank_shards`)."""
        source = location if isinstance(location, ShardSource) else ShardSource(
            location, retries=retries, retry_wait_s=retry_wait_s, check_files=not kwargs.get("skip_bad_shards", False))
        where = f"Parquet {'folder' if source.kind == 'parquet' else 'source'} '{source.location}'"
        names = source.games if games is None else [canonical_game_name(g, f"streaming {where}") for g in games]
        sources = {}
        for game in names:
            if game not in source.games:
                raise DatasetFormatError(f"{where} has no game '{game}' (it holds {source.games})")
            mine = rank_shards(source.shards(game), rank, world_size, f"{where}, game '{game}'")
            sources[game] = [Shard(e["name"], _shard_opener(source, e)) for e in mine]
        return cls(sources, batch_size, frame_shape=source.frame_shape, rank=rank, world_size=world_size, where=where,
                   source={"kind": source.kind, "location": source.location, "root": source.root}, **kwargs)

    @classmethod
    def from_config(cls, location: str | Path | ShardSource, games: Sequence[str], data_cfg: Any, batch_size: int, *, frame_stack: int = 4,
                    seed: int = 0, rank: int = 0, world_size: int = 1, split: str = "all") -> "StreamingSampler":
        """Build from a :class:`scaled_ql.config.DataConfig` (transition settings, holdout, the
        ``stream_*`` settings), as :meth:`Sampler.from_config`."""
        holdout = data_cfg.holdout_fraction
        return cls.from_parquet(
            location, games, batch_size, rank=rank, world_size=world_size, retries=data_cfg.read_retries,
            retry_wait_s=data_cfg.retry_wait_s, n_step=data_cfg.n_step, gamma=data_cfg.gamma, reward_clip=data_cfg.reward_clip,
            frame_stack=frame_stack, seed=seed, buffer_size=data_cfg.stream_buffer_rows, prefetch=data_cfg.stream_prefetch_blocks,
            skip_bad_shards=data_cfg.skip_bad_shards, split=split if holdout > 0 else "all", holdout_fraction=holdout,
        )

    @classmethod
    def from_iterable_datasets(cls, datasets_by_game: Mapping[str, Any], batch_size: int, *, rank: int = 0, world_size: int = 1,
                               frame_shape: Sequence[int] = (84, 84), read_rows: int = 1_024, **kwargs: Any) -> "StreamingSampler":
        """Stream ``datasets.IterableDataset`` s, one per game (e.g. ``load_dataset(repo, game,
        streaming=True, split="train")``), each split across ranks by ``split_dataset_by_node(...,
        strategy="shards")``. Each rank's part is one shard, read in the dataset's order; resuming
        re-reads it up to the saved row. Prefer :meth:`from_parquet` (shuffled shard order, checksums)."""
        from datasets.distributed import split_dataset_by_node  # heavy (about a second to import): loaded when first needed

        sources = {}
        for game, ds in datasets_by_game.items():
            where = f"streamed dataset of game '{game}'"
            if ds.num_shards < world_size:
                raise DatasetFormatError(f"{where}: {ds.num_shards} shard(s), fewer than world_size {world_size}: every rank must read its own shards (re-export with a smaller rows_per_shard)")
            mine = split_dataset_by_node(ds, rank=rank, world_size=world_size, strategy="shards") if world_size > 1 else ds

            def opener(skip: int, mine=mine, where=where) -> Iterator[pa.Table]:
                batches = mine.with_format("arrow").iter(batch_size=read_rows)
                return iter_whole_episodes(drop_rows(batches, skip), where)

            sources[canonical_game_name(game, where)] = [Shard(where, opener)]
        return cls(sources, batch_size, frame_shape=frame_shape, rank=rank, world_size=world_size, shuffle_shards=False, **kwargs)

    # ------------------------------------------------------------------------------------------

    def _next(self) -> Batch | None:
        parts = [s.take(self.per_game) for s in self._streams]
        if any(p is None for p in parts):
            return None
        self.batches_drawn += 1
        return _concat_batches(parts)  # type: ignore[arg-type]

    def sample(self) -> Batch:
        """The next batch (``batch_size / len(games)`` transitions of each game)."""
        batch = self._next()
        if batch is None:
            raise ValueError(f"{self.where}: the stream is spent (its last pass ended after {self.batches_drawn} batches)")
        return batch

    def __iter__(self) -> Iterator[Batch]:
        """Batches until the last pass of some game is spent (forever when ``epochs`` is None)."""
        while (batch := self._next()) is not None:
            yield batch

    def close(self) -> None:
        """Stop the prefetching threads (also done when the sampler is garbage-collected). Drawing
        again afterwards re-reads each game's current block and continues where it was."""
        for stream in self._streams:
            stream.restart(stream.cursor, stream.pos)
        _close_all(self._prefetchers)
        self._prefetchers.clear()

    @property
    def skipped_shards(self) -> list[dict[str, str]]:
        return [s for stream in self._streams for s in stream.blocks.skipped]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable: every game's block cursor and position, the settings that fix the
        order, and the shards skipped so far."""
        return {
            "kind": STATE_KIND, "source": self.source, "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
            "batch_size": self.batch_size, "global_batch_size": self.batch_size * self.world_size, "games": list(self.games),
            "buffer_rows": self.buffer_size, "split": self.split, "holdout_fraction": self.holdout_fraction,
            "batches_drawn": self.batches_drawn, "streams": [s.state() for s in self._streams], "skipped_shards": self.skipped_shards,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next batches equal those of an uninterrupted sampler.
        Refuses (naming both values) a state of another world size, rank, batch, seed, buffer or shards."""
        if not isinstance(state, dict) or state.get("kind") != STATE_KIND:
            found = state.get("kind", "a memory-mapped sampler's") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"sampler state is {found!r} state, not a streaming sampler's: the checkpoint read its data from another "
                             f"kind of source than {self.where}; resume with the data.path it was trained on")
        if state.get("world_size") != self.world_size:
            raise ValueError(f"sampler state was saved by a run of {state.get('world_size')} process(es), this run has {self.world_size}: "
                             "a streamed run resumes exactly only on the same number of processes (each rank's shards and "
                             f"cursor are its own). Resume with {state.get('world_size')} processes (dist.world_size), or "
                             "import the shards into an Arrow folder (scaled-ql data import-parquet) and train from that")
        mine = {"rank": self.rank, "global_batch_size": self.batch_size * self.world_size, "games": list(self.games), "seed": self.seed,
                "buffer_rows": self.buffer_size, "split": self.split}
        for key, value in mine.items():
            if state.get(key) != value:
                raise ValueError(f"sampler state has {key}={state.get(key)!r} but this sampler has {key}={value!r}; the resumed batches would differ")
        for stream, saved in zip(self._streams, state["streams"]):
            names = [s.name for s in stream.blocks.shards]
            if saved["shards"] != names:
                raise ValueError(f"sampler state: game '{stream.blocks.game}' read shards {saved['shards']} on rank {self.rank}, "
                                 f"{self.where} now gives it {names}; resume with the shards it was trained on")
        self.close()
        for stream, saved in zip(self._streams, state["streams"]):
            stream.restart(saved["cursor"], int(saved["pos"]))
            stream.blocks.skipped[:] = [s for s in state.get("skipped_shards", []) if s["game"] == stream.blocks.game]
        self.batches_drawn = int(state["batches_drawn"])


def rank_shards(shards: Sequence[Any], rank: int, world_size: int, where: str) -> list[Any]:
    """Rank ``rank``'s shards: ``shards[rank::world_size]``; an error if some rank would get none."""
    if len(shards) < world_size:
        raise DatasetFormatError(f"{where}: {len(shards)} shard(s), fewer than world_size {world_size}: every rank must read its own "
                                 "shards (re-export with a smaller --rows-per-shard, at most the game's rows / world_size)")
    return list(shards[rank::world_size])


def _shard_opener(source: ShardSource, entry: dict[str, Any]):
    def open_at(skip: int) -> Iterator[pa.Table]:
        data = source.read_shard(entry)  # whole, checked against its size and sha256
        return iter_shard_tables(pa.BufferReader(data), source.frame_shape, where=f"Parquet shard '{source.url(entry['name'])}'", skip_rows=skip)
    return open_at


def open_hub_games(repo_id: str, games: Sequence[str], *, split: str = "train", **load_kwargs: Any) -> dict[str, Any]:
    """``datasets.load_dataset(repo_id, game, split=split, streaming=True)`` for every game (the
    Parquet card has one config per game), for :meth:`StreamingSampler.from_iterable_datasets`.
    Works for a local Parquet folder too."""
    from datasets import load_dataset  # heavy (about a second to import): loaded when first needed

    return {g: load_dataset(repo_id, g, split=split, streaming=True, **load_kwargs) for g in games}

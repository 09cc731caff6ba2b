"""One game's stream of shuffle buffers ("blocks") for the streaming sampler, and their prefetching.

A block is whole episodes of one game in RAM (:class:`EpisodeBlock`), with the order in which
its transitions are served. Everything about a block is a function of where it starts and the
seed, never of a running random state, which is what makes the stream resumable exactly:

* **pass** ``e``: the rank's shards of the game are visited in the order
  ``permutation(SeedSequence([seed, rank, world_size, game, e]))`` (or as listed);
* **block boundaries**: a block starts at a *cursor* (position ``k`` in that pass's shard order,
  row ``r`` of that shard, always an episode's first row) and closes at the first episode end at
  or past ``buffer_rows`` rows (it may span shards; it never spans passes: a pass's last block
  may be smaller). The boundaries depend on the rows alone, not on how they were read;
* **block** ``i`` of pass ``e`` serves its transition starts (filtered to the train or holdout
  episodes) in the order ``permutation(SeedSequence([seed, rank, world_size, game, e, i, 1]))``.

So ``(e, i, k, r)`` plus the position in the block's order is the whole state of a game's
stream (JSON): a resumed stream re-reads the block at ``(k, r)``, rebuilds its order from the
seed and continues at the saved position, drawing the transitions an uninterrupted one draws.

:class:`BlockPrefetcher` builds the next blocks in a background thread (reading, checking and
decompressing shards, decoding frames, Monte-Carlo returns, the shuffle), at most ``prefetch``
ahead; it runs the same generator, so prefetching never changes the order.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from scaled_ql.data.sampler import Sampler, holdout_episodes
from scaled_ql.data.schema import DatasetFormatError
from scaled_ql.data.shards import binary_to_frames

log = logging.getLogger(__name__)

ShardOpener = Callable[[int], Iterator[pa.Table]]
"""Opens one shard at a row (an episode's first) and yields tables of whole episodes from there."""


@dataclass(frozen=True)
class Shard:
    name: str
    open: ShardOpener


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


@dataclass
class Block:
    """A block ready to serve: where it starts, a sampler over it, its transition starts in serving order."""

    epoch: int
    index: int
    shard_pos: int
    row: int
    sampler: Sampler
    order: np.ndarray

    @property
    def cursor(self) -> dict[str, int]:
        return {"epoch": self.epoch, "block": self.index, "shard_pos": self.shard_pos, "row": self.row}


@dataclass
class GameBlocks:
    """How one game's blocks are made for one rank (see the module docstring)."""

    game: str
    shards: Sequence[Shard]
    frame_shape: tuple[int, ...]
    sampler_kw: dict[str, Any]
    buffer_rows: int
    entropy: tuple[int, ...]
    """(seed, rank, world_size, game index): the root of every seed of this stream."""
    where: str
    shuffle_shards: bool = True
    epochs: int | None = None
    split: str = "all"
    holdout_fraction: float = 0.0
    skip_bad_shards: bool = False
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Shards skipped for being unreadable (``skip_bad_shards``): name and reason, each once."""

    def shard_order(self, epoch: int) -> list[int]:
        if not self.shuffle_shards:
            return list(range(len(self.shards)))
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*self.entropy, epoch])))
        return rng.permutation(len(self.shards)).tolist()

    def blocks(self, epoch: int = 0, block: int = 0, shard_pos: int = 0, row: int = 0) -> Iterator[Block]:
        """The blocks from the one starting at this cursor on, pass after pass."""
        while self.epochs is None or epoch < self.epochs:
            order = self.shard_order(epoch)
            whole_pass, served = (shard_pos, row) == (0, 0), 0
            pending: list[pa.Table] = []
            rows, start = 0, (shard_pos, row)
            for k in range(shard_pos, len(order)):
                offset = row if k == shard_pos else 0
                for table in self._tables(self.shards[order[k]], offset):
                    while table.num_rows:
                        ends = np.flatnonzero(_flag(table, "terminal") | _flag(table, "truncated"))
                        reach = np.flatnonzero(ends + 1 >= self.buffer_rows - rows)
                        if reach.size == 0:
                            pending.append(table)
                            rows += table.num_rows
                            offset += table.num_rows
                            break
                        cut = int(ends[reach[0]]) + 1
                        pending.append(table.slice(0, cut))
                        offset += cut
                        made = self._block(epoch, block, start, pending)
                        if made is not None:
                            served += 1
                            yield made
                        block, start, pending, rows = block + 1, (k, offset), [], 0
                        table = table.slice(cut)
            if pending:
                made = self._block(epoch, block, start, pending)
                if made is not None:
                    served += 1
                    yield made
            if whole_pass and served == 0:
                which = "" if self.split == "all" else f" in the '{self.split}' split (holdout_fraction {self.holdout_fraction})"
                raise DatasetFormatError(f"{self.where}: game '{self.game}' has no transition{which} in this rank's "
                                         f"{len(self.shards)} shard(s) ({len(self.skipped)} skipped as unreadable)")
            epoch, block, shard_pos, row = epoch + 1, 0, 0, 0

    def _tables(self, shard: Shard, offset: int) -> Iterator[pa.Table]:
        """The shard's tables from ``offset``; with ``skip_bad_shards`` a shard that cannot be read
        (missing, truncated, failing its checksum, not Parquet) is skipped, recorded and logged."""
        try:
            tables = shard.open(offset)
            first = next(tables, None)
        except DatasetFormatError as err:
            if not self.skip_bad_shards:
                raise
            if shard.name not in {s["shard"] for s in self.skipped}:
                self.skipped.append({"game": self.game, "shard": shard.name, "reason": str(err)})
                log.warning("skipping unreadable shard (data.skip_bad_shards): %s", err)
            return
        if first is not None:
            yield first
            yield from tables

    def _block(self, epoch: int, index: int, start: tuple[int, int], tables: list[pa.Table]) -> Block | None:
        block = EpisodeBlock(self.game, tables, self.frame_shape, self.where)
        starts = block.valid_starts(0)
        if self.split != "all":  # whole episodes on one side, by a hash of their id (as Sampler)
            held = holdout_episodes(block.episode_id[starts], self.holdout_fraction)
            starts = starts[held == (self.split == "holdout")]
        if starts.size == 0:
            return None
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*self.entropy, epoch, index, 1])))
        sampler = Sampler(block, 1, **self.sampler_kw)  # type: ignore[arg-type]  # EpisodeBlock reads like a store
        return Block(epoch, index, start[0], start[1], sampler, starts[rng.permutation(starts.size)])


def _flag(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy().astype(bool, copy=False)


class BlockPrefetcher:
    """Runs a block generator ``prefetch`` blocks ahead in a daemon thread (0: in the caller's
    thread). ``next()`` returns the next block, None at the end, or raises what the generator raised."""

    def __init__(self, blocks: Iterator[Block], prefetch: int, name: str) -> None:
        self._blocks = blocks
        self._thread: threading.Thread | None = None
        self._last: Any = None
        if prefetch > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=_produce, args=(blocks, self._queue, self._stop), name=name, daemon=True)
            self._thread.start()

    def next(self) -> Block | None:
        if self._thread is None:
            return next(self._blocks, None)
        item = self._last if self._last is not None else self._queue.get()
        if not isinstance(item, Block):  # the end, or an error: the thread has stopped, so keep answering it
            self._last = item
        if isinstance(item, BaseException):
            raise item
        return None if item is _END else item

    def close(self) -> None:
        """Stop the thread after the block it is building, wait for it, and drop the queue: no read
        of a shard is left running in the background (one still running when the interpreter exits
        can abort the process inside pyarrow)."""
        if self._thread is not None:
            self._stop.set()
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._thread.join()  # the producer stops after its current block: put() gives up once stop is set
            self._thread = None


_END = object()
"""What the prefetch thread puts after the last block."""


def _produce(blocks: Iterator[Block], out: queue.Queue, stop: threading.Event) -> None:
    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for block in blocks:
            if not put(block):
                return
        put(_END)
    except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
        put(err)

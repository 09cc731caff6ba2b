"""Online fine-tuning data: a RAM replay of whole episodes, and batches mixing it with offline data.

:class:`OnlineStore` holds the episodes an :class:`scaled_ql.envs.actor.Actor` plays, in the
offline row convention (:mod:`scaled_ql.data.schema`): an episode of T steps is T + 1 rows,
row t holding frame t, the action taken there and the raw reward that followed; the last row
holds the final observation with action 0 and reward 0 and is marked ``terminal`` or
``truncated``. It exposes the attributes :class:`~scaled_ql.data.sampler.Sampler` reads from a
:class:`~scaled_ql.data.store.ReplayStore`, so the same sampler (same stacks, n-step returns,
per-game balance, Monte-Carlo returns) draws from it.

:class:`OfflineOnlineMix` draws each batch from an offline and an online sampler with an exact
number of each per game (TorchRL's ``OfflineToOnlineReplayBuffer``), with ``anneal``.

Layout of the online store: a ring of whole episodes
----------------------------------------------------
All columns are preallocated arrays of ``capacity_rows`` rows (frames ``[capacity, H, W]``:
untouched pages cost no memory). Episodes are written one after another from a write head;
an episode's rows are always contiguous (stacks and n-step returns index rows ``t - 3 .. t + n``
of one episode). When an episode does not fit between the head and the end of the arrays, the
head wraps to row 0 and the tail rows are freed. Before an episode is written, every episode
overlapping the rows it needs is evicted, oldest first, and every episode in a freed tail too,
so eviction is strictly FIFO over whole episodes and a row is never half of an episode. Rows
lost to fragmentation (a freed tail, the not yet overwritten rest of an evicted episode) stay
below twice the longest episode, so size ``capacity_rows`` well above ``max_episode_steps``.
Nothing is ever moved: writing an episode costs its own rows only.

Rows not held by a live episode are *free*: ``game_id`` -1 and ``episode_id`` -1 (like rows of
games outside the experiment in a ``ReplayStore``), ``is_last_row`` True, so they are never a
transition start and never inside a stack or an n-step window. Their pixels are stale and
never read.

Monte-Carlo returns-to-go (Cal-QL's V_ref) are computed once per episode, when it is written
(an episode is only written once it has ended), with the same function and the same clipping
as the offline sampler; so the store is built with the data config's ``gamma`` and
``reward_clip`` and the sampler checks they match its own.

Checkpointing: :meth:`OnlineStore.save` writes ``frames.npy`` (``np.save``,
``allow_pickle=False``), ``rows.safetensors`` (the per-row columns and the episode ring) and
``online_store.json`` (settings and counters), written last. :meth:`OnlineStore.load` restores
the exact layout, so a sampler over the loaded store draws exactly the rows it would have
drawn before. Nothing is pickled.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from scaled_ql.data.batch import Batch
from scaled_ql.data.schema import canonical_game_name
from scaled_ql.data.sampler import Sampler, discounted_returns_to_go

STATE_FILE = "online_store.json"
FRAMES_FILE = "frames.npy"
ROWS_FILE = "rows.safetensors"
FORMAT = "scaled_ql.online_store"
FORMAT_VERSION = 1

_COLUMNS = ("action", "reward", "terminal", "truncated", "episode_id", "step", "game_id", "episode_start", "episode_end", "mc_return")


class OnlineStore:
    """Finished episodes of online play in RAM, readable by :class:`Sampler` like a ``ReplayStore``.

    Args:
        games: the experiment's game list (ids ``games[i] -> i``, as in the offline store).
        capacity_rows: rows held at most (an episode of T steps takes T + 1 rows); the oldest
            whole episodes are evicted to make room (see the module docstring).
        frame_shape: ``(H, W)`` of a stored frame.
        gamma, reward_clip: the data config's discount and reward clip, used for ``mc_return``;
            a sampler with other values refuses the store.

    Attributes read by the sampler (arrays of ``capacity_rows`` rows; free rows have game_id
    -1): ``action`` int32, ``reward`` float32 (raw), ``terminal`` / ``truncated`` bool,
    ``episode_id`` int64, ``step`` int32, ``game_id`` int16, ``episode_start`` /
    ``episode_end`` int64, ``mc_return`` float32 (discounted return-to-go of clipped rewards),
    ``frames`` uint8 ``[capacity_rows, H, W]``; ``version`` changes with every write, so samplers
    refresh. ``len(store)`` is the number of rows held by live episodes.
    """

    def __init__(self, games: Sequence[str], capacity_rows: int, frame_shape: Sequence[int] = (84, 84), *,
                 gamma: float = 0.99, reward_clip: float = 1.0) -> None:
        self.games = tuple(canonical_game_name(g, "OnlineStore games") for g in games)
        if not self.games or len(set(self.games)) != len(self.games):
            raise ValueError(f"OnlineStore games {list(games)} must name at least one game, each once")
        if int(capacity_rows) < 2:
            raise ValueError(f"OnlineStore capacity_rows must be at least 2 (one step and its final observation), found {capacity_rows}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"OnlineStore gamma must be in (0, 1], found {gamma}")
        if reward_clip < 0:
            raise ValueError(f"OnlineStore reward_clip must be >= 0 (0 disables clipping), found {reward_clip}")
        self.capacity_rows = int(capacity_rows)
        self.frame_shape: tuple[int, int] = tuple(int(x) for x in frame_shape)  # type: ignore[assignment]
        self.gamma = float(gamma)
        self.reward_clip = float(reward_clip)
        self.paths = ("online replay",)  # what the sampler's error messages name
        self.version = 0
        self._reset()

    def _reset(self) -> None:
        cap = self.capacity_rows
        self.frames = np.zeros((cap, *self.frame_shape), dtype=np.uint8)
        self.action = np.zeros(cap, dtype=np.int32)
        self.reward = np.zeros(cap, dtype=np.float32)
        self.terminal = np.zeros(cap, dtype=np.bool_)
        self.truncated = np.zeros(cap, dtype=np.bool_)
        self.episode_id = np.full(cap, -1, dtype=np.int64)
        self.step = np.zeros(cap, dtype=np.int32)
        self.game_id = np.full(cap, -1, dtype=np.int16)
        self.episode_start = np.arange(cap, dtype=np.int64)
        self.episode_end = np.arange(cap, dtype=np.int64)
        self.mc_return = np.zeros(cap, dtype=np.float32)
        self._episodes: deque[tuple[int, int]] = deque()  # (first row, last row) of live episodes, oldest first
        self._head = 0  # where the next episode goes (before any wrap)
        self._used = 0  # rows ever written at the front of the arrays (high-water mark)
        self._rows = 0  # rows held by live episodes
        self.next_episode_id = 0
        self.episodes_evicted = 0
        self.version += 1

    # ------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._rows

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_transitions(self) -> int:
        """Transition starts held (rows minus one final row per episode)."""
        return self._rows - len(self._episodes)

    @property
    def episodes(self) -> list[tuple[int, int]]:
        """``(first row, last row)`` of every live episode, oldest first."""
        return list(self._episodes)

    @property
    def is_last_row(self) -> np.ndarray:
        """bool [capacity_rows]: an episode's last row, or a free row (neither starts a transition)."""
        return self.terminal | self.truncated | (self.game_id < 0)

    def valid_starts(self, game_id: int) -> np.ndarray:
        """Rows of game ``game_id`` that start a transition (every live row but an episode's last)."""
        return np.flatnonzero((self.game_id == game_id) & ~(self.terminal | self.truncated))

    def gather_frames(self, rows: np.ndarray) -> np.ndarray:
        """Frames of ``rows`` (any integer shape S) as a new uint8 array [*S, H, W]."""
        return self.frames[np.asarray(rows)]

    def counts_per_game(self) -> dict[str, int]:
        """Transition starts held per game."""
        live = self.game_id[~(self.terminal | self.truncated)]
        return {g: int((live == i).sum()) for i, g in enumerate(self.games)}

    # ------------------------------------------------------------------------------------------

    def add_episode(self, game: str | int, frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminal: bool) -> int:
        """Append one finished episode of T >= 1 steps; returns its episode id.

        ``frames`` uint8 ``[T + 1, H, W]`` (frame 0 .. T, the last the final observation),
        ``actions`` int ``[T]``, ``rewards`` float ``[T]`` (raw), ``terminal`` True if the game
        ended (False: truncated by a time limit). ``game`` is a name or an index into ``games``.
        Evicts the oldest whole episodes as needed.
        """
        game_id = self._game_index(game)
        name = self.games[game_id]
        frames, actions, rewards = np.asarray(frames), np.asarray(actions), np.asarray(rewards)
        where = f"OnlineStore.add_episode (game '{name}')"
        if actions.ndim != 1 or actions.shape[0] < 1:
            raise ValueError(f"{where}: actions must have shape [T] with T >= 1, found {list(actions.shape)}")
        steps = actions.shape[0]
        rows = steps + 1
        if rewards.shape != (steps,):
            raise ValueError(f"{where}: rewards must have shape [T] = [{steps}] like actions, found {list(rewards.shape)}")
        if frames.shape != (rows, *self.frame_shape) or frames.dtype != np.uint8:
            raise ValueError(f"{where}: frames must be uint8 [T + 1, H, W] = {[rows, *self.frame_shape]}, found {frames.dtype} {list(frames.shape)}")
        if not np.issubdtype(actions.dtype, np.integer) or actions.min() < 0:
            raise ValueError(f"{where}: actions must be non-negative integers, found {actions.dtype} with minimum {actions.min()}")
        if rows > self.capacity_rows:
            raise ValueError(f"{where}: an episode of {steps} steps needs {rows} rows but the store's capacity_rows is {self.capacity_rows}")

        start = self._make_room(rows)
        last = start + steps
        s = slice(start, last + 1)
        self.frames[s] = frames
        self.action[start:last] = actions
        self.action[last] = 0
        self.reward[start:last] = rewards
        self.reward[last] = 0.0
        self.terminal[s] = False
        self.truncated[s] = False
        self.terminal[last] = bool(terminal)
        self.truncated[last] = not bool(terminal)
        self.step[s] = np.arange(rows, dtype=np.int32)
        self.episode_id[s] = self.next_episode_id
        self.episode_start[s] = start
        self.episode_end[s] = last
        reward = self.reward[s]
        clipped = np.clip(reward, -self.reward_clip, self.reward_clip).astype(np.float32) if self.reward_clip > 0 else reward.astype(np.float32)
        self.mc_return[s] = discounted_returns_to_go(clipped, np.arange(rows) == steps, self.gamma)
        self.game_id[s] = game_id  # last: the rows become live

        self._episodes.append((start, last))
        self._head = last + 1
        self._used = max(self._used, last + 1)
        self._rows += rows
        self.next_episode_id += 1
        self.version += 1
        return self.next_episode_id - 1

    def _game_index(self, game: str | int) -> int:
        if isinstance(game, (int, np.integer)):
            if not 0 <= int(game) < len(self.games):
                raise ValueError(f"OnlineStore: game id {game} is not in [0, {len(self.games)}) (games {list(self.games)})")
            return int(game)
        name = canonical_game_name(str(game), "OnlineStore.add_episode")
        if name not in self.games:
            raise ValueError(f"OnlineStore.add_episode: game '{name}' is not one of the store's games {list(self.games)}")
        return self.games.index(name)

    def _make_room(self, rows: int) -> int:
        """Evict (FIFO) what occupies the next ``rows`` rows; returns the first of them."""
        head = self._head
        if head + rows > self.capacity_rows:  # wrap; episodes in the tail [head, cap) are the oldest
            while self._episodes and self._episodes[0][0] >= head:
                self._evict_oldest()
            head = 0
        while self._episodes and self._episodes[0][0] < head + rows and self._episodes[0][1] >= head:
            self._evict_oldest()
        return head

    def _evict_oldest(self) -> None:
        first, last = self._episodes.popleft()
        s = slice(first, last + 1)
        self.game_id[s] = -1
        self.episode_id[s] = -1
        self.terminal[s] = False
        self.truncated[s] = False
        self.action[s] = 0
        self.reward[s] = 0.0
        self.step[s] = 0
        self.mc_return[s] = 0.0
        self.episode_start[s] = np.arange(first, last + 1)
        self.episode_end[s] = np.arange(first, last + 1)
        self._rows -= last + 1 - first
        self.episodes_evicted += 1

    # ------------------------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {"games": list(self.games), "capacity_rows": self.capacity_rows, "frame_shape": list(self.frame_shape),
                "gamma": self.gamma, "reward_clip": self.reward_clip}

    def save(self, directory: str | Path) -> Path:
        """Write the store to ``directory`` (created): ``frames.npy``, ``rows.safetensors`` and,
        last, ``online_store.json``. No pickle. Returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        used = self._used
        np.save(directory / FRAMES_FILE, self.frames[:used], allow_pickle=False)
        tensors = {name: np.ascontiguousarray(getattr(self, name)[:used]) for name in _COLUMNS}
        tensors["episodes"] = np.array(list(self._episodes), dtype=np.int64).reshape(-1, 2)
        save_file(tensors, str(directory / ROWS_FILE))
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **self._settings(), "used_rows": used, "head": self._head,
                "rows": self._rows, "next_episode_id": self.next_episode_id, "episodes_evicted": self.episodes_evicted}
        (directory / STATE_FILE).write_text(json.dumps(meta, indent=1))
        return directory

    @staticmethod
    def _read_meta(directory: Path) -> dict[str, Any]:
        file = directory / STATE_FILE
        if not file.is_file():
            raise FileNotFoundError(f"no saved online store in '{directory}' (missing {STATE_FILE})")
        meta = json.loads(file.read_text())
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"'{file}': expected format {FORMAT!r} version {FORMAT_VERSION}, found {meta.get('format')!r} version {meta.get('format_version')}")
        return meta

    @classmethod
    def from_saved(cls, directory: str | Path) -> "OnlineStore":
        """A new store with the settings saved in ``directory`` and its contents."""
        meta = cls._read_meta(Path(directory))
        store = cls(meta["games"], meta["capacity_rows"], meta["frame_shape"], gamma=meta["gamma"], reward_clip=meta["reward_clip"])
        store.load(directory)
        return store

    def load(self, directory: str | Path) -> None:
        """Replace the contents with those saved in ``directory`` (same games, capacity, frame
        shape, gamma and reward_clip, else an error naming the setting)."""
        directory = Path(directory)
        meta = self._read_meta(directory)
        for key, mine in self._settings().items():
            if meta.get(key) != mine:
                raise ValueError(f"'{directory / STATE_FILE}' has {key}={meta.get(key)!r} but this store has {key}={mine!r}")
        used = int(meta["used_rows"])
        frames = np.load(directory / FRAMES_FILE, mmap_mode="r", allow_pickle=False)
        tensors = load_file(str(directory / ROWS_FILE))
        if frames.shape != (used, *self.frame_shape) or any(tensors[c].shape != (used,) for c in _COLUMNS):
            raise ValueError(f"'{directory}': {FRAMES_FILE} / {ROWS_FILE} do not hold the {used} rows {STATE_FILE} lists")
        self._reset()
        self.frames[:used] = frames
        for name in _COLUMNS:
            getattr(self, name)[:used] = tensors[name]
        self._episodes = deque((int(a), int(b)) for a, b in tensors["episodes"].tolist())
        self._used, self._head, self._rows = used, int(meta["head"]), int(meta["rows"])
        self.next_episode_id, self.episodes_evicted = int(meta["next_episode_id"]), int(meta["episodes_evicted"])
        self.version += 1

    def __repr__(self) -> str:
        return f"OnlineStore({self._rows}/{self.capacity_rows} rows, {self.num_episodes} episodes, games={list(self.games)})"


# ----------------------------------------------------------------------------------------------


class OfflineOnlineMix:
    """Batches of ``batch_size`` transitions, an exact number from each sampler, per game.

    Each game's ``batch_size / num_games`` transitions are split as
    ``round(offline_fraction * batch_size / num_games)`` offline (Python's ``round``) and the
    rest online. With one game (fine-tuning is per game) that is exactly
    ``round(offline_fraction * batch_size)`` offline, TorchRL's rule; with G games the offline
    total is G times the per-game count (so per-game balance holds in both parts), which equals
    ``round(offline_fraction * batch_size)`` whenever that is a multiple of G.

    Layout: the batch is grouped by game in ``games`` order, as the Sampler's (sample ``i``
    belongs to game ``i // (batch_size / G)``); within each game's block the offline transitions
    come first. :meth:`online_mask` says which samples of the last batch are online.

    While the online sampler has no transition of some game (the actor's first episodes have
    not ended), the whole batch is offline, as TorchRL's buffer does with an empty online
    buffer; :meth:`split` says which split the next batch gets.

    The two samplers must agree on games, frame stack, n-step, gamma and reward clip. Each
    keeps its own random stream; :meth:`state_dict` holds both (the online store itself is
    saved with :meth:`OnlineStore.save`). The online store is this process's own: build its
    sampler with ``rank=0, world_size=1`` when every process runs its own actor.
    """

    def __init__(self, offline: Sampler, online: Sampler, offline_fraction: float, *, batch_size: int | None = None) -> None:
        if list(offline.store.games) != list(online.store.games):
            raise ValueError(f"offline sampler games {list(offline.store.games)} and online sampler games {list(online.store.games)} differ; build both stores from the same 'games'")
        for key in ("frame_stack", "n_step", "gamma", "reward_clip"):
            if getattr(offline, key) != getattr(online, key):
                raise ValueError(f"offline sampler has {key}={getattr(offline, key)} but online sampler has {key}={getattr(online, key)}")
        if tuple(offline.store.frame_shape) != tuple(online.store.frame_shape):
            raise ValueError(f"offline frames are {list(offline.store.frame_shape)} but online frames are {list(online.store.frame_shape)}")
        self.offline, self.online = offline, online
        self.num_games = len(offline.store.games)
        self.batch_size = int(offline.batch_size if batch_size is None else batch_size)
        if self.batch_size < 1 or self.batch_size % self.num_games:
            raise ValueError(f"mix batch_size {self.batch_size} must be a positive multiple of the number of games ({self.num_games}: {list(offline.store.games)})")
        self.base_offline_fraction = self.offline_fraction = self._check_fraction(offline_fraction, "offline_fraction")
        self.batches_drawn = 0
        self._last_split: tuple[int, int] | None = None

    @staticmethod
    def _check_fraction(value: float, key: str) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{key} must be in [0, 1], found {value}")
        return float(value)

    def split(self) -> tuple[int, int]:
        """``(offline, online)`` transitions per game in the next batch."""
        per_game = self.batch_size // self.num_games
        offline = round(self.offline_fraction * per_game)
        if offline < per_game and not self.online.has_all_games:
            offline = per_game
        return offline, per_game - offline

    def sample(self) -> Batch:
        """The next mixed batch (offline stream first, then online; each advances only if used)."""
        offline, online = self.split()
        parts = []
        if offline:
            parts.append(self.offline.sample(offline * self.num_games))
        if online:
            parts.append(self.online.sample(online * self.num_games))
        self._last_split = (offline, online)
        self.batches_drawn += 1
        return _group_by_game(parts, self.num_games)

    def online_mask(self) -> np.ndarray:
        """bool [batch_size]: which samples of the last batch came from the online store."""
        if self._last_split is None:
            raise ValueError("online_mask: no batch drawn yet")
        offline, online = self._last_split
        return np.tile(np.r_[np.zeros(offline, np.bool_), np.ones(online, np.bool_)], self.num_games)

    def anneal(self, step: int, total_steps: int, final_fraction: float = 0.0) -> float:
        """Set ``offline_fraction`` linearly from its initial value (at step 0) to
        ``final_fraction`` (at ``total_steps`` and after); returns it. With
        ``final_fraction=0`` this is TorchRL's ``anneal(step, total_steps)``."""
        if total_steps <= 0:
            raise ValueError(f"anneal total_steps must be positive, found {total_steps}")
        final_fraction = self._check_fraction(final_fraction, "final_fraction")
        progress = min(max(step / total_steps, 0.0), 1.0)
        self.offline_fraction = self.base_offline_fraction + (final_fraction - self.base_offline_fraction) * progress
        return self.offline_fraction

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable: both samplers' states, the fractions and the batch count."""
        return {"offline": self.offline.state_dict(), "online": self.online.state_dict(), "batch_size": self.batch_size,
                "offline_fraction": self.offline_fraction, "base_offline_fraction": self.base_offline_fraction,
                "batches_drawn": self.batches_drawn, "games": list(self.offline.store.games)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (with the online store loaded from the same checkpoint,
        the next batches equal those of an uninterrupted run)."""
        for key, mine in (("batch_size", self.batch_size), ("games", list(self.offline.store.games))):
            if state.get(key) != mine:
                raise ValueError(f"mix state has {key}={state.get(key)!r} but this mix has {key}={mine!r}")
        self.offline.load_state_dict(state["offline"])
        self.online.load_state_dict(state["online"])
        self.offline_fraction = float(state["offline_fraction"])
        self.base_offline_fraction = float(state["base_offline_fraction"])
        self.batches_drawn = int(state["batches_drawn"])


def _group_by_game(parts: Sequence[Batch], num_games: int) -> Batch:
    """Concatenate batches that are each grouped by game into one grouped by game."""
    if len(parts) == 1:
        return parts[0]
    out: dict[str, Any] = {}
    for f in fields(Batch):
        values = [getattr(p, f.name) for p in parts]
        if any(v is None for v in values):
            out[f.name] = None
            continue
        blocks = [v.reshape(num_games, -1, *v.shape[1:]) for v in values]
        joined = np.concatenate(blocks, axis=1)
        out[f.name] = joined.reshape(-1, *joined.shape[2:])
    return Batch(**out)

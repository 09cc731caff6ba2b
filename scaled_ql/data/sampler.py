"""The sampler: uniform, per-game balanced n-step transitions with frame stacks built at sample time.

Everything per batch is vectorized numpy: the start rows are drawn for all games at once,
n-step returns are a masked ``[B, n]`` gather of clipped rewards, and the observation and
bootstrap stacks are one fancy-index gather ``[2B, K]`` of frames from the memory-mapped
store. The sampler owns its random generator; ``state_dict`` / ``load_state_dict`` resume it
exactly.

Transition from start row t of an episode whose last row is e (t < e):
  k         = min(n, e - t)                        steps until n or the episode's last row
  reward    = sum_{i<k} gamma^i * clip(r_{t+i})
  next_obs  = stack at row t + k
  discount  = 0 if row t + k is a terminal last row, else gamma^k
so a truncated episode (time limit, collection budget) bootstraps from its final observation,
and nothing ever crosses into the next episode. Stacks hold rows t-K+1 .. t, oldest first,
with zeros for rows before the episode's first.

Every batch also carries ``mc_return``, the discounted Monte-Carlo return-to-go of the start
row, computed once for all rows at construction (:func:`discounted_returns_to_go`):
  mc_return = sum_{t<=j<e} gamma^(j-t) * clip(r_j)
Cal-QL (Nakamoto et al., 2023) uses it as V_ref(s_t), the value of the data-collecting policy.
For a terminal episode it is that policy's exact return from s_t. For a truncated episode the
sum stops at the truncation (the unseen tail counts as 0, as in the Cal-QL reference code and
CORL's ``get_return_to_go``): a lower-information estimate that misses
sum_{j>=e} gamma^(j-t) clip(r_j), at most gamma^(e-t) * max abs(clip(r)) / (1 - gamma) in size
(large near the cut, negligible hundreds of steps before it). Where clipped rewards are
non-negative, as in most Atari games, it underestimates, so the Cal-QL bound is only weaker there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scaled_ql.data.batch import Batch
from scaled_ql.data.store import ReplayStore


def discounted_returns_to_go(reward: np.ndarray, last_row: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_{t<=j<e} gamma^(j-t) * reward_j for every row t, e the last row of t's episode
    (G_e = 0: the last row holds the final observation, its reward is never used).

    reward float [N] (already clipped); last_row bool [N], True at each episode's last row
    (rows of an episode are contiguous and ``last_row[-1]`` is True). Returns float32 [N].

    The recursion G_t = reward_t + gamma * G_{t+1} runs backwards over k = steps before the
    episode's end, vectorized over all episodes at once: iteration k updates row e - k of every
    episode with at least k steps (a prefix of the episodes sorted by length). The work is O(N),
    there are (longest episode) iterations (at most 27,000 for Atari's cap), and each G is computed
    in float64 exactly as the per-episode loop would. A cumulative sum weighted by gamma^(-t)
    would be one numpy call, but gamma^(-t) overflows float64 beyond t of about 70,000
    (gamma = 0.99) and its segment differences cancel catastrophically, so it is not used.
    """
    reward = np.asarray(reward)
    last_row = np.asarray(last_row, dtype=np.bool_)
    n = reward.shape[0]
    if reward.ndim != 1 or last_row.shape != (n,):
        raise ValueError(f"reward and last_row: expected two arrays of shape [N], found {list(reward.shape)} and {list(last_row.shape)}")
    returns = np.zeros(n, dtype=np.float64)
    if n == 0:
        return returns.astype(np.float32)
    if not last_row[-1]:
        raise ValueError(f"last_row: the final row ({n - 1}) must end an episode")
    ends = np.flatnonzero(last_row)
    steps = ends - np.concatenate(([-1], ends[:-1])) - 1  # transitions per episode (rows - 1)
    order = np.argsort(-steps, kind="stable")
    ends, steps = ends[order], steps[order]  # longest episode first
    # active[k - 1] = number of episodes with at least k steps.
    active = np.searchsorted(-steps, -np.arange(1, int(steps[0]) + 1), side="right")
    for k, count in enumerate(active.tolist(), start=1):
        rows = ends[:count] - k
        returns[rows] = reward[rows] + gamma * returns[rows + 1]
    return returns.astype(np.float32)


def holdout_episodes(episode_id: np.ndarray, fraction: float) -> np.ndarray:
    """Per row: True if its episode is held out. Deterministic in the episode id alone (a
    multiplicative hash), so the split does not depend on file order, seeds or world size."""
    mixed = episode_id.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # wraps modulo 2**64
    return (mixed >> np.uint64(40)).astype(np.float64) / float(1 << 24) < fraction


class Sampler:
    """Draws :class:`Batch` es of ``batch_size`` transitions, ``batch_size / num_games`` per game.

    Games appear in the order of ``store.games`` (sample ``i`` belongs to game
    ``i // (batch_size // num_games)``). ``batch_size`` is this rank's batch.

    All ranks share one stream of start rows (``SeedSequence(seed)``): each draw is the *global*
    batch's rows (``world_size * batch_size``, a few kilobytes of integers) and rank ``r`` keeps
    its own slice of every game's block, so only its own frames are gathered. Hence the global
    batch does not depend on how many processes share it: 2 processes with B/2 each see exactly
    the transitions 1 process with B sees, and a run saved by N processes resumes on M with the
    same data order.
    """

    def __init__(
        self,
        store: ReplayStore,
        batch_size: int,
        *,
        n_step: int = 3,
        gamma: float = 0.99,
        reward_clip: float = 1.0,
        frame_stack: int = 4,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        split: str = "all",
        holdout_fraction: float = 0.0,
    ) -> None:
        num_games = len(store.games)
        if split not in ("all", "train", "holdout"):
            raise ValueError(f"split must be 'all', 'train' or 'holdout', found {split!r}")
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), found {holdout_fraction}")
        if batch_size < 1 or batch_size % num_games:
            raise ValueError(f"batch_size {batch_size} must be a positive multiple of the number of games ({num_games}: {list(store.games)}) so every batch is balanced")
        if n_step < 1:
            raise ValueError(f"n_step must be at least 1, found {n_step}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], found {gamma}")
        if reward_clip < 0:
            raise ValueError(f"reward_clip must be >= 0 (0 disables clipping), found {reward_clip}")
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be at least 1, found {frame_stack}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.store = store
        self.batch_size = int(batch_size)
        self.per_game = self.batch_size // num_games
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        self.reward_clip = float(reward_clip)
        self.frame_stack = int(frame_stack)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.batches_drawn = 0
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed)))
        self.split = split
        self.holdout_fraction = float(holdout_fraction)
        self._discounts = (self.gamma ** np.arange(self.n_step + 1)).astype(np.float32)
        self._game = np.repeat(np.arange(num_games, dtype=np.int64), self.per_game)
        self._steps = np.arange(self.n_step, dtype=np.int64)
        self._stack_steps = np.arange(1 - self.frame_stack, 1, dtype=np.int64)
        self._store_version: int | None = None
        self.refresh()

    def refresh(self) -> None:
        """(Re)derive what the sampler precomputes from the store: clipped rewards, Monte-Carlo
        returns-to-go and each game's transition starts.

        A fixed :class:`ReplayStore` needs this once (the constructor calls it). A store that
        grows, such as :class:`scaled_ql.data.online.OnlineStore`, exposes an integer
        ``version`` that changes with every write; the sampler calls ``refresh`` itself before
        drawing whenever it changed, so rows written since are sampled. Such a store may also
        hold its own ``mc_return`` (computed once per episode, as each is written, with the
        store's ``gamma`` and ``reward_clip``, which must equal the sampler's), and it may still
        lack a game: the error then comes when a batch is drawn, not here.
        """
        store = self.store
        growing = hasattr(store, "version")
        self._store_version = getattr(store, "version", None)
        rewards = store.reward
        clip = self.reward_clip
        self._reward = np.clip(rewards, -clip, clip).astype(np.float32) if clip > 0 else rewards.astype(np.float32)
        mc_return = getattr(store, "mc_return", None)
        if mc_return is None:
            self._mc_return = discounted_returns_to_go(self._reward, store.is_last_row, self.gamma)
        else:
            for key, mine in (("gamma", self.gamma), ("reward_clip", self.reward_clip)):
                if float(getattr(store, key)) != mine:
                    raise ValueError(f"the store's mc_return was computed with {key}={getattr(store, key)} but the sampler has {key}={mine}; build both from the same data config")
            self._mc_return = mc_return
        starts = [store.valid_starts(g) for g in range(len(store.games))]
        if self.split != "all":  # whole episodes go to one side, chosen by a hash of their id
            held = holdout_episodes(store.episode_id, self.holdout_fraction)
            starts = [s[held[s] == (self.split == "holdout")] for s in starts]
        self._missing: str | None = None
        for game, s in zip(store.games, starts):
            if s.size == 0:
                where = "" if self.split == "all" else f" in the '{self.split}' split (holdout_fraction {self.holdout_fraction})"
                message = f"game '{game}' has no transition{where} in {[str(p) for p in store.paths]} (no episode with at least one step)"
                if not growing:
                    raise ValueError(message)
                self._missing = self._missing or message
        self._starts = np.concatenate(starts)
        self._start_count = np.array([s.size for s in starts], dtype=np.int64)[:, None]
        self._start_offset = np.cumsum([0] + [s.size for s in starts[:-1]]).astype(np.int64)[:, None]

    def _sync(self) -> None:
        """Refresh if the store has changed since the last refresh (a growing store's ``version``)."""
        if self._store_version is not None and self.store.version != self._store_version:
            self.refresh()

    @property
    def has_all_games(self) -> bool:
        """Every game has at least one transition to draw (always True for a fixed store)."""
        self._sync()
        return self._missing is None

    @classmethod
    def from_config(cls, store: ReplayStore, data_cfg, batch_size: int, *, frame_stack: int = 4, seed: int = 0,
                    rank: int = 0, world_size: int = 1, split: str = "all") -> "Sampler":
        """Build from a :class:`scaled_ql.config.DataConfig` (``n_step``, ``gamma``, ``reward_clip``,
        ``holdout_fraction``); ``split`` picks the training or the held-out episodes."""
        holdout = data_cfg.holdout_fraction
        return cls(
            store, batch_size, n_step=data_cfg.n_step, gamma=data_cfg.gamma, reward_clip=data_cfg.reward_clip,
            frame_stack=frame_stack, seed=seed, rank=rank, world_size=world_size,
            split=split if holdout > 0 else "all", holdout_fraction=holdout,
        )

    # ------------------------------------------------------------------------------------------

    def sample_rows(self, batch_size: int | None = None) -> np.ndarray:
        """Draw the next batch's start rows (int64 [B], grouped by game); advances the stream.

        ``batch_size`` (default: the sampler's) may differ from call to call, as when
        :class:`scaled_ql.data.online.OfflineOnlineMix` changes its offline share; it must be a
        positive multiple of the number of games.
        """
        per_game = self.per_game
        if batch_size is not None:
            games = len(self.store.games)
            if batch_size < 1 or batch_size % games:
                raise ValueError(f"batch_size {batch_size} must be a positive multiple of the number of games ({games}: {list(self.store.games)}) so every batch is balanced")
            per_game = batch_size // games
        self._sync()
        if self._missing is not None:
            raise ValueError(f"cannot draw a batch: {self._missing}; add episodes of every game before sampling")
        u = self._rng.integers(0, self._start_count, size=(len(self.store.games), per_game * self.world_size))
        u = u[:, self.rank * per_game:(self.rank + 1) * per_game]  # this rank's slice of each game
        self.batches_drawn += 1
        return self._starts[(self._start_offset + u).reshape(-1)]

    def sample(self, batch_size: int | None = None) -> Batch:
        """The next batch: ``batch_size / num_games`` uniform transition starts per game
        (``batch_size`` defaults to the sampler's)."""
        return self.batch_at(self.sample_rows(batch_size))

    def batch_at(self, rows: np.ndarray) -> Batch:
        """The transitions starting at ``rows`` (int [B], each not an episode's last row)."""
        store = self.store
        self._sync()
        rows = np.asarray(rows, dtype=np.int64)
        end = store.episode_end[rows]
        k = np.minimum(end - rows, self.n_step)
        if (k < 1).any():
            row = int(rows[np.argmax(k < 1)])
            raise ValueError(f"row {row} is the last row of its episode (episode_id {store.episode_id[row]}); it starts no transition")
        reward_rows = np.minimum(rows[:, None] + self._steps, end[:, None])
        rewards = np.where(self._steps < k[:, None], self._reward[reward_rows], np.float32(0))
        ret = rewards @ self._discounts[: self.n_step]
        boot = rows + k
        discount = np.where(store.terminal[boot], np.float32(0), self._discounts[k])

        first = store.episode_start[rows]
        stack_rows = np.concatenate((rows, boot))[:, None] + self._stack_steps  # [2B, K]
        first2 = np.concatenate((first, first))[:, None]
        padding = stack_rows < first2
        frames = store.gather_frames(np.maximum(stack_rows, first2))
        if padding.any():
            frames[padding] = 0
        b = rows.shape[0]
        return Batch(
            obs=frames[:b],
            action=store.action[rows].astype(np.int64),
            reward=ret.astype(np.float32, copy=False),
            discount=discount.astype(np.float32, copy=False),
            next_obs=frames[b:],
            game=store.game_id[rows].astype(np.int64),
            mc_return=self._mc_return[rows],
        )

    # ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state: the generator's state and how many batches were drawn."""
        return {
            "bit_generator": self._rng.bit_generator.state,
            "batches_drawn": self.batches_drawn,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "global_batch_size": self.batch_size * self.world_size,
            "games": list(self.store.games),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next batches equal those of an uninterrupted sampler."""
        if state.get("kind") == "streaming":
            raise ValueError("sampler state is a streaming sampler's (Parquet shards), not a memory-mapped one's; resume with the data.path it was trained on")
        mine_global = self.batch_size * self.world_size
        for key, mine in (("global_batch_size", mine_global), ("games", list(self.store.games))):
            if key in state and state[key] != mine:
                raise ValueError(f"sampler state has {key}={state[key]!r} but this sampler has {key}={mine!r}; the resumed batches would differ")
        try:
            self._rng.bit_generator.state = state["bit_generator"]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"sampler state: invalid 'bit_generator' entry ({err})") from None
        self.batches_drawn = int(state["batches_drawn"])

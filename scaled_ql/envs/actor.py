"""The online actor of fine-tuning: epsilon-greedy play in ALE, whole episodes into an OnlineStore.

One ale_py vector environment of ``num_envs`` environments per game (fine-tuning is usually
one game), with single frames (``frame_stack=1``, as data collection): the actor builds the
policy's 4-frame stacks itself, zero-filled at an episode's start, exactly as
``data_prep/rollout.py`` does and as the sampler rebuilds them from stored rows. Each
environment's running episode is kept in a per-env buffer; when it ends (terminal, the
protocol's frame cap, or ``max_episode_steps``) the whole episode, with its final observation
from ``info["final_obs"]`` (same-step autoreset), goes to the store in the offline row
convention. Rewards are stored raw; the returns reported for logging are raw game scores.

Per vector step the Python work is a few array assignments, one policy call per game and one
``env.step`` per game; only a finished episode is copied.

Randomness: per game, ``SeedSequence([seed, game_id])`` gives the actor's numpy generator
(exploration) and the environments' reset seed, as ``data_prep.rollout`` derives them, so the
actor with the rollout's seed, games, ``num_envs`` and epsilon plays the same episodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from scaled_ql.config import EnvConfig
from scaled_ql.envs.atari import make_vector_env
from scaled_ql.games import get_game

Policy = Callable[[np.ndarray, int], np.ndarray]
"""``policy(obs, game_id) -> actions``: obs uint8 [N, K, H, W] (oldest frame first, zeros before
the episode's first frame; the array is reused, copy it to keep it), ``game_id`` the game's
index in the store's ``games``; returns int [N] greedy actions in the game's action set."""



class EpisodeSink(Protocol):
    """Where the actor writes finished episodes (``scaled_ql.data.online.OnlineStore`` is one):
    its ``games`` fix the game ids, ``frame_shape`` and ``capacity_rows`` are checked against the
    protocol, and ``add_episode`` takes one whole episode (frames 0..T with the final observation,
    T actions and raw rewards, and whether it ended in a terminal state)."""

    games: Sequence[str]
    frame_shape: tuple[int, ...]
    capacity_rows: int

    def add_episode(self, game_id: int, frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminal: bool) -> Any: ...


_SEED_RANGE = 2**31  # ALE seeds are int32; a vector env uses seed .. seed + num_envs - 1


@dataclass(frozen=True, slots=True)
class EpsilonSchedule:
    """Exploration rate: linear from ``start`` to ``end`` over the first ``decay_steps``
    environment steps (summed over all environments and games), then ``end``."""

    start: float = 1.0
    end: float = 0.01
    decay_steps: int = 250_000

    def __post_init__(self) -> None:
        for key in ("start", "end"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"epsilon {key} must be a probability in [0, 1], found {getattr(self, key)}")
        if self.decay_steps < 0:
            raise ValueError(f"epsilon decay_steps must be >= 0, found {self.decay_steps}")

    def __call__(self, env_steps: int) -> float:
        if env_steps >= self.decay_steps:
            return self.end
        return self.start + (self.end - self.start) * env_steps / self.decay_steps


@dataclass
class ActorReport:
    """What :meth:`Actor.step` did: steps taken and the episodes that ended (in the order they
    were written to the store)."""

    env_steps: int = 0
    epsilon: float = 0.0
    episode_games: list[str] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    """Raw (unclipped) game scores."""
    episode_lengths: list[int] = field(default_factory=list)
    """Agent steps T (the episode took T + 1 rows)."""
    episode_terminal: list[bool] = field(default_factory=list)
    """False: truncated (frame cap or ``max_episode_steps``)."""

    @property
    def episodes(self) -> int:
        return len(self.episode_returns)

    def metrics(self) -> dict[str, float]:
        """Scalars for the logger: ``actor/*`` (return and length means only when episodes ended)."""
        out = {"actor/env_steps": float(self.env_steps), "actor/epsilon": self.epsilon, "actor/episodes": float(self.episodes)}
        if self.episodes:
            out["actor/return_mean"] = float(np.mean(self.episode_returns))
            out["actor/length_mean"] = float(np.mean(self.episode_lengths))
        return out


class _GameRunner:
    """One game's vector environment and its environments' running episodes."""

    def __init__(self, game: str, game_id: int, num_envs: int, env_cfg: EnvConfig, seed: int, max_episode_steps: int) -> None:
        self.game, self.game_id, self.num_envs = game, game_id, num_envs
        rng_seed, env_seed = np.random.SeedSequence([seed, game_id]).spawn(2)
        self.rng = np.random.default_rng(rng_seed)
        self.env = make_vector_env(game, num_envs, env_cfg, frame_stack=1, max_episode_steps=max_episode_steps)
        self.num_actions = int(self.env.single_action_space.n)
        size = env_cfg.frame_size
        cap = 1024
        self.frames = np.zeros((num_envs, cap, size, size), dtype=np.uint8)
        self.actions = np.zeros((num_envs, cap), dtype=np.int32)
        self.rewards = np.zeros((num_envs, cap), dtype=np.float32)
        self.pos = np.zeros(num_envs, dtype=np.int64)  # steps of each env's running episode
        self.stacks = np.zeros((num_envs, env_cfg.frame_stack, size, size), dtype=np.uint8)
        self._envs = np.arange(num_envs)
        self.reset(int(env_seed.generate_state(1)[0] % (_SEED_RANGE - num_envs)))

    def reset(self, env_seed: int) -> None:
        """Start new episodes in every environment (running ones are dropped)."""
        self.obs, _ = self.env.reset(seed=env_seed)
        self.pos[:] = 0
        self.stacks[:] = 0
        self.stacks[:, -1] = self.obs[:, 0]

    def _greedy(self, policy: Policy) -> np.ndarray:
        out = policy(self.stacks, self.game_id)
        where = f"policy output for game '{self.game}' (game_id {self.game_id})"
        try:
            arr = np.asarray(out)
        except Exception as err:  # e.g. a CUDA tensor
            raise TypeError(f"{where}: expected a numpy array of {self.num_envs} actions, found {type(out).__name__} ({err})") from None
        if arr.shape != (self.num_envs,) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{where}: expected {self.num_envs} integer actions, found {arr.dtype} {list(arr.shape)}")
        if arr.min() < 0 or arr.max() >= self.num_actions:
            raise ValueError(f"{where}: expected actions in [0, {self.num_actions}), found values from {arr.min()} to {arr.max()}")
        return arr

    def step(self, policy: Policy, epsilon: float) -> list[tuple[int, int, bool]]:
        """One vector step; returns ``(env, steps T, terminal)`` of each episode that ended, its
        rows (frames 0..T with the final observation at T) left in this env's buffers."""
        pos, envs = self.pos, self._envs
        if pos.max() + 2 > self.frames.shape[1]:  # room for this step's row and a final row
            cap = 2 * self.frames.shape[1]
            self.frames, self.actions, self.rewards = (_grow(b, cap) for b in (self.frames, self.actions, self.rewards))
        self.frames[envs, pos] = self.obs[:, 0]
        # Same draws in the same order as data_prep.rollout: uniform actions, then the coin.
        action = self.rng.integers(0, self.num_actions, size=self.num_envs)
        if epsilon < 1.0:
            action = np.where(self.rng.random(self.num_envs) < epsilon, action, self._greedy(policy))
        obs, reward, terminal, truncated, info = self.env.step(action)
        self.actions[envs, pos] = action
        self.rewards[envs, pos] = reward
        pos += 1
        done = terminal | truncated
        ended = []
        for e in np.flatnonzero(done).tolist():
            self.frames[e, pos[e]] = info["final_obs"][e, 0]
            ended.append((e, int(pos[e]), bool(terminal[e])))
        self.stacks[:, :-1] = self.stacks[:, 1:]
        self.stacks[done, :-1] = 0
        self.stacks[:, -1] = obs[:, 0]
        self.obs = obs
        return ended

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


def _grow(buffer: np.ndarray, cap: int) -> np.ndarray:
    grown = np.zeros((buffer.shape[0], cap, *buffer.shape[2:]), dtype=buffer.dtype)
    grown[:, : buffer.shape[1]] = buffer
    return grown


class Actor:
    """Plays ``games`` epsilon-greedily around ``policy`` and writes finished episodes to ``store``.

    Args:
        store: the online replay; its ``games`` fix the game ids passed to the policy.
        policy: ``policy(obs, game_id) -> actions`` (see :data:`Policy`); not called while
            epsilon is 1.
        env_cfg: the Atari protocol (frame size and stack, frameskip, sticky actions, cap).
        games: the games to play (default: all of the store's), one vector env each.
        num_envs: environments per game.
        epsilon: the exploration schedule, over environment steps.
        seed: seeds exploration and the environments (per game, as ``data_prep.rollout``).
        max_episode_steps: if > 0, also truncate episodes after this many agent steps.

    Resume: ALE's emulator and RNG state cannot be snapshotted through the vector env, so
    :meth:`state_dict` holds the counters and the actor's numpy generators only.
    :meth:`load_state_dict` restores those and **restarts every environment**: the episodes
    that were running when the checkpoint was written are dropped (they were never in the
    store), new ones start from a reset seeded by ``(seed, game_id, vector_steps)``. The store
    is checkpointed separately (:meth:`OnlineStore.save`) and keeps every finished episode. So a
    resumed run is deterministic given its checkpoint, but its online data differs from an
    uninterrupted run's from the resume on.
    """

    def __init__(self, store: EpisodeSink, policy: Policy, env_cfg: EnvConfig, *, games: Sequence[str] | None = None,
                 num_envs: int = 1, epsilon: EpsilonSchedule = EpsilonSchedule(), seed: int = 0, max_episode_steps: int = 0) -> None:
        if num_envs < 1:
            raise ValueError(f"Actor num_envs must be at least 1, found {num_envs}")
        names = list(store.games) if games is None else [get_game(g).name for g in games]
        missing = [g for g in names if g not in store.games]
        if missing or not names or len(set(names)) != len(names):
            raise ValueError(f"Actor games {names} must be distinct games of the store's games {list(store.games)}")
        if tuple(store.frame_shape) != (env_cfg.frame_size, env_cfg.frame_size):
            raise ValueError(f"config key 'env.frame_size' is {env_cfg.frame_size} but the online store holds {list(store.frame_shape)} frames")
        frame_cap = env_cfg.max_episode_frames if max_episode_steps <= 0 else min(env_cfg.max_episode_frames, max_episode_steps * env_cfg.frameskip)
        longest = math.ceil(frame_cap / env_cfg.frameskip) + 1
        if store.capacity_rows < longest:
            raise ValueError(f"the online store's capacity_rows ({store.capacity_rows}) is smaller than the longest possible episode "
                             f"({longest} rows: {frame_cap} frames at frameskip {env_cfg.frameskip}, plus the final observation)")
        self.store, self.policy, self.env_cfg = store, policy, env_cfg
        self.num_envs, self.epsilon, self.seed = int(num_envs), epsilon, int(seed)
        self.max_episode_steps = int(max_episode_steps)
        self.vector_steps = 0
        self.env_steps = 0
        self.episodes_finished = 0
        self.resumes = 0
        self._runners: list[_GameRunner] = []
        try:
            for g in names:
                self._runners.append(_GameRunner(g, store.games.index(g), self.num_envs, env_cfg, self.seed, self.max_episode_steps))
        except BaseException:
            self.close()
            raise

    @property
    def games(self) -> list[str]:
        return [r.game for r in self._runners]

    @property
    def running_steps(self) -> int:
        """Steps of the episodes still running (not in the store yet; dropped by a resume)."""
        return int(sum(r.pos.sum() for r in self._runners))

    def step(self, n: int = 1) -> ActorReport:
        """Advance every game's vector env ``n`` steps; finished episodes go to the store."""
        report = ActorReport()
        for _ in range(int(n)):
            epsilon = self.epsilon(self.env_steps)
            for runner in self._runners:
                for env, steps, terminal in runner.step(self.policy, epsilon):
                    self.store.add_episode(runner.game_id, runner.frames[env, : steps + 1], runner.actions[env, :steps],
                                           runner.rewards[env, :steps], terminal)
                    runner.pos[env] = 0
                    report.episode_games.append(runner.game)
                    report.episode_returns.append(float(runner.rewards[env, :steps].sum(dtype=np.float64)))
                    report.episode_lengths.append(steps)
                    report.episode_terminal.append(terminal)
                self.env_steps += self.num_envs
                report.env_steps += self.num_envs
            self.vector_steps += 1
        self.episodes_finished += report.episodes
        report.epsilon = self.epsilon(self.env_steps)
        return report

    # ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable: counters, settings and each game's generator state (no env state)."""
        return {"games": self.games, "num_envs": self.num_envs, "seed": self.seed, "epsilon": asdict(self.epsilon),
                "vector_steps": self.vector_steps, "env_steps": self.env_steps, "episodes_finished": self.episodes_finished,
                "resumes": self.resumes, "rng": {r.game: r.rng.bit_generator.state for r in self._runners}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counters and generators, and restart every environment (see the class docstring)."""
        for key, mine in (("games", self.games), ("num_envs", self.num_envs), ("seed", self.seed)):
            if state.get(key) != mine:
                raise ValueError(f"actor state has {key}={state.get(key)!r} but this actor has {key}={mine!r}")
        try:
            for r in self._runners:
                r.rng.bit_generator.state = state["rng"][r.game]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"actor state: invalid 'rng' entry ({err})") from None
        self.vector_steps, self.env_steps = int(state["vector_steps"]), int(state["env_steps"])
        self.episodes_finished = int(state["episodes_finished"])
        self.resumes = int(state.get("resumes", 0)) + 1
        for r in self._runners:
            seed = np.random.SeedSequence([self.seed, r.game_id, self.vector_steps]).generate_state(1)[0]
            r.reset(int(seed % (_SEED_RANGE - self.num_envs)))

    def close(self) -> None:
        """Close the environments (idempotent); counters and state stay readable."""
        for r in self._runners:
            r.close()

    def __enter__(self) -> "Actor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

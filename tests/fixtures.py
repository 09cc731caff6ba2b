"""A tiny synthetic dataset in the real on-disk format, with hand-chosen episodes.

Every frame encodes where it comes from: pixel [0, 0] is ``episode index + 1`` and every other
pixel is ``step + 1``, so a zero frame is padding and :func:`decode_frame` recovers
(episode index, step) from any frame of a sampled stack. :class:`SyntheticDataset` also gives
a plain-Python reference transition (:meth:`SyntheticDataset.expected_transition`) that tests
compare the vectorized sampler against.

Usage in a test::

    from tests.fixtures import write_synthetic_dataset
    data = write_synthetic_dataset(tmp_path / "data")
    store = ReplayStore(data.path, data.games)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaled_ql.data.schema import CollectionInfo
from scaled_ql.data.writer import write_dataset


@dataclass(frozen=True)
class SyntheticEpisode:
    game: str
    rewards: tuple[float, ...]
    """Raw rewards r_0 .. r_{T-1}; the episode has T = len(rewards) steps and T + 1 rows."""
    end: str
    """``"terminal"`` or ``"truncated"``."""


DEFAULT_EPISODES: tuple[SyntheticEpisode, ...] = (
    SyntheticEpisode("Pong", (0.0, 1.0, 0.0, -1.0, 0.0, 2.0), "terminal"),  # episode 0, T=6
    SyntheticEpisode("Pong", (5.0, -3.0), "truncated"),  # 1, T=2
    SyntheticEpisode("Pong", (0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0), "truncated"),  # 2, T=8
    SyntheticEpisode("Breakout", (1.0, 0.0, 0.0, 4.0, 0.0), "terminal"),  # 3, T=5
    SyntheticEpisode("Breakout", (7.0,), "terminal"),  # 4, T=1
    SyntheticEpisode("Breakout", (0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0), "truncated"),  # 5, T=7
)


def episode_id_of(index: int) -> int:
    """Episode ids in the fixture are deliberately not 0..E-1."""
    return 1000 + 7 * index


def action_of(index: int, step: int) -> int:
    return (index + step) % 3 + 1


def make_frame(index: int, step: int, frame_shape=(84, 84)) -> np.ndarray:
    frame = np.full(frame_shape, step + 1, dtype=np.uint8)
    frame[0, 0] = index + 1
    return frame


def decode_frame(frame: np.ndarray) -> tuple[int, int] | None:
    """(episode index, step) of a fixture frame, or None for an all-zero padding frame."""
    if not frame.any():
        return None
    index, step = int(frame[0, 0]) - 1, int(frame[1, 1]) - 1
    assert (frame == make_frame(index, step, frame.shape)).all(), "frame is not a whole fixture frame"
    return index, step


def decode_stack(stack: np.ndarray) -> list[tuple[int, int] | None]:
    return [decode_frame(f) for f in stack]


@dataclass
class SyntheticDataset:
    path: Path
    episodes: tuple[SyntheticEpisode, ...]
    games: list[str]
    """Games in order of first appearance."""
    # One entry per row, in row order:
    episode: np.ndarray
    step: np.ndarray
    game: np.ndarray
    reward: np.ndarray
    terminal: np.ndarray
    truncated: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.episode)

    def row_of(self, index: int, step: int) -> int:
        return int(np.flatnonzero((self.episode == index) & (self.step == step))[0])

    def expected_transition(self, index: int, t: int, *, n_step: int, gamma: float, reward_clip: float, frame_stack: int = 4) -> dict:
        """Plain-Python reference for the transition from step ``t`` of episode ``index``."""
        ep = self.episodes[index]
        T = len(ep.rewards)
        assert 0 <= t < T, "the last row is not a transition start"

        def clip(r: float) -> float:
            return max(-reward_clip, min(reward_clip, r)) if reward_clip > 0 else r

        ret, k = 0.0, 0
        while k < n_step and t + k < T:
            ret += gamma**k * clip(ep.rewards[t + k])
            k += 1
        reached_end = t + k == T
        discount = 0.0 if reached_end and ep.end == "terminal" else gamma**k

        def stack(s: int) -> list[tuple[int, int] | None]:
            return [(index, j) if j >= 0 else None for j in range(s - frame_stack + 1, s + 1)]

        return {
            "obs": stack(t),
            "action": action_of(index, t),
            "reward": ret,
            "discount": discount,
            "next_obs": stack(t + k),
            "game": ep.game,
        }


def episode_chunk(index: int, ep: SyntheticEpisode, frame_shape=(84, 84)) -> dict[str, np.ndarray]:
    T = len(ep.rewards)
    rows = T + 1
    last = np.arange(rows) == T
    return {
        "frame": np.stack([make_frame(index, s, frame_shape) for s in range(rows)]),
        "action": np.array([action_of(index, s) for s in range(T)] + [0], dtype=np.int32),
        "reward": np.array(list(ep.rewards) + [0.0], dtype=np.float32),
        "terminal": last & (ep.end == "terminal"),
        "truncated": last & (ep.end == "truncated"),
        "episode_id": np.full(rows, episode_id_of(index), dtype=np.int64),
        "step": np.arange(rows, dtype=np.int32),
        "game": np.array([ep.game] * rows),
    }


def write_synthetic_dataset(
    path: str | Path,
    episodes: tuple[SyntheticEpisode, ...] = DEFAULT_EPISODES,
    *,
    frame_shape=(84, 84),
    max_shard_size: int | None = None,
    shard_rows: int = 8,
) -> SyntheticDataset:
    """Write ``episodes`` (one chunk per episode) with the real writer and describe the rows.

    ``max_shard_size`` (bytes) small enough splits the folder into several Arrow files;
    ``shard_rows`` sets the record batch size, so even one file has several record batches.
    """
    path = Path(path)
    write_dataset(
        path,
        (episode_chunk(i, ep, frame_shape) for i, ep in enumerate(episodes)),
        collection=CollectionInfo(source="synthetic test fixture", policy="random", seed=0, command="tests/fixtures.py"),
        frame_shape=frame_shape,
        shard_rows=shard_rows,
        max_shard_size=max_shard_size,
    )
    lengths = [len(ep.rewards) + 1 for ep in episodes]
    games = list(dict.fromkeys(ep.game for ep in episodes))
    return SyntheticDataset(
        path=path,
        episodes=tuple(episodes),
        games=games,
        episode=np.repeat(np.arange(len(episodes)), lengths),
        step=np.concatenate([np.arange(n) for n in lengths]),
        game=np.repeat([ep.game for ep in episodes], lengths),
        reward=np.concatenate([list(ep.rewards) + [0.0] for ep in episodes]).astype(np.float32),
        terminal=np.concatenate([np.arange(n) == n - 1 if ep.end == "terminal" else np.zeros(n, bool) for n, ep in zip(lengths, episodes)]),
        truncated=np.concatenate([np.arange(n) == n - 1 if ep.end == "truncated" else np.zeros(n, bool) for n, ep in zip(lengths, episodes)]),
    )

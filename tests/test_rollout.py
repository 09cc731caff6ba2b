"""Collecting a dataset in real ALE: row structure, budgets, the card, and opening it with the store."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from data_prep.rollout import collect_dataset
from scaled_ql.config import ExperimentConfig, PrepConfig
from scaled_ql.data.schema import CARD_FILE, read_metadata
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore

pytestmark = pytest.mark.ale

STEPS = 301  # not a multiple of num_envs: env 0 records one step more than env 1


def small_config(**prep) -> ExperimentConfig:
    prep = {"steps_per_game": STEPS, "num_envs": 2, "max_episode_steps": 100, "shard_rows": 128, **prep}
    return ExperimentConfig(games=["Pong", "Breakout"], seed=5, prep=PrepConfig(**prep))


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("rollout") / "data"
    meta = collect_dataset(small_config(), out, progress=False, command="scaled-ql prep --config test")
    return out, meta


@pytest.mark.slow
def test_collection_writes_whole_episodes_within_budget(collected):
    out, meta = collected
    ds = datasets.load_from_disk(str(out)).with_format("numpy")
    rows = ds.select_columns(["action", "reward", "terminal", "truncated", "episode_id", "step", "game"])[:]
    assert meta.games["Pong"]["steps"] == meta.games["Breakout"]["steps"] == STEPS
    ends = np.flatnonzero(rows["terminal"] | rows["truncated"])
    assert ends[-1] == len(ds) - 1 and not (rows["terminal"] & rows["truncated"]).any()
    starts = np.concatenate(([0], ends[:-1] + 1))
    assert len(np.unique(rows["episode_id"])) == len(ends)
    for game in ("Pong", "Breakout"):
        game_rows = np.flatnonzero(rows["game"] == game)
        assert game_rows.size == meta.games[game]["rows"] and np.all(np.diff(game_rows) == 1), "rows are written game by game"
    for s, e in zip(starts, ends):
        T = e - s
        assert 1 <= T <= 100  # max_episode_steps truncates
        assert (rows["episode_id"][s : e + 1] == rows["episode_id"][s]).all()
        np.testing.assert_array_equal(rows["step"][s : e + 1], np.arange(T + 1))
        assert rows["action"][e] == 0 and rows["reward"][e] == 0
        if T == 100:
            assert rows["truncated"][e]
    # Budget: 151 + 150 steps per game; the episodes cut by the budget are truncated.
    assert rows["truncated"][ends].sum() >= 4
    assert rows["action"].max() < 6 and ds.features["action"].dtype == "int32"
    card = (out / CARD_FILE).read_text()
    assert "reinforcement-learning" in card and "sticky actions 0.25" in card and "scaled-ql prep --config test" in card
    assert "extra truncation after 100 agent steps" in card and "| Pong | 301 |" in card


@pytest.mark.slow
def test_collected_dataset_opens_in_the_store_and_samples(collected):
    out, meta = collected
    store = ReplayStore(out, ["Pong", "Breakout"])
    assert len(store) == meta.num_rows and read_metadata(out).collection["seed"] == 5
    frames = store.gather_frames(np.arange(0, len(store), 7))
    assert frames.dtype == np.uint8 and frames.shape[1:] == (84, 84) and frames.any()
    batch = Sampler(store, 32, seed=0).sample()
    assert batch.obs.shape == (32, 4, 84, 84) and set(batch.game.tolist()) == {0, 1}
    # A long episode's last row holds its final observation, not a next episode's first frame.
    first_frames = store.gather_frames(np.flatnonzero(store.step == 0))
    assert first_frames.shape[0] == store.num_episodes
    long_ends = np.flatnonzero(store.is_last_row & (store.step >= 50))
    assert long_ends.size
    for frame in store.gather_frames(long_ends):
        assert not (frame == first_frames).all(axis=(1, 2)).any()


@pytest.mark.slow
def test_collection_is_seeded_and_epsilon_greedy_uses_stacks(tmp_path):
    cfg = small_config(steps_per_game=40)
    a = collect_dataset(cfg, tmp_path / "a", progress=False)
    b = collect_dataset(cfg, tmp_path / "b", progress=False)
    assert [f["sha256"] for f in a.files] == [f["sha256"] for f in b.files]

    seen = []

    def always_two(obs, game_id):
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        seen.append((game_id, obs.copy()))
        return np.full(obs.shape[0], 2)

    greedy = small_config(steps_per_game=40, policy="epsilon_greedy", epsilon=0.0)
    collect_dataset(greedy, tmp_path / "c", policy=always_two, progress=False)
    actions = datasets.load_from_disk(str(tmp_path / "c"))["action"]
    store = ReplayStore(tmp_path / "c", ["Pong", "Breakout"])
    assert set(np.asarray(actions)[~store.is_last_row].tolist()) == {2}
    assert [g for g, _ in seen[:1]] == [0] and seen[-1][0] == 1
    first_obs = seen[0][1]
    assert (first_obs[:, :3] == 0).all() and first_obs[:, 3].any()  # zero-filled at the episode start
    np.testing.assert_array_equal(seen[1][1][:, 2], first_obs[:, 3])  # the stack shifts by one frame
    with pytest.raises(ValueError, match="prep.policy"):
        collect_dataset(greedy, tmp_path / "d", progress=False)

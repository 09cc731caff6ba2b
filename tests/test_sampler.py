"""The replay store and the sampler on the hand-made fixture: stacks, n-step returns, balance, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import SyntheticEpisode, decode_stack, write_synthetic_dataset

from scaled_ql.data.schema import DatasetFormatError
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore

GAMMA = 0.9


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # Several Arrow files (and record batches of 8 rows) so gathers cross file boundaries.
    return write_synthetic_dataset(tmp_path_factory.mktemp("sampler") / "data", max_shard_size=100_000)


@pytest.fixture(scope="module")
def store(data):
    return ReplayStore(data.path, data.games)


def make_sampler(store, batch_size=8, **kw):
    kw = {"n_step": 3, "gamma": GAMMA, "reward_clip": 1.0, **kw}
    return Sampler(store, batch_size, **kw)


def transition(batch, i):
    return {
        "obs": decode_stack(batch.obs[i]),
        "action": int(batch.action[i]),
        "reward": float(batch.reward[i]),
        "discount": float(batch.discount[i]),
        "next_obs": decode_stack(batch.next_obs[i]),
    }


def at(sampler, data, index, step):
    """The sampler's transition from (episode index, step), via batch_at."""
    return transition(sampler.batch_at(np.array([data.row_of(index, step)])), 0)


def test_store_rows_and_episode_starts(store, data):
    assert len(store) == data.num_rows and store.num_files == 3 and store.num_episodes == 6
    np.testing.assert_array_equal(store.game_id, [data.games.index(g) for g in data.game])
    np.testing.assert_array_equal(store.reward, data.reward)
    first = store.episode_start
    assert all(data.step[first[r]] == 0 and data.episode[first[r]] == data.episode[r] for r in range(len(store)))
    # frames are views of the memory-mapped file, not copies
    assert not store.frame(5).flags.owndata and not store.frame(5).flags.writeable


def test_stacks_at_episode_start_are_zero_padded(store, data):
    s = make_sampler(store)
    assert at(s, data, 3, 0)["obs"] == [None, None, None, (3, 0)]
    assert at(s, data, 3, 1)["obs"] == [None, None, (3, 0), (3, 1)]
    assert at(s, data, 3, 3)["obs"] == [(3, 0), (3, 1), (3, 2), (3, 3)]
    # Episode 1 follows episode 0 directly on disk: its first stack must not see episode 0.
    assert at(s, data, 1, 0)["obs"] == [None, None, None, (1, 0)]
    batch = s.batch_at(np.array([data.row_of(1, 0)]))
    assert (batch.obs[0, :3] == 0).all() and batch.obs.dtype == np.uint8 and batch.obs.shape == (1, 4, 84, 84)


def test_n_step_mid_episode(store, data):
    # Episode 2 (Pong, truncated, rewards 0 0 1 0 0 0 -1 0), from step 1: 0 + 0.9*1 + 0.81*0.
    t = at(make_sampler(store), data, 2, 1)
    assert t["reward"] == pytest.approx(0.9)
    assert t["discount"] == pytest.approx(0.9**3)
    assert t["obs"] == [None, None, (2, 0), (2, 1)]
    assert t["next_obs"] == [(2, 1), (2, 2), (2, 3), (2, 4)]
    assert t["action"] == (2 + 1) % 3 + 1


def test_n_step_terminal_within_n(store, data):
    # Episode 0 (Pong, terminal, rewards 0 1 0 -1 0 2), from step 4: k = 2 steps to the end.
    t = at(make_sampler(store), data, 0, 4)
    assert t["reward"] == pytest.approx(0.0 + 0.9 * 1.0)  # 2 clipped to 1
    assert t["discount"] == 0.0
    assert t["next_obs"] == [(0, 3), (0, 4), (0, 5), (0, 6)]  # the terminal row, never episode 1
    # Episode 4 (Breakout, one step, reward 7, terminal).
    t = at(make_sampler(store), data, 4, 0)
    assert t["reward"] == 1.0 and t["discount"] == 0.0
    assert t["obs"] == [None, None, None, (4, 0)] and t["next_obs"] == [None, None, (4, 0), (4, 1)]


def test_n_step_truncation_within_n_bootstraps(store, data):
    # Episode 1 (Pong, truncated, rewards 5 -3), from step 0: k = 2, bootstrap from the last row.
    t = at(make_sampler(store), data, 1, 0)
    assert t["reward"] == pytest.approx(1.0 - 0.9)
    assert t["discount"] == pytest.approx(0.9**2)
    assert t["next_obs"] == [None, (1, 0), (1, 1), (1, 2)]
    # Last step of episode 2: k = 1.
    t = at(make_sampler(store), data, 2, 7)
    assert t["reward"] == 0.0 and t["discount"] == pytest.approx(0.9)
    assert t["next_obs"] == [(2, 5), (2, 6), (2, 7), (2, 8)]


def test_reward_clipping(store, data):
    assert at(make_sampler(store, n_step=1), data, 1, 0)["reward"] == 1.0
    assert at(make_sampler(store, n_step=1, reward_clip=0.0), data, 1, 0)["reward"] == 5.0
    assert at(make_sampler(store, n_step=2, reward_clip=0.0), data, 1, 0)["reward"] == pytest.approx(5.0 - 0.9 * 3.0)
    assert at(make_sampler(store, n_step=1, reward_clip=2.5), data, 4, 0)["reward"] == 2.5


@pytest.mark.parametrize("n_step,reward_clip", [(1, 1.0), (3, 1.0), (5, 0.0)])
def test_every_start_matches_the_plain_python_reference(store, data, n_step, reward_clip):
    s = make_sampler(store, n_step=n_step, reward_clip=reward_clip)
    starts = np.flatnonzero(~(data.terminal | data.truncated))
    batch = s.batch_at(starts)
    for i, row in enumerate(starts):
        want = data.expected_transition(int(data.episode[row]), int(data.step[row]), n_step=n_step, gamma=GAMMA, reward_clip=reward_clip)
        got = transition(batch, i)
        assert got["obs"] == want["obs"] and got["next_obs"] == want["next_obs"] and got["action"] == want["action"], row
        assert got["reward"] == pytest.approx(want["reward"], rel=1e-6) and got["discount"] == pytest.approx(want["discount"], rel=1e-6), row
        assert store.games[batch.game[i]] == want["game"]


def test_sampled_batches_are_balanced_valid_and_cover_every_start(store, data):
    s = make_sampler(store, batch_size=64)
    seen = set()
    for _ in range(20):
        batch = s.sample()
        assert batch.obs.shape == batch.next_obs.shape == (64, 4, 84, 84)
        assert batch.action.dtype == batch.game.dtype == np.int64 and batch.reward.dtype == batch.discount.dtype == np.float32
        np.testing.assert_array_equal(batch.game, [0] * 32 + [1] * 32)  # exact balance, fixed order
        for i in range(64):
            index, step = decode_stack(batch.obs[i])[-1]
            assert step < len(data.episodes[index].rewards), "an episode's last row was sampled as a start"
            assert data.episodes[index].game == store.games[batch.game[i]]
            assert all(f is None or f[0] == index for f in decode_stack(batch.next_obs[i])), "crossed into another episode"
            seen.add((index, step))
    assert seen == {(i, t) for i, ep in enumerate(data.episodes) for t in range(len(ep.rewards))}


def test_an_episodes_last_row_starts_no_transition(store, data):
    with pytest.raises(ValueError, match="last row of its episode"):
        make_sampler(store).batch_at(np.array([data.row_of(0, 6)]))


def test_batch_size_must_split_evenly(store):
    with pytest.raises(ValueError, match="batch_size 7 .*multiple of the number of games \\(2"):
        Sampler(store, 7)


def test_determinism_ranks_and_exact_resume(store):
    a, b = make_sampler(store, seed=3), make_sampler(store, seed=3)
    for _ in range(3):
        x, y = a.sample(), b.sample()
        assert np.array_equal(x.obs, y.obs) and np.array_equal(x.reward, y.reward)
    r0, r1 = make_sampler(store, seed=3, rank=0, world_size=2), make_sampler(store, seed=3, rank=1, world_size=2)
    assert not all(np.array_equal(r0.sample_rows(), r1.sample_rows()) for _ in range(3))
    assert not np.array_equal(make_sampler(store, seed=4).sample_rows(), make_sampler(store, seed=3).sample_rows())

    uninterrupted = make_sampler(store, seed=11)
    for _ in range(4):
        uninterrupted.sample()
    state = json.loads(json.dumps(uninterrupted.state_dict()))  # must survive JSON
    assert state["batches_drawn"] == 4
    resumed = make_sampler(store, seed=999)
    resumed.load_state_dict(state)
    assert resumed.batches_drawn == 4
    for _ in range(5):
        x, y = uninterrupted.sample(), resumed.sample()
        for field in ("obs", "action", "reward", "discount", "next_obs", "game"):
            assert np.array_equal(getattr(x, field), getattr(y, field))
    with pytest.raises(ValueError, match="global_batch_size=8 but this sampler has global_batch_size=16"):
        make_sampler(store, batch_size=16).load_state_dict(state)


def test_ranks_split_one_global_batch(store):
    """2 ranks with B/2 each draw exactly the rows 1 rank with B draws (game by game), and a state
    saved by one layout resumes in the other."""
    single = make_sampler(store, seed=5, batch_size=8)
    halves = [make_sampler(store, seed=5, batch_size=4, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        whole = single.sample_rows().reshape(2, 4)  # [games, per-game rows]
        parts = [h.sample_rows().reshape(2, 2) for h in halves]
        assert np.array_equal(whole, np.concatenate(parts, axis=1))
    state = json.loads(json.dumps(halves[0].state_dict()))
    resumed = make_sampler(store, seed=0, batch_size=8)
    resumed.load_state_dict(state)
    assert np.array_equal(resumed.sample_rows(), single.sample_rows())


def test_store_game_list_must_match_the_data(data, tmp_path):
    with pytest.raises(DatasetFormatError, match=f"game 'Seaquest' .*no data in dataset folder.*{data.path}"):
        ReplayStore(data.path, ["Pong", "Breakout", "Seaquest"])
    with pytest.raises(DatasetFormatError, match=f"{data.path}' holds game 'Breakout', which is not in the experiment's games"):
        ReplayStore(data.path, ["Pong"])
    only_pong = ReplayStore(data.path, ["Pong"], ignore_extra_games=True)
    batch = Sampler(only_pong, 16).sample()
    assert (batch.game == 0).all()
    assert all(decode_stack(batch.obs[i])[-1][0] in (0, 1, 2) for i in range(16))
    # Game ids follow the experiment's order, not the data's.
    swapped = ReplayStore(data.path, ["Breakout", "Pong"])
    assert all(decode_stack(o)[-1][0] in (3, 4, 5) for o in Sampler(swapped, 8).sample().obs[:4])


def test_two_folders_are_one_store(data, tmp_path):
    extra = write_synthetic_dataset(tmp_path / "extra", (SyntheticEpisode("Pong", (1.0, 1.0, 1.0), "truncated"),))
    store = ReplayStore([data.path, extra.path], ["Pong", "Breakout"])
    assert len(store) == data.num_rows + 4 and store.num_files == 4
    last = store.episode_start[-1]
    assert last == data.num_rows and store.episode_end[-1] == len(store) - 1
    batch = Sampler(store, 2, n_step=3, gamma=GAMMA).batch_at(np.array([last]))
    assert batch.reward[0] == pytest.approx(1 + 0.9 + 0.81) and batch.discount[0] == pytest.approx(0.9**3)

"""Online fine-tuning data: the online store, the sampler over it, the offline/online mix, the actor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import DEFAULT_EPISODES, SyntheticDataset, SyntheticEpisode, decode_frame, decode_stack, episode_chunk, write_synthetic_dataset

from scaled_ql.data.online import OfflineOnlineMix, OnlineStore
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore

pytestmark = pytest.mark.ale

GAMMA = 0.9
ONLINE = 50  # online episodes of the tests use fixture indices >= ONLINE, so a frame tells its source


def add_fixture_episode(store: OnlineStore, index: int, ep: SyntheticEpisode) -> int:
    chunk = episode_chunk(index, ep)
    return store.add_episode(ep.game, chunk["frame"], chunk["action"][:-1], chunk["reward"][:-1], ep.end == "terminal")


def reference(episodes: dict[int, SyntheticEpisode]) -> SyntheticDataset:
    """The fixture's plain-Python transition reference, for episodes keyed by fixture index."""
    eps = tuple(episodes.get(i, SyntheticEpisode("Pong", (0.0,), "terminal")) for i in range(max(episodes) + 1))
    empty = np.zeros(0)
    return SyntheticDataset(Path("."), eps, ["Pong", "Breakout"], empty, empty, empty, empty, empty, empty)


def mc_by_hand(rewards, t, gamma=GAMMA, clip=1.0):
    return sum(gamma**j * max(-clip, min(clip, r)) for j, r in enumerate(rewards[t:]))


def transition(batch, i):
    return {"obs": decode_stack(batch.obs[i]), "action": int(batch.action[i]), "reward": float(batch.reward[i]),
            "discount": float(batch.discount[i]), "next_obs": decode_stack(batch.next_obs[i])}


def assert_batches_equal(a, b):
    for name in ("obs", "action", "reward", "discount", "next_obs", "game", "mc_return"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("online") / "data")


@pytest.fixture(scope="module")
def offline_store(data):
    return ReplayStore(data.path, data.games)


# ----------------------------------------------------------------------------------------------
# The store and the sampler over it


def test_online_rows_and_batches_equal_the_offline_ones(data, offline_store):
    online = OnlineStore(data.games, 100, gamma=GAMMA, reward_clip=1.0)
    ids = [add_fixture_episode(online, i, ep) for i, ep in enumerate(DEFAULT_EPISODES)]
    assert ids == list(range(6)) and online.num_episodes == 6 and len(online) == len(offline_store) == data.num_rows
    n = len(offline_store)
    for name in ("action", "reward", "terminal", "truncated", "step", "game_id", "episode_start", "episode_end"):
        np.testing.assert_array_equal(getattr(online, name)[:n], getattr(offline_store, name), err_msg=name)
    np.testing.assert_array_equal(online.gather_frames(np.arange(n)), offline_store.gather_frames(np.arange(n)))
    assert (online.game_id[n:] == -1).all() and online.is_last_row[n:].all()  # free rows start nothing
    for g in range(2):
        np.testing.assert_array_equal(online.valid_starts(g), offline_store.valid_starts(g))
    # The same sampler, same seed: identical transitions, n-step returns and Monte-Carlo returns.
    a = Sampler(offline_store, 8, n_step=3, gamma=GAMMA, seed=4)
    b = Sampler(online, 8, n_step=3, gamma=GAMMA, seed=4)
    for _ in range(3):
        assert_batches_equal(a.sample(), b.sample())
    every = np.flatnonzero(~offline_store.is_last_row)
    assert_batches_equal(a.batch_at(every), b.batch_at(every))


def test_sampler_transitions_and_mc_return_on_a_short_episode_by_hand():
    store = OnlineStore(["Pong", "Breakout"], 40, gamma=0.5, reward_clip=1.0)
    s = Sampler(store, 2, n_step=2, gamma=0.5, reward_clip=1.0)  # built on an empty store: fine, sampling is not
    with pytest.raises(ValueError, match="game 'Pong' has no transition in \\['online replay'\\]"):
        s.sample()
    add_fixture_episode(store, 0, SyntheticEpisode("Pong", (0.0, 2.0, -1.0), "terminal"))  # rows 0..3
    assert not s.has_all_games
    with pytest.raises(ValueError, match="game 'Breakout' has no transition"):
        s.sample()
    add_fixture_episode(store, 1, SyntheticEpisode("Breakout", (3.0,), "truncated"))  # rows 4..5
    assert s.has_all_games and store.counts_per_game() == {"Pong": 3, "Breakout": 1}
    b = s.batch_at(np.array([0, 1, 2, 4]))
    # clipped rewards 0 1 -1 | 1; n = 2, gamma 0.5
    np.testing.assert_allclose(b.reward, [0 + 0.5 * 1, 1 + 0.5 * -1, -1, 1])
    np.testing.assert_allclose(b.discount, [0.25, 0.0, 0.0, 0.5])  # t=1 and t=2 reach the terminal row; the truncation bootstraps
    np.testing.assert_allclose(b.mc_return, [0.25, 0.5, -1.0, 1.0])  # G2 = -1, G1 = 1 - 0.5, G0 = 0.5 * 0.5
    np.testing.assert_array_equal(b.game, [0, 0, 0, 1])
    assert decode_stack(b.obs[1]) == [None, None, (0, 0), (0, 1)]  # zeros before the episode's first frame
    assert decode_stack(b.next_obs[0]) == [None, (0, 0), (0, 1), (0, 2)]
    assert decode_stack(b.next_obs[3]) == [None, None, (1, 0), (1, 1)]  # the final observation, nothing of episode 0
    np.testing.assert_array_equal(b.action, [1, 2, 3, 2])  # fixture actions (index + step) % 3 + 1
    np.testing.assert_array_equal(store.mc_return[[3, 5]], [0.0, 0.0])
    assert all(int(g) in (0, 1) for g in s.sample().game)
    with pytest.raises(ValueError, match="gamma=0.5 but the sampler has gamma=0.99"):
        Sampler(store, 2)


def test_add_episode_checks_its_input():
    store = OnlineStore(["Pong"], 10)
    frames = np.zeros((3, 84, 84), np.uint8)
    with pytest.raises(ValueError, match="capacity_rows is 10"):
        store.add_episode("Pong", np.zeros((12, 84, 84), np.uint8), np.zeros(11, int), np.zeros(11), True)
    with pytest.raises(ValueError, match="frames must be uint8 \\[T \\+ 1, H, W\\] = \\[3, 84, 84\\]"):
        store.add_episode("Pong", frames[:2], np.zeros(2, int), np.zeros(2), True)
    with pytest.raises(ValueError, match="rewards must have shape"):
        store.add_episode("Pong", frames, np.zeros(2, int), np.zeros(3), True)
    with pytest.raises(ValueError, match="'Breakout' is not one of the store's games \\['Pong'\\]"):
        store.add_episode("Breakout", frames, np.zeros(2, int), np.zeros(2), True)
    assert len(store) == 0 and store.version == 1


def live_invariants(store: OnlineStore):
    """Every live episode is whole and consistent; every other row is free."""
    live = np.zeros(store.capacity_rows, bool)
    for first, last in store.episodes:
        s = slice(first, last + 1)
        live[s] = True
        assert (store.episode_start[s] == first).all() and (store.episode_end[s] == last).all()
        np.testing.assert_array_equal(store.step[s], np.arange(last + 1 - first))
        assert (store.episode_id[s] == store.episode_id[first]).all() and (store.game_id[s] >= 0).all()
        assert store.is_last_row[last] and not store.is_last_row[first:last].any()
    assert (store.game_id[~live] == -1).all() and live.sum() == len(store) <= store.capacity_rows
    ids = [int(store.episode_id[f]) for f, _ in store.episodes]
    assert ids == list(range(store.next_episode_id - len(ids), store.next_episode_id)), "the newest episodes, oldest first"


def test_eviction_is_fifo_over_whole_episodes_and_sampling_stays_inside_them():
    store = OnlineStore(["Pong", "Breakout"], 24, gamma=GAMMA)
    lengths = [5, 3, 7, 4, 6, 2, 8, 1, 9, 3, 5, 6, 2, 4, 7, 10, 3]
    episodes = {}
    s = Sampler(store, 4, n_step=3, gamma=GAMMA, seed=1)
    for k, T in enumerate(lengths):
        index = ONLINE + k
        ep = SyntheticEpisode(("Pong", "Breakout")[k % 2], tuple(float((k + j) % 3 - 1) for j in range(T)), ("terminal", "truncated")[k % 3 == 0])
        episodes[index] = ep
        assert add_fixture_episode(store, index, ep) == k
        live_invariants(store)
        assert store.episode_id[store.episodes[-1][0]] == k  # the newest is always held
        assert store.episodes_evicted + store.num_episodes == k + 1
        for first, last in store.episodes:  # frames belong to their episode
            assert [decode_frame(f) for f in store.gather_frames(np.arange(first, last + 1))] == [
                (ONLINE + int(store.episode_id[first]), j) for j in range(last + 1 - first)]
        if store.counts_per_game()["Pong"] and store.counts_per_game()["Breakout"]:
            ref = reference(episodes)
            rows = s.sample_rows()
            batch = s.batch_at(rows)
            for i, r in enumerate(rows):
                index, step = decode_frame(batch.obs[i, -1])
                assert store.episode_id[r] == index - ONLINE and store.step[r] == step
                expected = ref.expected_transition(index, step, n_step=3, gamma=GAMMA, reward_clip=1.0)
                got = transition(batch, i)
                assert got["obs"] == expected["obs"] and got["next_obs"] == expected["next_obs"] and got["action"] == expected["action"]
                assert got["reward"] == pytest.approx(expected["reward"], abs=1e-6) and got["discount"] == pytest.approx(expected["discount"], abs=1e-6)
                assert batch.mc_return[i] == pytest.approx(mc_by_hand(episodes[index].rewards, step), abs=1e-5)
    assert store.episodes_evicted >= 10


def test_the_ring_wraps_and_evicts_the_oldest_episodes_first():
    store = OnlineStore(["Pong"], 10)
    ep = lambda k, T: add_fixture_episode(store, ONLINE + k, SyntheticEpisode("Pong", (1.0,) * T, "terminal"))  # noqa: E731
    ep(0, 3), ep(1, 2), ep(2, 1)
    assert store.episodes == [(0, 3), (4, 6), (7, 8)] and len(store) == 9
    ep(3, 2)  # 3 rows do not fit at rows 9..11: wrap to 0, evicting episode 0 only
    assert store.episodes == [(4, 6), (7, 8), (0, 2)] and store.game_id[3] == -1 and store.game_id[9] == -1
    ep(4, 4)  # rows 3..7: evicts episodes 1 and 2 (episode 2 only partly overwritten: all of it goes)
    assert store.episodes == [(0, 2), (3, 7)] and (store.game_id[8:] == -1).all() and len(store) == 8
    ep(5, 2)  # rows 8..10 do not fit: wrap, evicting episode 3
    assert store.episodes == [(3, 7), (0, 2)] and store.episodes_evicted == 4
    assert [int(store.episode_id[f]) for f, _ in store.episodes] == [4, 5]
    live_invariants(store)

    store = OnlineStore(["Pong"], 10)
    ep(0, 7), ep(1, 1), ep(2, 7)  # episode 2 wraps over episode 0; episode 1 stays at rows 8..9
    assert store.episodes == [(8, 9), (0, 7)]
    ep(3, 2)  # wraps again: the older episode 1 in the tail goes before the newer episode 2
    assert store.episodes == [(0, 2)] and len(store) == 3 and store.episodes_evicted == 3
    live_invariants(store)


def test_save_and_load_restore_the_exact_layout_without_pickle(tmp_path):
    store = OnlineStore(["Pong", "Breakout"], 30, gamma=GAMMA)
    for k, T in enumerate([6, 9, 4, 8, 7, 5]):  # wraps and evicts
        add_fixture_episode(store, ONLINE + k, SyntheticEpisode(("Pong", "Breakout")[k % 2], tuple([1.0] * T), "terminal"))
    out = store.save(tmp_path / "online")
    assert sorted(p.name for p in out.iterdir()) == ["frames.npy", "online_store.json", "rows.safetensors"]
    assert np.load(out / "frames.npy", allow_pickle=False).dtype == np.uint8  # a plain array, no pickled objects
    loaded = OnlineStore.from_saved(out)
    assert loaded.episodes == store.episodes and len(loaded) == len(store) and loaded.next_episode_id == 6
    for name in ("frames", "action", "reward", "terminal", "truncated", "episode_id", "step", "game_id", "episode_start", "episode_end", "mc_return"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(store, name), err_msg=name)
    # The write head is restored too: the next episode lands in the same rows of both.
    for s in (store, loaded):
        add_fixture_episode(s, ONLINE + 6, SyntheticEpisode("Pong", (1.0, 0.0, 0.0), "truncated"))
    assert loaded.episodes == store.episodes
    with pytest.raises(ValueError, match="capacity_rows=30 but this store has capacity_rows=40"):
        OnlineStore(["Pong", "Breakout"], 40, gamma=GAMMA).load(out)
    with pytest.raises(FileNotFoundError, match="online_store.json"):
        OnlineStore.from_saved(tmp_path / "nothing")


# ----------------------------------------------------------------------------------------------
# The mix


def online_store_with(games, count=4, capacity=200):
    store = OnlineStore(games, capacity, gamma=GAMMA)
    episodes = {}
    for k in range(count):
        ep = SyntheticEpisode(games[k % len(games)], tuple(float(j % 2) for j in range(3 + k)), ("terminal", "truncated")[k % 2])
        episodes[ONLINE + k] = ep
        add_fixture_episode(store, ONLINE + k, ep)
    return store, episodes


def sources(batch, data, online_episodes):
    """Per sample: (is online, expected mc_return) from the decoded start frame."""
    out = []
    for frame in batch.obs[:, -1]:
        index, step = decode_frame(frame)
        rewards = online_episodes[index].rewards if index >= ONLINE else data.episodes[index].rewards
        out.append((index >= ONLINE, mc_by_hand(rewards, step)))
    return out


def test_mix_draws_exact_offline_and_online_counts_per_game(data, offline_store):
    online, online_eps = online_store_with(data.games)
    offline = Sampler(offline_store, 12, n_step=3, gamma=GAMMA, seed=0)
    mix = OfflineOnlineMix(offline, Sampler(online, 12, n_step=3, gamma=GAMMA, seed=1), 0.5)
    for fraction, expected in ((0.5, (3, 3)), (1.0, (6, 0)), (0.0, (0, 6)), (0.25, (2, 4)), (0.4, (2, 4))):
        mix.offline_fraction = fraction
        assert mix.split() == expected  # per game: round(fraction * 6); 0.25 * 6 = 1.5 rounds to 2
        for _ in range(2):
            batch = mix.sample()
            assert len(batch) == 12
            np.testing.assert_array_equal(batch.game, np.repeat([0, 1], 6))  # grouped by game, like the Sampler's
            got = sources(batch, data, online_eps)
            is_online = np.array([o for o, _ in got])
            np.testing.assert_array_equal(is_online, mix.online_mask())
            np.testing.assert_array_equal(is_online, np.tile([False] * expected[0] + [True] * expected[1], 2))
            for g, game in enumerate(data.games):  # the decoded frames belong to the right game in both parts
                for frame in batch.obs[6 * g : 6 * g + 6, -1]:
                    index, _ = decode_frame(frame)
                    assert (online_eps[index] if index >= ONLINE else data.episodes[index]).game == game
            np.testing.assert_allclose(batch.mc_return, [m for _, m in got], atol=1e-5)  # V_ref carried from both stores
    # Anneal as TorchRL: linear from the initial fraction to final_fraction (default 0).
    assert mix.anneal(0, 100) == 0.5 and mix.anneal(50, 100) == 0.25 and mix.anneal(200, 100) == 0.0
    assert mix.split() == (0, 6) and mix.anneal(50, 100, final_fraction=1.0) == 0.75 and mix.split() == (4, 2)


def test_mix_of_one_game_uses_round_of_the_fraction_times_the_batch(data, tmp_path):
    offline_store = ReplayStore(data.path, ["Pong"], ignore_extra_games=True)
    online, eps = online_store_with(["Pong"], count=3)
    mix = OfflineOnlineMix(Sampler(offline_store, 10, gamma=GAMMA), Sampler(online, 10, gamma=GAMMA), 0.3)
    batch = mix.sample()
    assert mix.split() == (3, 7) and int(mix.online_mask().sum()) == 7
    assert [o for o, _ in sources(batch, data, eps)] == [False] * 3 + [True] * 7


def test_mix_falls_back_to_offline_until_every_game_has_online_data_and_checks_its_samplers(data, offline_store):
    online = OnlineStore(data.games, 100, gamma=GAMMA)
    add_fixture_episode(online, ONLINE, SyntheticEpisode("Pong", (1.0, 0.0), "terminal"))
    mix = OfflineOnlineMix(Sampler(offline_store, 4, gamma=GAMMA), Sampler(online, 4, gamma=GAMMA), 0.5)
    assert mix.split() == (2, 0)
    mix.sample()
    assert not mix.online_mask().any()
    add_fixture_episode(online, ONLINE + 1, SyntheticEpisode("Breakout", (1.0,), "terminal"))
    assert mix.split() == (1, 1)
    with pytest.raises(ValueError, match="n_step=3 but online sampler has n_step=1"):
        OfflineOnlineMix(Sampler(offline_store, 4, gamma=GAMMA), Sampler(online, 4, gamma=GAMMA, n_step=1), 0.5)
    with pytest.raises(ValueError, match="online sampler games \\['Pong'\\]"):
        OfflineOnlineMix(Sampler(offline_store, 4), Sampler(online_store_with(["Pong"])[0], 4, gamma=GAMMA), 0.5)
    with pytest.raises(ValueError, match="mix batch_size 5 must be a positive multiple of the number of games"):
        OfflineOnlineMix(Sampler(offline_store, 4, gamma=GAMMA), Sampler(online, 4, gamma=GAMMA), 0.5, batch_size=5)
    with pytest.raises(ValueError, match="offline_fraction must be in \\[0, 1\\]"):
        OfflineOnlineMix(Sampler(offline_store, 4, gamma=GAMMA), Sampler(online, 4, gamma=GAMMA), 1.5)


def test_mix_state_and_online_store_round_trip_to_the_same_next_batches(data, offline_store, tmp_path):
    def build(store):
        return OfflineOnlineMix(Sampler(offline_store, 8, gamma=GAMMA, seed=5), Sampler(store, 8, gamma=GAMMA, seed=6), 0.75)

    store, _ = online_store_with(data.games, count=5, capacity=34)  # a small ring: the later episode evicts
    mix = build(store)
    mix.anneal(10, 40)
    for _ in range(3):
        mix.sample()
    store.save(tmp_path / "ckpt" / "online")
    state = json.loads(json.dumps(mix.state_dict()))  # JSON only

    later = SyntheticEpisode("Breakout", (1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0), "terminal")
    add_fixture_episode(store, ONLINE + 9, later)
    expected = [mix.sample() for _ in range(4)]

    resumed_store = OnlineStore.from_saved(tmp_path / "ckpt" / "online")
    resumed = build(resumed_store)
    resumed.load_state_dict(state)
    assert resumed.offline_fraction == mix.anneal(10, 40) and resumed.batches_drawn == 3
    add_fixture_episode(resumed_store, ONLINE + 9, later)
    for want in expected:
        assert_batches_equal(resumed.sample(), want)
    with pytest.raises(ValueError, match="batch_size=8 but this mix has batch_size=4"):
        OfflineOnlineMix(Sampler(offline_store, 4, gamma=GAMMA), Sampler(resumed_store, 4, gamma=GAMMA), 0.5).load_state_dict(state)


# ----------------------------------------------------------------------------------------------
# The actor, in real ALE


def stack_policy(num_actions):
    """A deterministic greedy policy that depends on every frame of the stack."""
    def policy(obs, game_id):
        weights = np.arange(1, obs.shape[1] + 1, dtype=np.int64)
        return (obs.reshape(obs.shape[0], obs.shape[1], -1).sum(-1, dtype=np.int64) @ weights // 7) % num_actions[game_id]
    return policy


@pytest.mark.slow
def test_actor_writes_the_episodes_data_prep_rollout_writes(tmp_path):
    from data_prep.rollout import collect_dataset
    from scaled_ql.config import ExperimentConfig, PrepConfig
    from scaled_ql.envs.actor import Actor, EpsilonSchedule

    games, steps, num_envs = ["Pong", "Breakout"], 420, 2
    policy = stack_policy([6, 4])
    cfg = ExperimentConfig(games=games, seed=3, prep=PrepConfig(steps_per_game=steps * num_envs, num_envs=num_envs, max_episode_steps=200,
                                                               policy="epsilon_greedy", epsilon=0.5, shard_rows=512))
    collect_dataset(cfg, tmp_path / "rollout", policy=policy, progress=False)
    offline = ReplayStore(tmp_path / "rollout", games)

    store = OnlineStore(games, 3000, gamma=GAMMA)
    with Actor(store, policy, cfg.env, num_envs=num_envs, epsilon=EpsilonSchedule(0.5, 0.5, 0), seed=3, max_episode_steps=200) as actor:
        # The rollout's env e plays `steps` steps and then writes its running episode (cut by the
        # budget) as truncated: after steps - 1 steps the actor has written every other episode.
        report = actor.step(steps - 1)
    assert report.env_steps == (steps - 1) * num_envs * 2 == actor.env_steps and report.epsilon == 0.5
    assert store.episodes_evicted == 0
    kinds = set()
    for g, game in enumerate(games):
        expected = [(s, e) for s, e in zip(np.flatnonzero(offline.step == 0), np.flatnonzero(offline.is_last_row)) if offline.game_id[s] == g]
        expected = expected[:-num_envs]  # each env's budget-cut last episode
        got = [(s, e) for s, e in store.episodes if store.game_id[s] == g]
        assert len(got) == len(expected) >= 2
        for (s0, e0), (s1, e1) in zip(expected, got):
            assert e0 - s0 == e1 - s1
            for name in ("action", "reward", "terminal", "truncated", "step"):
                np.testing.assert_array_equal(getattr(offline, name)[s0 : e0 + 1], getattr(store, name)[s1 : e1 + 1], err_msg=f"{game} {name}")
            np.testing.assert_array_equal(offline.gather_frames(np.arange(s0, e0 + 1)), store.gather_frames(np.arange(s1, e1 + 1)))
            kinds.add(("terminal" if store.terminal[e1] else "truncated", game))
        # What the actor reports for its episodes matches what it wrote.
        mine = [i for i, name in enumerate(report.episode_games) if name == game]
        assert [report.episode_lengths[i] for i in mine] == [e - s for s, e in got]
        np.testing.assert_allclose([report.episode_returns[i] for i in mine], [store.reward[s : e + 1].sum() for s, e in got])
    assert ("terminal", "Breakout") in kinds and ("truncated", "Pong") in kinds
    metrics = report.metrics()
    assert metrics["actor/episodes"] == report.episodes and "actor/return_mean" in metrics


@pytest.mark.slow
def test_actor_policy_stacks_equal_the_sampler_stacks_of_the_stored_rows():
    from scaled_ql.config import EnvConfig
    from scaled_ql.envs.actor import Actor, EpsilonSchedule

    seen = []

    def fire_and_record(obs, game_id):
        assert obs.shape == (1, 4, 84, 84) and obs.dtype == np.uint8 and game_id == 0
        seen.append(obs[0].copy())
        return np.array([1])

    store = OnlineStore(["Breakout"], 500, gamma=GAMMA)
    with Actor(store, fire_and_record, EnvConfig(), epsilon=EpsilonSchedule(0.0, 0.0, 0), seed=1, max_episode_steps=40) as actor:
        report = actor.step(130)
    assert report.episode_lengths == [40, 40, 40] and report.episode_terminal == [False] * 3 and actor.running_steps == 10
    assert store.truncated[[40, 81, 122]].all() and not store.terminal.any()
    assert (store.action[[40, 81, 122]] == 0).all() and (store.action[store.valid_starts(0)] == 1).all()
    starts = store.valid_starts(0)  # rows of the 3 episodes but their last: one per policy call, in order
    batch = Sampler(store, 1, n_step=1, gamma=GAMMA).batch_at(starts)
    np.testing.assert_array_equal(batch.obs, np.stack(seen[:120]))
    assert (batch.obs[0, :3] == 0).all() and batch.obs[0, 3].any()  # zero-filled at the episode's start
    assert (batch.obs[40, :3] == 0).all() and (batch.obs[41, :2] == 0).all()  # and again at the next one


@pytest.mark.slow
def test_actor_resume_keeps_counters_and_generators_and_restarts_running_episodes():
    from scaled_ql.config import EnvConfig
    from scaled_ql.envs.actor import Actor, EpsilonSchedule

    policy = stack_policy([4])
    schedule = EpsilonSchedule(1.0, 0.1, 100)

    def make(store):
        return Actor(store, policy, EnvConfig(), num_envs=2, epsilon=schedule, seed=7, max_episode_steps=30)

    store = OnlineStore(["Breakout"], 400, gamma=GAMMA)
    with make(store) as actor:
        first = actor.step(45)
        assert first.episodes == 2 and actor.running_steps == 30 and first.epsilon == pytest.approx(1.0 - 0.9 * 90 / 100)
        state = json.loads(json.dumps(actor.state_dict()))
    held = len(store)
    runs = []
    for _ in range(2):  # a resume is deterministic given the checkpoint
        resumed_store = OnlineStore(["Breakout"], 400, gamma=GAMMA)
        with make(resumed_store) as resumed:
            resumed.load_state_dict(state)
            assert resumed.env_steps == 90 and resumed.episodes_finished == 2 and resumed.running_steps == 0 and resumed.resumes == 1
            assert resumed.state_dict()["rng"] == state["rng"]
            report = resumed.step(31)
            assert report.episodes == 2 and report.episode_lengths == [30, 30]  # restarted episodes, not continued ones
            runs.append(resumed_store.gather_frames(np.arange(len(resumed_store))))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert len(store) == held
    with Actor(OnlineStore(["Breakout"], 400), policy, EnvConfig(), num_envs=2, seed=8, max_episode_steps=30) as other:
        with pytest.raises(ValueError, match="actor state has seed=7 but this actor has seed=8"):
            other.load_state_dict(state)


def test_actor_refuses_a_store_too_small_for_an_episode_and_other_games():
    from scaled_ql.config import EnvConfig
    from scaled_ql.envs.actor import Actor

    with pytest.raises(ValueError, match="capacity_rows \\(100\\) is smaller than the longest possible episode \\(27001 rows"):
        Actor(OnlineStore(["Pong"], 100), stack_policy([6]), EnvConfig())
    with pytest.raises(ValueError, match="must be distinct games of the store's games \\['Pong'\\]"):
        Actor(OnlineStore(["Pong"], 100), stack_policy([6]), EnvConfig(), games=["Breakout"], max_episode_steps=10)
    with pytest.raises(ValueError, match="'env.frame_size' is 84 but the online store holds \\[64, 64\\]"):
        Actor(OnlineStore(["Pong"], 100, (64, 64)), stack_policy([6]), EnvConfig(), max_episode_steps=10)

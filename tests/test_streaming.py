"""Streaming from Parquet shards: the same transitions as Sampler, balanced batches, disjoint ranks."""

from __future__ import annotations

import dataclasses

import datasets
import numpy as np
import pytest
from fixtures import decode_stack, write_synthetic_dataset

from scaled_ql.data.batch import Batch
from scaled_ql.data.schema import DatasetFormatError
from scaled_ql.data.parquet import export_parquet
from scaled_ql.data.shards import read_parquet_metadata
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore
from scaled_ql.data.streaming import StreamingSampler, open_hub_games, rank_shards

FIELDS = tuple(f.name for f in dataclasses.fields(Batch))  # obs, action, reward, discount, next_obs, game, (mc_return)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streaming")
    data = write_synthetic_dataset(tmp / "arrow")
    export_parquet(data.path, tmp / "pq", rows_per_shard=2, row_group_rows=3)  # a shard per episode: 3 per game
    data.parquet = tmp / "pq"
    return data


def _all(batches):
    batches = list(batches)
    return {name: np.concatenate([getattr(b, name) for b in batches]) for name in FIELDS if getattr(batches[0], name) is not None}


def _origins(stacks):
    """(episode, step) of each stack's newest frame."""
    return [decode_stack(s)[-1] for s in stacks]


@pytest.mark.parametrize("n_step,gamma,reward_clip", [(3, 0.99, 1.0), (5, 0.9, 0.0)])
def test_transitions_equal_sampler_batch_at_each_once_per_pass(data, n_step, gamma, reward_clip):
    store = ReplayStore(data.path, data.games)
    reference = Sampler(store, len(data.games), n_step=n_step, gamma=gamma, reward_clip=reward_clip)
    for game_id, game in enumerate(data.games):
        stream = StreamingSampler.from_parquet(data.parquet, [game], 1, buffer_size=4, epochs=1, seed=7,
                                               n_step=n_step, gamma=gamma, reward_clip=reward_clip)
        got = _all(stream)
        rows = np.array([data.row_of(*o) for o in _origins(got["obs"])])
        # Every transition of the game exactly once.
        assert sorted(rows.tolist()) == store.valid_starts(game_id).tolist()
        want = reference.batch_at(rows)
        for name in FIELDS:
            if name != "game":
                np.testing.assert_array_equal(got[name], getattr(want, name), err_msg=name)
        assert (got["game"] == 0).all()  # id within this sampler's games


def test_batches_are_balanced_deterministic_and_shuffled(data):
    def first(seed, k=6):
        it = iter(StreamingSampler.from_parquet(data.parquet, ["Breakout", "Pong"], 4, buffer_size=20, seed=seed))
        return [next(it) for _ in range(k)]

    a, b, c = first(0), first(0), first(1)
    for batch in a:
        assert batch.game.tolist() == [0, 0, 1, 1]
        assert [o[0] for o in _origins(batch.obs[:2])] in ([3, 3], [3, 4], [4, 3], [3, 5], [5, 3], [4, 5], [5, 4], [5, 5])  # Breakout episodes
        assert all(o[0] in (0, 1, 2) for o in _origins(batch.obs[2:]))
    for x, y in zip(a, b):
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
    order_a = [o for batch in a for o in _origins(batch.obs)]
    order_c = [o for batch in c for o in _origins(batch.obs)]
    assert order_a != order_c
    pong_rows = [data.row_of(*o) for o in order_a if o[0] in (0, 1, 2)]
    assert len(pong_rows) == 12 and pong_rows != sorted(pong_rows)  # served shuffled, not in row order


def test_stacks_never_cross_episodes(data):
    got = _all(StreamingSampler.from_parquet(data.parquet, None, 2, buffer_size=3, epochs=1, n_step=4))
    for stack in [*got["obs"], *got["next_obs"]]:
        frames = decode_stack(stack)
        real = [f for f in frames if f is not None]
        assert frames[: len(frames) - len(real)] == [None] * (len(frames) - len(real))  # zeros only before the first frame
        assert len({e for e, _ in real}) == 1
        steps = [s for _, s in real]
        assert steps == list(range(steps[0], steps[0] + len(steps)))
        if len(real) < 4:
            assert steps[0] == 0


def test_ranks_read_disjoint_shards(data):
    meta = read_parquet_metadata(data.parquet)
    shards = [f["name"] for f in meta["files"] if f["game"] == "Pong"]
    assert len(shards) == 3
    mine = [rank_shards(shards, r, 2, "Pong") for r in range(2)]
    assert mine == [shards[0::2], shards[1::2]]
    episodes = []
    for rank in range(2):
        seen = set()
        for game in data.games:
            got = _all(StreamingSampler.from_parquet(data.parquet, [game], 1, epochs=1, rank=rank, world_size=2))
            seen |= {o[0] for o in _origins(got["obs"])}
        episodes.append(seen)
    assert not episodes[0] & episodes[1]
    assert episodes[0] | episodes[1] == set(range(len(data.episodes)))
    with pytest.raises(DatasetFormatError, match="3 shard\\(s\\), fewer than world_size 4"):
        StreamingSampler.from_parquet(data.parquet, None, 2, rank=0, world_size=4)


def test_iterable_datasets_split_by_node(data, tmp_path):
    """The Hub path (datasets streaming, one config per game), run on the local folder."""
    store = ReplayStore(data.path, data.games)
    reference = Sampler(store, len(data.games))
    seen = []
    for rank in range(3):
        sources = open_hub_games(str(data.parquet), ["Pong"], cache_dir=str(tmp_path / "cache"))
        got = _all(StreamingSampler.from_iterable_datasets(sources, 1, rank=rank, world_size=3, epochs=1, buffer_size=100))
        rows = np.array([data.row_of(*o) for o in _origins(got["obs"])])
        want = reference.batch_at(rows)
        for name in FIELDS:
            np.testing.assert_array_equal(got[name], getattr(want, name), err_msg=name)  # Pong is game 0 in both
        seen.append(set(rows.tolist()))
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    assert sorted(set.union(*seen)) == store.valid_starts(0).tolist()


def test_errors_name_the_culprit(data, tmp_path):
    with pytest.raises(ValueError, match="multiple of the number of games"):
        StreamingSampler.from_parquet(data.parquet, None, 3)
    with pytest.raises(DatasetFormatError, match="has no game 'Boxing'"):
        StreamingSampler.from_parquet(data.parquet, ["Boxing"], 1)
    with pytest.raises(DatasetFormatError, match="not a scaled_ql Parquet folder"):
        StreamingSampler.from_parquet(data.path, None, 2)

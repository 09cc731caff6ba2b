"""The streaming sampler's exact resume, holdout split, prefetching and faults (missing,
truncated and corrupt shards; remote reads that fail and are retried, or stop naming the shard)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fixtures import write_synthetic_dataset

from scaled_ql.data.parquet import export_parquet
from scaled_ql.data.sampler import Sampler, holdout_episodes
from scaled_ql.data.shard_source import ShardReadError, ShardSource, read_url_bytes, resolve_location
from scaled_ql.data.store import ReplayStore
from scaled_ql.data.streaming import StreamingSampler
from tests.test_streaming import FIELDS, _all, _origins


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streaming_resume")
    data = write_synthetic_dataset(tmp / "arrow")
    export_parquet(data.path, tmp / "pq", rows_per_shard=2, row_group_rows=3)  # a shard per episode: 3 per game
    data.parquet = tmp / "pq"
    return data


def _same(a, b):
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("prefetch,split", [(0, "all"), (2, "all"), (1, "train")])
def test_resumed_stream_draws_the_same_batches(data, prefetch, split):
    """Stopped after k batches (across buffers and passes), saved as JSON, restored into a fresh
    sampler: the next batches equal an uninterrupted sampler's. Prefetching changes nothing."""
    kw = dict(buffer_size=5, seed=3, prefetch=prefetch, split=split, holdout_fraction=0.3 if split != "all" else 0.0)
    make = lambda: StreamingSampler.from_parquet(data.parquet, None, 4, **kw)  # noqa: E731
    uninterrupted = make()
    want = [uninterrupted.sample() for _ in range(30)]
    unprefetched = StreamingSampler.from_parquet(data.parquet, None, 4, **{**kw, "prefetch": 0})
    for batch in want:
        _same(batch, unprefetched.sample())
    for k in (0, 1, 4, 11, 23):
        first = make()
        for _ in range(k):
            first.sample()
        state = json.loads(json.dumps(first.state_dict()))  # JSON, nothing pickled
        first.close()  # its threads stop; drawing again continues where it was
        _same(want[k], first.sample())
        first.close()
        resumed = make()
        resumed.load_state_dict(state)
        assert resumed.batches_drawn == k
        for batch in want[k:k + 7]:
            _same(batch, resumed.sample())
        resumed.close()
    uninterrupted.close()


def test_holdout_split_and_mc_return_match_the_memory_mapped_sampler(data):
    store = ReplayStore(data.path, data.games)
    fraction = 0.4
    held = holdout_episodes(store.episode_id, fraction)
    assert 0 < held.sum() < held.size  # both sides non-empty on this fixture
    for split in ("train", "holdout"):
        reference = Sampler(store, len(data.games), split=split, holdout_fraction=fraction)
        got = [_all(StreamingSampler.from_parquet(data.parquet, [g], 1, epochs=1, buffer_size=4, split=split, holdout_fraction=fraction))
               for g in data.games]  # one game each: a pass of each, whole
        got = {name: np.concatenate([g[name] for g in got]) for name in got[0]}
        rows = np.array([data.row_of(*o) for o in _origins(got["obs"])])
        assert sorted(rows.tolist()) == sorted(reference._starts.tolist())  # every transition of the split, once
        assert (held[rows] == (split == "holdout")).all()  # whole episodes, by the hash of their id
        want = reference.batch_at(rows)
        for name in FIELDS:
            if name != "game":
                np.testing.assert_array_equal(got[name], getattr(want, name), err_msg=name)  # mc_return included


def test_state_of_another_world_size_or_source_kind_is_refused(data):
    two = StreamingSampler.from_parquet(data.parquet, None, 2, rank=0, world_size=2)
    two.sample()
    one = StreamingSampler.from_parquet(data.parquet, None, 2)
    with pytest.raises(ValueError, match=r"saved by a run of 2 process\(es\), this run has 1.*same number of processes"):
        one.load_state_dict(two.state_dict())
    store = ReplayStore(data.path, data.games)
    with pytest.raises(ValueError, match="streaming sampler's.*not a memory-mapped"):
        Sampler(store, 2).load_state_dict(one.state_dict())
    with pytest.raises(ValueError, match="not a streaming sampler's"):
        one.load_state_dict(Sampler(store, 2).state_dict())
    for s in (one, two):
        s.close()


def _copy(data, tmp_path):
    shutil.copytree(data.parquet, tmp_path / "pq")
    return tmp_path / "pq"


@pytest.mark.parametrize("damage,message,word", [
    ("delete", "is missing", "missing"),
    ("truncate", r"truncated or modified: \d+ bytes, expected \d+", "truncated"),
    ("flip", "failed its checksum: sha256", "checksum"),
])
def test_a_bad_shard_mid_run_is_named_or_skipped_and_recorded(data, tmp_path, damage, message, word):
    folder = _copy(data, tmp_path)
    shard = folder / "data/Pong/train-00001-of-00003.parquet"
    stream = StreamingSampler.from_parquet(folder, ["Pong"], 1, buffer_size=3, prefetch=1)  # the folder was whole when it started
    if damage == "delete":
        shard.unlink()
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-100])
    else:
        raw = bytearray(shard.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        shard.write_bytes(bytes(raw))
    with pytest.raises(ShardReadError, match=f"Parquet shard '{shard}'.*{message}"):
        for _ in range(40):
            stream.sample()
    skipping = StreamingSampler.from_parquet(folder, ["Pong"], 1, buffer_size=3, epochs=2, skip_bad_shards=True)
    seen = {o[0] for o in _origins(_all(skipping)["obs"])}
    assert seen == {0, 2}  # the episode of the bad shard is left out, the others are served
    skipped = skipping.state_dict()["skipped_shards"]
    assert [s["shard"] for s in skipped] == ["data/Pong/train-00001-of-00003.parquet"] and word in skipped[0]["reason"]
    stream.close()


class FlakyReader:
    """The transport of a remote source, failing the first ``fail`` reads of each shard of ``which``."""

    def __init__(self, fail: int, which: str = "train-00001", short: bool = False) -> None:
        self.fail, self.which, self.short, self.calls = fail, which, short, {}

    def __call__(self, url: str) -> bytes:
        data = read_url_bytes(url)
        if self.which in url:
            self.calls[url] = self.calls.get(url, 0) + 1
            if self.calls[url] <= self.fail:
                if self.short:
                    return data[: len(data) // 2]  # a transfer cut short
                raise ConnectionResetError(104, "Connection reset by peer")
        return data


def test_a_url_source_reads_like_the_local_folder_and_retries_with_backoff(data):
    url = data.parquet.resolve().as_uri()  # file:///...: the fsspec path that hf:// and s3:// take
    for short in (False, True):
        waits = []
        source = ShardSource(url, retries=3, retry_wait_s=0.5, read_bytes=FlakyReader(2, short=short), sleep=waits.append)
        assert source.kind == "url" and source.fingerprint()["sha256"] == ShardSource(data.parquet).fingerprint()["sha256"]
        remote = StreamingSampler.from_parquet(source, None, 2, buffer_size=4, epochs=1)
        for a, b in zip(_all(remote).items(), _all(StreamingSampler.from_parquet(data.parquet, None, 2, buffer_size=4, epochs=1)).items()):
            np.testing.assert_array_equal(a[1], b[1], err_msg=a[0])
        assert sorted(waits) == [0.5, 0.5, 1.0, 1.0]  # two failures on each of the two shards named train-00001

    waits = []
    source = ShardSource(url, retries=2, retry_wait_s=0.25, read_bytes=FlakyReader(99), sleep=waits.append)
    stream = StreamingSampler.from_parquet(source, ["Pong"], 1, buffer_size=3)
    with pytest.raises(ShardReadError, match=r"Parquet shard 'file://.*/data/Pong/train-00001-of-00003.parquet': reading failed 3 time\(s\).*ConnectionResetError"):
        for _ in range(40):
            stream.sample()
    assert waits == [0.25, 0.5]


def test_locations_resolve_to_their_kind(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert resolve_location("data/not-made-yet") == ("parquet", "data/not-made-yet")  # a local typo, not a Hub lookup
    assert resolve_location(str(data.parquet)) == ("parquet", str(data.parquet))
    assert resolve_location("user/atari40") == ("hub", "hf://datasets/user/atari40")
    assert resolve_location("user/atari40@v1.0") == ("hub", "hf://datasets/user/atari40@v1.0")
    assert resolve_location("hf://datasets/user/atari40/") == ("hub", "hf://datasets/user/atari40")
    assert resolve_location("s3://bucket/atari40") == ("url", "s3://bucket/atari40")
    assert resolve_location(str(tmp_path / "nothing" / "here")) == ("parquet", str(tmp_path / "nothing" / "here"))

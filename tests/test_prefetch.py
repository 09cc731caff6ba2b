"""The prefetch thread changes when batches are drawn, never which: the same batches in the same
order, the sampler state of the last batch the loop took (so checkpoints resume exactly), and a
failure of the draw raised where the loop takes its batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import write_synthetic_dataset
from safetensors.torch import load_file

from scaled_ql.data.prefetch import Prefetcher
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore
from scaled_ql.train.checkpoint import latest_checkpoint
from scaled_ql.train.trainer import pretrain
from tests.conftest import debug_config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data = write_synthetic_dataset(tmp_path_factory.mktemp("prefetch") / "data")
    return ReplayStore(data.path, data.games)


def test_same_batches_in_order_and_the_state_of_the_last_one_taken(store):
    direct, ahead = Sampler(store, 8, n_step=3, seed=5), Sampler(store, 8, n_step=3, seed=5)
    with Prefetcher(ahead.sample, ahead.state_dict, "cpu", depth=3) as prefetcher:
        for _ in range(6):
            want, got = direct.sample(), prefetcher.next()
            for name in ("obs", "action", "reward", "discount", "next_obs", "game"):
                np.testing.assert_array_equal(getattr(got, name).numpy(), getattr(want, name), err_msg=name)
            # The thread has drawn ahead, but the state to save is the one after the batch taken.
            assert prefetcher.state_dict() == direct.state_dict()
    resumed = Sampler(store, 8, n_step=3, seed=0)
    resumed.load_state_dict(prefetcher.state_dict())
    np.testing.assert_array_equal(resumed.sample().obs, direct.sample().obs)


def test_a_failing_draw_is_raised_where_the_batch_is_taken(store):
    sampler, calls = Sampler(store, 8, n_step=3, seed=0), {"n": 0}

    def draw():
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("shard 'x.arrow' truncated")
        return sampler.sample()

    with Prefetcher(draw, sampler.state_dict, "cpu", depth=1) as prefetcher:
        prefetcher.next(), prefetcher.next()
        with pytest.raises(OSError, match="truncated"):
            prefetcher.next()


def test_training_with_and_without_prefetch_is_the_same(tmp_path, debug_dataset):
    common = (f"data.path={debug_dataset}", "eval.episodes=0", "train.steps=12", "train.checkpoint_every=6")
    runs = [pretrain(debug_config(tmp_path / f"p{depth}", *common, f"train.prefetch={depth}"), progress=False)
            for depth in (0, 3)]
    a, b = (load_file(latest_checkpoint(r.run_dir) / "model" / "model.safetensors") for r in runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

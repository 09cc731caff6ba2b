"""Online fine-tuning inside the training loop: an actor plays real ALE, batches mix offline and
online data, the online replay is checkpointed and restored."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scaled_ql.data.online import OnlineStore
from scaled_ql.train.trainer import pretrain
from tests.conftest import debug_config

pytestmark = [pytest.mark.slow, pytest.mark.ale]

ONLINE = ["online.enabled=true", "online.num_envs=2", "online.env_steps_per_update=4", "online.max_episode_steps=30",
          "online.capacity_rows=2000", "online.offline_fraction=0.5", "eval.episodes=0", "train.log_every=5"]


def test_online_finetuning_plays_mixes_checkpoints_and_resumes(tmp_path, debug_dataset):
    cfg = debug_config(tmp_path, f"data.path={debug_dataset}", *ONLINE, "train.steps=20", "train.checkpoint_every=10")
    result = pretrain(cfg, progress=False)
    state = result.checkpoint / "state"
    store = OnlineStore.from_saved(state / "online_rank0")
    assert store.num_episodes > 0 and set(store.counts_per_game()) == {"Pong", "Breakout"}
    meta = json.loads((state / "trainer.json").read_text())
    assert meta["ranks"][0]["mix"]["offline_fraction"] == 0.5 and meta["ranks"][0]["actor"]["env_steps"] > 0
    events = EventAccumulator(str(result.run_dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"online/return", "online/replay_rows", "online/epsilon"} <= tags

    resumed = pretrain(debug_config(tmp_path, f"data.path={debug_dataset}", *ONLINE, "train.steps=30",
                                    "train.checkpoint_every=10", "online.anneal_offline_to=0.0"), resume=True, progress=False)
    meta = json.loads((resumed.checkpoint / "state" / "trainer.json").read_text())
    assert resumed.step == 30 and meta["ranks"][0]["mix"]["offline_fraction"] < 0.5
    assert OnlineStore.from_saved(resumed.checkpoint / "state" / "online_rank0").num_episodes >= store.num_episodes

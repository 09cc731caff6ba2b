"""Online fine-tuning inside the one loop: an actor playing ALE with the online network, an
online replay per process, and the offline/online mix the batches come from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from scaled_ql.config import ConfigError, ExperimentConfig
from scaled_ql.data.online import OfflineOnlineMix, OnlineStore
from scaled_ql.data.sampler import Sampler
from scaled_ql.envs.actor import Actor, EpsilonSchedule
from scaled_ql.models import MultiGameQNetwork
from scaled_ql.models.policy import greedy_policy
from scaled_ql.train.checkpoint import LoadedState
from scaled_ql.train.parallel import Topology


class OnlinePart:
    """The actor, its replay (the actor's sink) and the mix; :meth:`sample` draws a batch with
    exactly ``online.offline_fraction`` of it from the offline sampler."""

    def __init__(self, cfg: ExperimentConfig, offline: Sampler, topo: Topology) -> None:
        oc, data = cfg.online, cfg.data
        self.store = OnlineStore(cfg.games, oc.capacity_rows, (cfg.env.frame_size, cfg.env.frame_size),
                                 gamma=data.gamma, reward_clip=data.reward_clip)
        # Each process plays and samples its own replay (its own stream).
        online = Sampler(self.store, topo.per_device_batch, n_step=data.n_step, gamma=data.gamma,
                         reward_clip=data.reward_clip, frame_stack=cfg.env.frame_stack, seed=cfg.seed + 2 + topo.rank)
        self.mix = OfflineOnlineMix(offline, online, oc.offline_fraction)
        self.sample = self.mix.sample
        self.cfg, self.actor, self.rank = cfg, None, topo.rank
        self.returns: list[float] = []
        self.last = None
        self._actor_state: dict[str, Any] | None = None

    def start_actor(self, net: MultiGameQNetwork, device: torch.device, topo: Topology) -> None:
        oc = self.cfg.online
        self.actor = Actor(self.store, greedy_policy(net, device), self.cfg.env, games=self.cfg.games, num_envs=oc.num_envs,
                           epsilon=EpsilonSchedule(oc.epsilon_start, oc.epsilon_end, oc.epsilon_decay_steps),
                           seed=self.cfg.seed + 7919 * (topo.rank + 1), max_episode_steps=oc.max_episode_steps)
        if self._actor_state is not None:
            self.actor.load_state_dict(self._actor_state)

    def act(self, step: int, total_steps: int) -> None:
        if self.cfg.online.anneal_offline_to is not None:
            self.mix.anneal(step, total_steps, self.cfg.online.anneal_offline_to)
        self.last = self.actor.step(self.cfg.online.env_steps_per_update)
        self.returns += self.last.episode_returns

    def metrics(self) -> dict[str, float]:
        out = {"online/offline_fraction": self.mix.offline_fraction, "online/replay_rows": float(len(self.store))}
        if self.last is not None:
            out |= {k.replace("actor/", "online/"): v for k, v in self.last.metrics().items() if "mean" not in k}
        if self.actor is not None:  # running totals over the run (the report's counts are this update's only)
            out |= {"online/env_steps": float(self.actor.env_steps), "online/episodes": float(self.actor.episodes_finished)}
        if self.returns:  # episodes that ended since the last log
            out["online/return"] = float(np.mean(self.returns))
            self.returns = []
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"mix": self.mix.state_dict(), "actor": self.actor.state_dict() if self.actor else None}

    def save_store(self, state_dir: Path) -> None:
        self.store.save(state_dir / f"online_rank{self.rank}")

    def load(self, found: Path, loaded: LoadedState, topo: Topology) -> None:
        if loaded.world_size != topo.world_size:
            raise ConfigError(f"checkpoint '{found}' holds the online replays of {loaded.world_size} processes; "
                              f"this run has {topo.world_size}: resume online fine-tuning on as many processes")
        self.store.load(found / "state" / f"online_rank{topo.rank}")
        mine = loaded.meta["ranks"][topo.rank]
        self.mix.load_state_dict(mine["mix"])
        self._actor_state = mine["actor"]

    def close(self) -> None:
        if self.actor is not None:
            self.actor.close()

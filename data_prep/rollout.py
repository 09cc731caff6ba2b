"""Collect an offline dataset by playing each game in ALE (``scaled-ql prep``).

Each game runs ``cfg.prep.num_envs`` environments in ale_py's C++ vector environment with
single frames (``frame_stack=1``: the dataset stores single frames). Per vector step the
Python work is a few array assignments into preallocated per-env buffers ``[num_envs, cap]``;
only when an episode ends is it copied out, and finished episodes are handed to the writer in
chunks of about ``cfg.prep.shard_rows`` rows, so memory stays bounded by the longest running
episodes plus one chunk. See ``scaled_ql.data.schema`` for the row convention.

The budget ``cfg.prep.steps_per_game`` counts agent steps over all environments of a game
(env e gets ``steps // num_envs`` steps, plus one for the first ``steps % num_envs`` envs);
an episode still running when its env's budget is spent ends with a final row marked
``truncated``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from data_prep.scripted import CONTROLLERS, scripted_policy
from scaled_ql.config import ExperimentConfig
from scaled_ql.data.card import return_stats
from scaled_ql.data.schema import CollectionInfo, DatasetMetadata
from scaled_ql.data.writer import default_command, write_dataset
from scaled_ql.envs.atari import make_vector_env
from scaled_ql.envs.ram import RamVectorEnv
from scaled_ql.games import get_game

GreedyPolicy = Callable[[np.ndarray, int], np.ndarray]
"""``policy(obs, game_id) -> actions``: obs uint8 [N, K, H, W] (K = env.frame_stack, oldest
first, zeros before the episode's first frame), ``game_id`` the index of the game in
``cfg.games``; returns int [N] greedy actions in the game's action set."""


def collect_dataset(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    policy: GreedyPolicy | None = None,
    progress: bool = True,
    *,
    overwrite: bool = False,
    command: str | None = None,
) -> DatasetMetadata:
    """Play every game of ``cfg.games`` and write the dataset folder ``out_dir``.

    ``cfg.prep.policy == "random"``: uniform random actions (``policy`` must be None).
    ``"epsilon_greedy"``: ``policy``'s action with probability 1 - ``cfg.prep.epsilon``,
    else uniform. ``"scripted"``: the game's RAM-reading controller of ``data_prep.scripted``
    with probability 1 - ``cfg.prep.epsilon``, else uniform, played on
    :class:`scaled_ql.envs.ram.RamVectorEnv` (frames identical to the vector env's). ``"mixed"``:
    the first ``good_fraction * num_envs`` environments of each game play the scripted controller,
    the others the poor one (``data_prep.scripted.POOR_POLICIES``), each with ``epsilon`` random
    actions; the metadata's ``collection.parts`` records each part's environments and episode
    returns per game. Seeded by ``cfg.seed`` (environments and action choices, per game).
    Returns the written dataset's metadata.
    """
    prep = cfg.prep
    if prep.policy == "epsilon_greedy" and policy is None:
        raise ValueError("config key 'prep.policy' is 'epsilon_greedy' but no greedy policy was given (load one from prep.checkpoint)")
    if prep.policy in ("random", "scripted", "mixed") and policy is not None:
        raise ValueError(f"a greedy policy was given but config key 'prep.policy' is '{prep.policy}'; set prep.policy=epsilon_greedy")
    kinds = {"scripted": ("scripted",), "mixed": tuple(CONTROLLERS)}.get(prep.policy, ())
    for kind in kinds:
        for game in cfg.games:
            scripted_policy(game, kind)  # names the game without such a controller before any work
    epsilon = 1.0 if prep.policy == "random" else prep.epsilon
    collection = CollectionInfo(
        source="ALE rollouts (scaled_ql data_prep.rollout)",
        policy=prep.policy,
        epsilon=epsilon,
        checkpoint=prep.checkpoint if prep.policy == "epsilon_greedy" else "",
        seed=cfg.seed,
        steps_per_game=prep.steps_per_game,
        num_envs=prep.num_envs,
        max_episode_steps=prep.max_episode_steps,
        env={
            "frame_size": cfg.env.frame_size,
            "frame_stack": cfg.env.frame_stack,
            "frameskip": cfg.env.frameskip,
            "sticky_action_prob": cfg.env.sticky_action_prob,
            "max_episode_frames": cfg.env.max_episode_frames,
            "full_action_space": cfg.env.full_action_space,
        },
        command=default_command() if command is None else command,
        good_fraction=prep.good_fraction if prep.policy == "mixed" else None,
    )
    bar = tqdm(total=prep.steps_per_game * len(cfg.games), unit="step", disable=not progress, desc="prep")
    try:
        chunks = _rollout_chunks(cfg, policy, epsilon, bar, collection.parts)
        return write_dataset(
            out_dir,
            chunks,
            collection=collection,
            frame_shape=(cfg.env.frame_size, cfg.env.frame_size),
            shard_rows=prep.shard_rows,
            overwrite=overwrite,
        )
    finally:
        bar.close()


def _rollout_chunks(cfg: ExperimentConfig, policy: GreedyPolicy | None, epsilon: float, bar,
                    parts: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of whole episodes, game after game, each about ``cfg.prep.shard_rows`` rows; for
    ``prep.policy=mixed`` each part's episode returns go into ``parts[game]``."""
    next_episode_id = 0
    pending: list[dict[str, np.ndarray]] = []
    pending_rows = 0
    for game_index, game in enumerate(cfg.games):
        returns: dict[str, list[float]] = {}
        for episode in _play_game(cfg, game_index, policy, epsilon, bar, returns):
            episode["episode_id"] = np.full(len(episode["step"]), next_episode_id, dtype=np.int64)
            next_episode_id += 1
            pending.append(episode)
            pending_rows += len(episode["step"])
            if pending_rows >= cfg.prep.shard_rows:
                yield _concat(pending)
                pending, pending_rows = [], 0
        if cfg.prep.policy == "mixed":
            parts[game] = {kind: {"envs": int(round(cfg.prep.num_envs * (cfg.prep.good_fraction if kind == "scripted"
                                                                           else 1 - cfg.prep.good_fraction))),
                                  **_part_stats(returns.get(kind, []))} for kind in CONTROLLERS}
    if pending:
        yield _concat(pending)


def _part_stats(values: list[float]) -> dict[str, Any]:
    return {"episodes": len(values), **(return_stats(values) if values else {})}


def _concat(episodes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([e[key] for e in episodes]) for key in episodes[0]}


def _play_game(cfg: ExperimentConfig, game_index: int, policy: GreedyPolicy | None, epsilon: float, bar,
               returns: dict[str, list[float]]) -> Iterator[dict[str, np.ndarray]]:
    """Yield each finished episode of one game as a dict of columns (without ``episode_id``);
    with ``prep.policy=mixed`` append each episode's raw return to ``returns[controller kind]``."""
    spec = get_game(cfg.games[game_index])
    num_envs, size, stack_k = cfg.prep.num_envs, cfg.env.frame_size, cfg.env.frame_stack
    scripted = scripted_policy(spec.name) if cfg.prep.policy in ("scripted", "mixed") else None
    poor = scripted_policy(spec.name, "poor") if cfg.prep.policy == "mixed" else None
    good_envs = round(cfg.prep.good_fraction * num_envs) if poor is not None else num_envs
    is_good = np.arange(num_envs) < good_envs  # mixed: the first good_envs environments play the scripted controller
    seeds = np.random.SeedSequence([cfg.seed, game_index]).spawn(2)
    rng = np.random.default_rng(seeds[0])
    env_seed = int(seeds[1].generate_state(1)[0] % (2**31 - num_envs))
    budget = np.full(num_envs, cfg.prep.steps_per_game // num_envs, dtype=np.int64)
    budget[: cfg.prep.steps_per_game % num_envs] += 1

    if scripted is not None:
        env = RamVectorEnv(spec.name, num_envs, cfg.env, max_episode_steps=cfg.prep.max_episode_steps)
    else:
        env = make_vector_env(spec.name, num_envs, cfg.env, frame_stack=1, max_episode_steps=cfg.prep.max_episode_steps)
    try:
        num_actions = env.single_action_count if scripted is not None else int(env.single_action_space.n)
        obs, info = env.reset(seed=env_seed)
        cap = 1024
        frames = np.zeros((num_envs, cap, size, size), dtype=np.uint8)
        actions = np.zeros((num_envs, cap), dtype=np.int32)
        rewards = np.zeros((num_envs, cap), dtype=np.float32)
        pos = np.zeros(num_envs, dtype=np.int64)  # rows of each env's running episode
        taken = np.zeros(num_envs, dtype=np.int64)  # agent steps recorded per env
        stacks = np.zeros((num_envs, stack_k, size, size), dtype=np.uint8) if policy is not None else None
        if stacks is not None:
            stacks[:, -1] = obs[:, 0]
        live = np.flatnonzero(taken < budget)
        while live.size:
            if pos.max() + 2 > cap:  # room for this step's row and a final row
                cap *= 2
                frames = _grow(frames, cap)
                actions = _grow(actions, cap)
                rewards = _grow(rewards, cap)
            frames[live, pos[live]] = obs[live, 0]
            action = rng.integers(0, num_actions, size=num_envs)
            if scripted is not None:
                controlled = scripted(info["ram"]) if poor is None else np.where(is_good, scripted(info["ram"]), poor(info["ram"]))
                action = np.where(rng.random(num_envs) < epsilon, action, controlled)
            elif stacks is not None and epsilon < 1.0:
                greedy = np.asarray(policy(stacks, game_index)).reshape(num_envs)
                action = np.where(rng.random(num_envs) < epsilon, action, greedy)
            obs, reward, terminal, truncated, info = env.step(action)
            actions[live, pos[live]] = action[live]
            rewards[live, pos[live]] = reward[live]
            pos[live] += 1
            taken[live] += 1
            bar.update(live.size)
            done = terminal | truncated
            ended = live[done[live] | (taken[live] == budget[live])]
            for e in ended.tolist():
                last = pos[e]
                frames[e, last] = info["final_obs"][e, 0] if done[e] else obs[e, 0]
                actions[e, last] = 0
                rewards[e, last] = 0.0
                rows = last + 1
                if poor is not None:
                    returns.setdefault("scripted" if is_good[e] else "poor", []).append(float(rewards[e, :rows].sum()))
                flag_end = np.arange(rows) == last
                yield {
                    "frame": frames[e, :rows].copy(),
                    "action": actions[e, :rows].copy(),
                    "reward": rewards[e, :rows].copy(),
                    "terminal": flag_end & bool(terminal[e]),
                    "truncated": flag_end & (not bool(terminal[e])),
                    "step": np.arange(rows, dtype=np.int32),
                    "game": np.full(rows, spec.name, dtype=object),
                }
                pos[e] = 0
            if stacks is not None:
                stacks[:, :-1] = stacks[:, 1:]
                stacks[done, :-1] = 0
                stacks[:, -1] = obs[:, 0]
            live = np.flatnonzero(taken < budget)
    finally:
        env.close()


def _grow(buffer: np.ndarray, cap: int) -> np.ndarray:
    grown = np.zeros((buffer.shape[0], cap, *buffer.shape[2:]), dtype=buffer.dtype)
    grown[:, : buffer.shape[1]] = buffer
    return grown

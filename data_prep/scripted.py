"""Scripted behaviour policies that read object positions from the Atari RAM.

For the learning benchmark (``scaled-ql bench learning``) the data must come from behaviour of
known, mediocre quality: a competent scripted controller mixed with uniform random actions
(``prep.policy=scripted``, ``prep.epsilon`` the random share), so a dataset holds good and bad
decisions and an offline agent can do better than the data only by telling them apart.

RAM addresses are those of the AtariARI annotations (Anand et al., 2019, "Unsupervised State
Representation Learning in Atari", ``atariari/benchmark/ram_annotations.py``), checked here by
stepping the games (``tests/test_scripted.py``):

- Pong: player paddle y = ram[51], ball x = ram[49], ball y = ram[54] (0 while no ball is in
  play). Minimal actions [NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE]; RIGHT moves the paddle
  up (y decreases), LEFT down.
- Breakout: paddle x = ram[72], ball x = ram[99], ball y = ram[101] (0 while no ball is in
  play). Minimal actions [NOOP, FIRE, RIGHT, LEFT].
- Freeway: chicken y = ram[14]. Minimal actions [NOOP, UP, DOWN]; the good strategy is to walk
  up (cars knock the chicken back but never end the episode).
- SpaceInvaders: no RAM read; minimal actions [NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE]. The
  controller fires at every step (285 points in 1,000 agent steps under the protocol, a uniformly
  random policy 94-118, never firing 0).

Each policy maps RAM uint8 [N, 128] to action indices [N] into the game's minimal action set.

The mixed-quality regime (``prep.policy=mixed``) plays a share ``prep.good_fraction`` of the
environments with these controllers and the rest with a *poor* one (``POOR_POLICIES``) that
reads the same RAM and does the wrong thing consistently: cloning the data's most frequent
action copies the poor controller, and only the rewards tell the two apart.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from scaled_ql.config import EnvConfig, EvalConfig
from scaled_ql.envs.ram import RamVectorEnv
from scaled_ql.eval.evaluate import EpisodeTally
from scaled_ql.games import get_game

ScriptedPolicy = Callable[[np.ndarray], np.ndarray]


def pong(ram: np.ndarray) -> np.ndarray:
    """Keep the paddle's centre at the ball's height: up (RIGHT) when the ball is above, down
    (LEFT) when below, NOOP within a dead band or when no ball is in play."""
    paddle = ram[:, 51].astype(np.int32) + PONG_PADDLE_OFFSET
    ball = ram[:, 54].astype(np.int32)
    action = np.zeros(len(ram), dtype=np.int64)
    in_play = ball > 0
    action[in_play & (ball < paddle - 2)] = 2
    action[in_play & (ball > paddle + 2)] = 3
    return action


PONG_PADDLE_OFFSET = 8
"""Rows from ram[51] (the paddle's top) to the paddle's centre, in RAM units."""


def breakout(ram: np.ndarray) -> np.ndarray:
    """FIRE while no ball is in play; otherwise move the paddle's centre under the ball's x."""
    paddle = ram[:, 72].astype(np.int32) + BREAKOUT_PADDLE_OFFSET
    ball_x, ball_y = ram[:, 99].astype(np.int32), ram[:, 101].astype(np.int32)
    action = np.zeros(len(ram), dtype=np.int64)
    waiting = ball_y == 0
    action[waiting] = 1
    action[~waiting & (ball_x > paddle + 3)] = 2
    action[~waiting & (ball_x < paddle - 3)] = 3
    return action


BREAKOUT_PADDLE_OFFSET = 8
"""From ram[72] to the paddle's centre, in RAM units of the ball's x."""


def freeway(ram: np.ndarray) -> np.ndarray:
    """Always UP."""
    return np.ones(len(ram), dtype=np.int64)


def space_invaders(ram: np.ndarray) -> np.ndarray:
    """Always FIRE (the cannon shoots as often as the game lets it)."""
    return np.ones(len(ram), dtype=np.int64)


SCRIPTED_POLICIES: dict[str, ScriptedPolicy] = {"Pong": pong, "Breakout": breakout, "Freeway": freeway,
                                                "SpaceInvaders": space_invaders}
"""Game name -> its scripted policy."""


# The poor controllers of the mixed-quality regime (``prep.policy=mixed``): structured, reading
# the same RAM, and wrong, so that their actions are consistent (a cloner learns them) but lose.


def pong_poor(ram: np.ndarray) -> np.ndarray:
    """Move the paddle away from the ball: down (LEFT) when the ball is above, up (RIGHT) when below."""
    action = pong(ram)
    return np.select([action == 2, action == 3], [3, 2], action)


def breakout_poor(ram: np.ndarray) -> np.ndarray:
    """FIRE while no ball is in play (so episodes go on), then move the paddle away from the ball."""
    action = breakout(ram)
    return np.select([action == 2, action == 3], [3, 2], action)


def freeway_poor(ram: np.ndarray) -> np.ndarray:
    """Always DOWN (the chicken stays at the bottom and never scores)."""
    return np.full(len(ram), 2, dtype=np.int64)


def space_invaders_poor(ram: np.ndarray) -> np.ndarray:
    """Never FIRE (NOOP): no alien is ever hit."""
    return np.zeros(len(ram), dtype=np.int64)


POOR_POLICIES: dict[str, ScriptedPolicy] = {"Pong": pong_poor, "Breakout": breakout_poor, "Freeway": freeway_poor,
                                            "SpaceInvaders": space_invaders_poor}
"""Game name -> its poor structured controller."""

CONTROLLERS = {"scripted": SCRIPTED_POLICIES, "poor": POOR_POLICIES}
"""Controller kind -> its policies by game."""


def scripted_policy(game: str, kind: str = "scripted") -> ScriptedPolicy:
    """The ``kind`` controller of ``game`` (a variant, ``Freeway-m1d0``, plays its game's)."""
    policies = CONTROLLERS[kind]
    try:
        spec = get_game(game)
        game = spec.base or spec.name
    except KeyError:
        pass
    if game not in policies:
        raise ValueError(f"prep.policy: no {kind} controller for game '{game}'; games with one: {', '.join(policies)}")
    return policies[game]


def evaluate_scripted(game: str, epsilon: float, env_cfg: EnvConfig, eval_cfg: EvalConfig, episodes: int, seed: int,
                      discount: tuple[float, float] | None = None, kind: str = "scripted") -> dict[str, Any]:
    """The return of the behaviour policy (scripted, a random action with probability
    ``epsilon``) under the evaluation protocol (``eval_cfg.max_episode_steps``, sticky actions):
    the first ``episodes`` episodes to end on ``min(eval_cfg.num_envs, episodes)`` environments.
    Returns ``mean``, ``std``, ``episodes``, ``returns``, ``human_normalized`` and, with
    ``discount = (gamma, reward_clip)``, ``discounted_mean`` (sum_t gamma^t clip(r_t)), as
    :func:`scaled_ql.eval.evaluate.evaluate_game` does for a network. ``kind``: ``scripted``
    (the competent controller) or ``poor`` (the mixed-quality regime's wrong one)."""
    policy = scripted_policy(game, kind)
    n = min(eval_cfg.num_envs, episodes)
    env = RamVectorEnv(game, n, env_cfg, max_episode_steps=eval_cfg.max_episode_steps)
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    tally = EpisodeTally(game, n, episodes, discount)
    while not tally.done:
        action = np.where(rng.random(n) < epsilon, rng.integers(0, env.single_action_count, n), policy(info["ram"]))
        _, reward, terminal, truncated, info = env.step(action)
        tally.add(reward, terminal, truncated)
    env.close()
    return {**tally.summary(), "epsilon": epsilon, "controller": kind}

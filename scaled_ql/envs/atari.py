"""Atari environments with the standard protocol, on ale_py's C++ vectorized environment.

The protocol (Machado et al., 2018, as used by DQN-Replay and Scaled QL): ALE v5 dynamics
with sticky actions p=0.25, frameskip 4 with max-pooling over the last two frames,
84x84 grayscale, a 108,000-frame episode cap, no no-op starts, no fire reset, no
episodic life. Stacks of 4 frames are zero-filled at an episode's start, the same way the
sampler builds stacks from stored single frames, so training and evaluation see the same
inputs.

``ale_py.AtariVectorEnv`` steps all environments of one game in C++ threads; we never loop
over environments in Python.
"""

from __future__ import annotations

from ale_py import AtariVectorEnv

from scaled_ql.config import EnvConfig
from scaled_ql.envs.ram import RamVectorEnv
from scaled_ql.games import get_game


def make_vector_env(
    game: str,
    num_envs: int,
    env_cfg: EnvConfig,
    *,
    frame_stack: int | None = None,
    max_episode_steps: int = 0,
    num_threads: int = 0,
    clip_rewards: bool = False,
) -> AtariVectorEnv:
    """A vector of ``num_envs`` ALE environments of ``game`` under the protocol of ``env_cfg``.

    Observations are uint8 ``[num_envs, frame_stack, H, W]``; when an episode ends, the
    returned observation is already the next episode's first one and the last observation of
    the ended episode is in ``info["final_obs"]`` (gymnasium's same-step autoreset).

    ``frame_stack`` defaults to ``env_cfg.frame_stack``; data collection uses 1 (single frames
    are stored). ``max_episode_steps`` > 0 cuts episodes earlier than the protocol's frame cap
    (reported as truncation).

    A game variant (``Freeway-m1d0``) is played on :class:`scaled_ql.envs.ram.RamVectorEnv`,
    one emulator per environment in the variant's mode and difficulty, with the same
    preprocessing and the same interface (``clip_rewards`` is not supported there).
    """
    spec = get_game(game)
    if spec.is_variant:  # the vector env has no mode or difficulty option: one emulator per env, same protocol
        if clip_rewards:
            raise ValueError(f"game variant '{spec.name}': clip_rewards is not supported on its environment; clip in the learner")
        return RamVectorEnv(spec.name, num_envs, env_cfg, max_episode_steps=max_episode_steps,
                            frame_stack=env_cfg.frame_stack if frame_stack is None else frame_stack)
    max_frames = env_cfg.max_episode_frames
    if max_episode_steps > 0:
        max_frames = min(max_frames, max_episode_steps * env_cfg.frameskip)
    return AtariVectorEnv(
        spec.ale_name,
        num_envs,
        num_threads=num_threads,
        max_num_frames_per_episode=max_frames,
        repeat_action_probability=env_cfg.sticky_action_prob,
        full_action_space=env_cfg.full_action_space,
        img_height=env_cfg.frame_size,
        img_width=env_cfg.frame_size,
        grayscale=True,
        stack_num=env_cfg.frame_stack if frame_stack is None else frame_stack,
        frameskip=env_cfg.frameskip,
        maxpool=True,
        noop_max=0,
        episodic_life=False,
        reward_clipping=clip_rewards,
        use_fire_reset=False,
        autoreset_mode="SameStep",
    )

"""ALE environments that also return the console RAM, with frames identical to the vector env's.

``ale_py.AtariVectorEnv`` (what training, evaluation and ``scaled-ql prep`` play on) does not
expose the 128 bytes of Atari RAM, and scripted behaviour policies (``data_prep.scripted``) read
object positions from it. :class:`RamVectorEnv` runs one ``ale_py.ALEInterface`` per environment
in Python and reproduces the vector env's preprocessing step by step, so a dataset collected
with it is indistinguishable from one collected on the vector env:

- sticky actions inside ALE (``repeat_action_probability``, per emulator frame), frameskip
  ``env.frameskip`` with the reward summed over the skipped frames;
- the observation is the pixel-wise max of the grayscale screens of the last two frames
  (ALE's own palette conversion), resized to ``frame_size`` x ``frame_size`` by area averaging
  (OpenCV's ``INTER_AREA`` for a downscale, as the vector env's C++ code calls it) and rounded
  half to even;
- on reset the observation is the first screen (no no-op starts, no fire reset);
- an episode is truncated after ``max_frames`` emulator frames (the vector env's
  ``max_num_frames_per_episode``); same-step autoreset with the ended episode's last
  observation in ``info["final_obs"]``.

One difference is deliberate: ``info["final_obs"]`` here is the ended episode's true last
observation; ale_py 0.12's vector env was seen returning the step before's observation there
(Breakout, at a terminal). Datasets store it only as an episode's final row, which TD reads only
as s' after a truncation.

``tests/test_scripted.py`` checks frame-for-frame equality with ``AtariVectorEnv`` on
deterministic action sequences (sticky actions off) across episode ends.

It is also how game variants are played (``Freeway-m1d0``, :mod:`scaled_ql.games`): the vector
env has no mode or difficulty option, so every emulator here gets ``setMode`` and
``setDifficulty`` before its first reset. With ``frame_stack`` > 1 it returns stacks of the last
``frame_stack`` frames, zero-filled at an episode's start, as the vector env does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium.spaces import Discrete
from ale_py import Action, ALEInterface, LoggerMode, roms

from scaled_ql.config import EnvConfig
from scaled_ql.games import get_game


def area_resize_table(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's ``computeResizeAreaTab`` for a downscale by ``n_in / n_out``, as arrays:
    source indices [n_out, T] and float32 weights [n_out, T] of each output pixel, in the order
    OpenCV adds them (padded with weight 0, which adds exactly nothing)."""
    if n_out > n_in:
        raise ValueError(f"area resize: expected a downscale (n_out <= n_in), found {n_in} -> {n_out}")
    scale = n_in / n_out
    terms: list[list[tuple[int, np.float32]]] = []
    for dx in range(n_out):
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, n_in - fsx1)
        sx1, sx2 = math.ceil(fsx1), math.floor(fsx2)
        sx2 = min(sx2, n_in - 1)
        sx1 = min(sx1, sx2)
        row = []
        if sx1 - fsx1 > 1e-3:
            row.append((sx1 - 1, np.float32((sx1 - fsx1) / cell)))
        row += [(sx, np.float32(1.0 / cell)) for sx in range(sx1, sx2)]
        if fsx2 - sx2 > 1e-3:
            row.append((sx2, np.float32(min(min(fsx2 - sx2, 1.0), cell) / cell)))
        terms.append(row)
    width = max(len(r) for r in terms)
    index = np.zeros((n_out, width), dtype=np.int64)
    weight = np.zeros((n_out, width), dtype=np.float32)
    for dx, row in enumerate(terms):
        for t, (si, alpha) in enumerate(row):
            index[dx, t], weight[dx, t] = si, alpha
    return index, weight


def area_resize(image: np.ndarray, ytab: tuple[np.ndarray, np.ndarray], xtab: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """uint8 [H, W] -> uint8 [h, w] as OpenCV's ``INTER_AREA`` computes it for a fractional
    downscale: float32 row sums over x, then float32 sums of the rows over y, each in the table's
    order, rounded half to even (``lrintf``)."""
    src = image.astype(np.float32)
    (yi, yw), (xi, xw) = ytab, xtab
    rows = np.zeros((src.shape[0], xi.shape[0]), dtype=np.float32)
    for t in range(xi.shape[1]):
        rows += src[:, xi[:, t]] * xw[:, t]
    out = rows[yi[:, 0]] * yw[:, 0, None]
    for t in range(1, yi.shape[1]):
        out += rows[yi[:, t]] * yw[:, t, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class RamVectorEnv:
    """``num_envs`` ALE environments of one game, stepped in Python, returning frames and RAM.

    The interface is the part of ``AtariVectorEnv`` that data collection and evaluation use:
    ``reset(seed)`` and ``step(actions)`` (action indices into the game's minimal action set, or
    the full set with ``env.full_action_space``) return observations uint8 [N, K, H, W]
    (K = ``frame_stack``) and ``info`` with
    ``ram`` uint8 [N, 128] (the RAM of the returned observation) and, for ended episodes,
    ``final_obs`` and ``final_ram``.
    """

    def __init__(self, game: str, num_envs: int, env_cfg: EnvConfig, *, max_episode_steps: int = 0,
                 frame_stack: int = 1) -> None:
        self.spec = get_game(game)
        self.frame_stack = frame_stack
        self.num_envs, self.env_cfg = num_envs, env_cfg
        max_frames = env_cfg.max_episode_frames
        if max_episode_steps > 0:
            max_frames = min(max_frames, max_episode_steps * env_cfg.frameskip)
        self.max_frames = max_frames
        ALEInterface.setLoggerMode(LoggerMode.Error)
        self._rom = roms.get_rom_path(self.spec.ale_name)
        self._ales: list[ALEInterface] = []
        self._frames = np.zeros(num_envs, dtype=np.int64)  # emulator frames of each running episode
        h = w = env_cfg.frame_size
        self._ytab, self._xtab = area_resize_table(210, h), area_resize_table(160, w)
        self._obs = np.zeros((num_envs, frame_stack, h, w), dtype=np.uint8)
        # Agent action i is ALE action _actions[i]: the game's minimal set, or all 18.
        ids = range(18) if env_cfg.full_action_space else self.spec.action_set
        self._actions = [Action(int(a)) for a in ids]

    def _new_ale(self, seed: int) -> ALEInterface:
        ale = ALEInterface()
        ale.setInt("random_seed", seed)
        ale.setFloat("repeat_action_probability", self.env_cfg.sticky_action_prob)
        ale.setInt("frame_skip", 1)
        ale.setInt("max_num_frames_per_episode", 0)
        ale.loadROM(self._rom)
        if self.spec.is_variant:
            ale.setMode(self.spec.mode)
            ale.setDifficulty(self.spec.difficulty)
        return ale

    def _observe(self, screens: list[np.ndarray]) -> np.ndarray:
        pooled = screens[0] if len(screens) == 1 else np.maximum(screens[-2], screens[-1])
        return area_resize(pooled, self._ytab, self._xtab)

    def reset(self, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
        seeds = np.random.SeedSequence(seed).generate_state(self.num_envs) % (2**31 - 1)
        self._ales = [self._new_ale(int(s)) for s in seeds]
        self._obs[:] = 0
        for e, ale in enumerate(self._ales):
            ale.reset_game()
            self._obs[e, -1] = self._observe([ale.getScreenGrayscale()])
        self._frames[:] = 0
        return self._obs.copy(), {"ram": self.ram()}

    def ram(self) -> np.ndarray:
        return np.stack([ale.getRAM() for ale in self._ales])

    @property
    def single_action_count(self) -> int:
        return len(self._actions)

    @property
    def single_action_space(self):
        """``gymnasium.spaces.Discrete`` over the agent's actions, as the vector env has."""
        return Discrete(len(self._actions))

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions).reshape(self.num_envs)
        n = self.num_envs
        reward = np.zeros(n, dtype=np.float32)
        terminal, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        final_obs = np.zeros_like(self._obs)  # ended episodes' last stacks
        final_ram = np.zeros((n, 128), dtype=np.uint8)
        skip = self.env_cfg.frameskip
        for e, ale in enumerate(self._ales):
            ale_action = self._actions[int(actions[e])]
            screens = []
            for k in range(skip):
                reward[e] += ale.act(ale_action)
                self._frames[e] += 1
                if k >= skip - 2:
                    screens.append(ale.getScreenGrayscale())
                if ale.game_over():
                    break
            obs = self._observe(screens if screens else [ale.getScreenGrayscale()])
            terminal[e] = ale.game_over()
            truncated[e] = not terminal[e] and self._frames[e] >= self.max_frames
            self._obs[e, :-1] = self._obs[e, 1:]
            self._obs[e, -1] = obs
            if terminal[e] or truncated[e]:
                final_obs[e], final_ram[e] = self._obs[e], ale.getRAM()
                ale.reset_game()
                self._frames[e] = 0
                self._obs[e] = 0
                self._obs[e, -1] = self._observe([ale.getScreenGrayscale()])
        info = {"ram": self.ram(), "final_obs": final_obs, "final_ram": final_ram}
        return self._obs.copy(), reward, terminal, truncated, info

    def close(self) -> None:
        self._ales = []

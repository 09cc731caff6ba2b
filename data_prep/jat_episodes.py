"""One row of a Hub Atari dataset in the JAT format (an episode of image observations, discrete
actions and rewards) as whole episodes of single 84x84 frames: decoding the observations, and
splitting a row where the environment was reset inside it (see :mod:`data_prep.hub_datasets`)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from data_prep.conversion import check_actions
from scaled_ql.data.schema import FRAME_SHAPE, DatasetFormatError

OBSERVATIONS = "image_observations"


ACTIONS = "discrete_actions"


REWARDS = "rewards"


COLUMNS = (OBSERVATIONS, ACTIONS, REWARDS)
"""JAT's columns for Atari configs, all lists of one value per step."""


STACK_SIZE = 4
"""envpool's stack: JAT's RGBA PNGs hold 4 grayscale frames, channel 0 oldest, 3 newest."""


def decode_observation(value: Any, where: str) -> tuple[np.ndarray, str]:
    """``(array, mode)``: one step's observation as a uint8 array, from an undecoded ``Image`` value (``{"bytes", "path"}``),
    PNG bytes, a PIL image or an array."""
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("path"):
            path = Path(value["path"])
            if not path.is_file():
                raise DatasetFormatError(f"{where}: column '{OBSERVATIONS}' refers to image file '{path}', which does not exist")
            data = path.read_bytes()
        value = data
    if value is None:
        raise DatasetFormatError(f"{where}: column '{OBSERVATIONS}' has a missing image")
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(value)) as img:
                img.load()
                array = np.asarray(img)
                mode = img.mode
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise DatasetFormatError(f"{where}: column '{OBSERVATIONS}' holds bytes that are not a readable image: {err}") from None
    elif isinstance(value, Image.Image):
        array, mode = np.asarray(value), value.mode
    else:
        array = np.asarray(value)
        mode = f"array {array.dtype}"
    if array.dtype != np.uint8:
        raise DatasetFormatError(f"{where}: column '{OBSERVATIONS}' holds an image of mode {mode} and dtype {array.dtype}; expected 8-bit frames")
    return array, mode


def _frame_kind(array: np.ndarray, mode: str, where: str) -> str:
    """``"single"`` (an 84x84 grayscale frame) or ``"stack"`` (JAT's 84x84 4-frame stack)."""
    if array.shape == FRAME_SHAPE:
        return "single"
    if array.shape == (*FRAME_SHAPE, STACK_SIZE):
        return "stack"
    raise DatasetFormatError(
        f"{where}: column '{OBSERVATIONS}' holds an image of mode {mode} and shape {list(array.shape)}, which cannot be mapped to one "
        f"{FRAME_SHAPE[0]}x{FRAME_SHAPE[1]} grayscale frame: expected {list(FRAME_SHAPE)} (mode L) or JAT's "
        f"{list((*FRAME_SHAPE, STACK_SIZE))} stack of {STACK_SIZE} grayscale frames (RGBA PNG, oldest frame first)"
    )


def _stack_relation(prev: np.ndarray, cur: np.ndarray) -> str:
    """How stack ``cur`` follows ``prev`` (envpool semantics, channel 0 oldest)."""
    if np.array_equal(cur[..., :3], prev[..., 1:]):
        return "step"  # tested first: on a static screen every test below passes too
    if np.array_equal(cur[..., :2], prev[..., 2:]):
        return "life_loss_reset"  # the losing step's stack and the reset's no-ops each pushed a frame
    if (cur == cur[..., :1]).all():
        return "game_reset"  # push_all: a new game (time limit) inside the row
    if np.array_equal(cur[..., 1:], prev[..., :3]):
        return "reversed"
    return "break"


def episode_segments(observations: Sequence[Any], actions: Sequence[Any], rewards: Sequence[Any], where: str, num_actions: int | None, *, split_resets: bool = True):
    """The episodes to write from one JAT row, and the row's counts.

    Returns ``(segments, counts)`` with ``segments`` a list of ``(frames [T + 1, 84, 84],
    actions [T], rewards [T], terminal)`` (see the module docstring).
    """
    steps = len(observations)
    if len(actions) != steps or len(rewards) != steps:
        raise DatasetFormatError(
            f"{where}: columns of different lengths: '{OBSERVATIONS}' {steps}, '{ACTIONS}' {len(actions)}, '{REWARDS}' {len(rewards)} "
            "(JAT stores one observation, action and reward per step)"
        )
    if steps == 0:
        raise DatasetFormatError(f"{where}: an empty episode (no step)")
    action = np.asarray(actions)
    if action.ndim != 1 or action.dtype.kind not in "iu":
        raise DatasetFormatError(f"{where}: column '{ACTIONS}' must hold one integer per step, found {action.dtype} {list(action.shape)}")
    check_actions(action, num_actions, f"{where}: column '{ACTIONS}'")
    action = action.astype(np.int32)
    reward = np.asarray(rewards, dtype=np.float32)
    if reward.ndim != 1:
        raise DatasetFormatError(f"{where}: column '{REWARDS}' must hold one number per step, found shape {list(reward.shape)}")
    bad = np.flatnonzero(~np.isfinite(reward))
    if bad.size:
        raise DatasetFormatError(f"{where}, step {bad[0]}: column '{REWARDS}' has {reward[bad[0]]} (rewards must be finite)")

    frames = np.empty((steps + 1, *FRAME_SHAPE), dtype=np.uint8)
    relations = {"step": 0, "life_loss_reset": 0, "game_reset": 0, "reversed": 0, "break": 0}
    resets: list[int] = []
    kind = None
    starts_at_reset = True
    prev = None
    for t, value in enumerate(observations):
        array, mode = decode_observation(value, f"{where}, step {t}")
        this_kind = _frame_kind(array, mode, f"{where}, step {t}")
        if kind is None:
            kind = this_kind
        elif this_kind != kind:
            raise DatasetFormatError(f"{where}, step {t}: column '{OBSERVATIONS}' changes from {kind} frames to an image of mode {mode} and shape {list(array.shape)}")
        if kind == "single":
            frames[t] = array
            continue
        frames[t] = array[..., STACK_SIZE - 1]
        if prev is None:
            starts_at_reset = bool((array == array[..., :1]).all())
        else:
            relation = _stack_relation(prev, array)
            relations[relation] += 1
            if relation == "game_reset":
                resets.append(t)
        prev = array
    frames[steps] = frames[steps - 1]  # JAT does not store the final observation: repeat the last frame

    counts = {"steps": steps, "frames": kind, "life_loss_resets": relations["life_loss_reset"], "stack_breaks": relations["break"] + relations["reversed"],
              "game_resets_split": 0, "dropped_transitions": 0, "starts_at_reset": starts_at_reset}
    if kind == "stack" and steps > 1:
        followed = relations["step"] + relations["life_loss_reset"]
        if relations["reversed"] > relations["step"]:
            raise DatasetFormatError(
                f"{where}: column '{OBSERVATIONS}': consecutive {STACK_SIZE}-frame stacks overlap newest-first in {relations['reversed']} of {steps - 1} steps "
                f"(oldest-first in {relations['step']}); expected channel 0 oldest and channel {STACK_SIZE - 1} newest, as envpool stacks them"
            )
        if relations["break"] > followed:
            raise DatasetFormatError(
                f"{where}: column '{OBSERVATIONS}': the {STACK_SIZE} channels do not look like a frame stack (consecutive images overlap in only "
                f"{followed} of {steps - 1} steps); expected JAT's RGBA stacks of {STACK_SIZE} grayscale frames"
            )
    if not split_resets:
        resets = []
    segments = []
    bounds = [0, *resets, steps]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b == steps:  # the row ends at game over
            segments.append((frames[a : steps + 1], action[a:steps], reward[a:steps], True))
        else:  # a new game starts at b: the part before ends truncated at its last stored frame
            counts["game_resets_split"] += 1
            counts["dropped_transitions"] += 1
            if b - 1 - a >= 1:
                segments.append((frames[a:b], action[a : b - 1], reward[a : b - 1], False))
    return segments, counts

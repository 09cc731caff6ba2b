"""Convert the DQN Replay Dataset (Dopamine logged replay buffers) into a scaled_ql dataset.

Folder layout read (as in ``gs://atari-replay-datasets/dqn``; ``<Game>`` spelled as Dopamine
does, e.g. ``Pong``, ``MsPacman``; runs ``1`` .. ``5``; checkpoint suffixes ``0`` .. ``50``)::

    <root>/<Game>/<run>/replay_logs/
        $store$_observation_ckpt.<N>.gz   uint8 [C, 84, 84]  one frame per slot, not stacked
        $store$_action_ckpt.<N>.gz        int32 [C]
        $store$_reward_ckpt.<N>.gz        float32 [C]        already clipped to [-1, 1]
        $store$_terminal_ckpt.<N>.gz      uint8 [C]          1 on an episode's last transition
        add_count_ckpt.<N>.gz             int64 0-d          adds so far (padding included)
        invalid_range_ckpt.<N>.gz         int64 [K + H]      slots around the cursor
        episode_end_indices_ckpt.<N>.gz   (newer Dopamine only) a pickled set: IGNORED, never opened

Every file is a gzip'd ``np.save`` array, loaded with ``allow_pickle=False``; C (the capacity)
is 1,000,000 in the released data. Nothing here ever unpickles.

How the slots become episodes (Dopamine's ``OutOfGraphReplayBuffer`` as logged by batch_rl):

* Slot t holds ``(o_t, a_t, r_t, terminal_t)``; the next observation is slot t + 1. Before
  each episode's first step Dopamine adds K - 1 = 3 all-zero padding slots; they are checked
  (zero frame, action 0, reward 0, terminal 0) and skipped.
* Chronological order. With ``cursor = add_count % C``: if ``add_count < C`` the fresh slots
  are ``[0, add_count)`` (checkpoint 0, and the final checkpoint, whose ``add_count`` the
  logger sets to the cursor; slots past it are stale data of the previous lap and are never
  read); otherwise the buffer has wrapped and the order is ``[cursor, C)`` then
  ``[0, cursor)``. For the regular checkpoints (written one add before a wrap, cursor C - 1)
  that puts slot C - 1, the add made just after the previous checkpoint was written, first.
  ``invalid_range`` must surround that cursor (a cross-check of ``add_count``). The newest
  slot (cursor - 1) and the oldest (cursor) are never joined: no converted transition or
  frame stack crosses the cursor.
* Each checkpoint file is converted on its own. The episode running at its oldest slot began
  in an earlier file (or lap) and its start is lost (only checkpoint 0 of a buffer that never
  wrapped starts at an episode start). It is kept as Dopamine's sampler sees it: its first
  3 = K - 1 slots become context rows (steps -3 .. -1: real frames, or the zero padding of an
  episode that starts there, that only fill the frame stacks of the rows after them, never a
  transition start, exactly Dopamine's invalid range after the cursor), and its transitions
  follow up to its terminal slot (or the newest slot); with no transition after the context it
  is dropped (``dropped_leading_partial``). The episode still running at the newest slot is
  closed as ``truncated`` after its last complete transition: its final row is the newest
  slot's frame, a real observation, and that slot's action and reward (whose next frame was
  never stored) are dropped. A one-slot fragment is dropped. So every transition Dopamine's
  sampler can return from a checkpoint is converted, with the same frame stack, plus a terminal
  transition in the newest slot (which needs no next frame).
* Terminal episodes. Dopamine never stores the observation that follows a terminal
  transition, but our row convention needs a final row. Decision: the final row repeats the
  episode's last stored frame, with action 0, reward 0 and ``terminal`` set. A terminal
  target never bootstraps from it (discount 0), so TD targets are exact; only losses that
  look at next-state features of terminal transitions (e.g. DR3) see the repeated frame.
* Time limits. Dopamine also marks the 27,000-step time limit as terminal (its
  ``_end_episode`` always stores ``terminal=1``), and the files cannot tell the two apart, so
  such episodes are ``terminal`` here too (the dataset card says so).
* Rewards are stored as given (already clipped to [-1, 1] by Dopamine's runner).

Subsets (recorded in the dataset card and in ``conversion_report.json``):

* ``checkpoints``: these suffixes of every run; ``first_fraction``: the first
  ``max(1, round(f * n))`` of the n checkpoint suffixes found in each run (Scaled QL's
  "initial 20%": 10 of 0..50). At most one of the two.
* ``sample_fraction`` p: from each checkpoint, exactly ``round(p * N)`` of its N convertible
  transitions, drawn as whole episodes in a seeded random order; the episode that would
  overshoot is cut to a ``truncated`` prefix (its final row the real next frame), so rows stay
  whole episodes and frame stacks stay exact. Transitions are therefore sampled in correlated
  blocks (episodes), not independently as CQL's 1% / 10% subsets of single transitions.

Bad input (truncated or corrupt gzip, missing file of a checkpoint, wrong dtype or shape,
mismatched lengths, a pickled or object array, NaN rewards, an ``invalid_range`` or
``add_count`` that disagree, padding that is not zero) raises
:class:`~scaled_ql.data.schema.DatasetFormatError` naming the file and the problem. With
``skip_bad`` the checkpoint is skipped instead (its gzip stream and padding frames are
verified before any of its rows are written, so a skipped checkpoint leaves nothing behind),
and a summary of what was skipped is warned and written to ``conversion_report.json`` in the
dataset folder.

Memory: one checkpoint at a time; the small arrays (about 9 bytes a slot) are loaded whole,
the frames are streamed from the gzip file one episode at a time and handed to the writer in
chunks of about ``chunk_rows`` rows.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data_prep.conversion import (REPORT_FILE, ConversionReport, EpisodeChunker, check_fraction, check_output, game_num_actions,
                                  round_half_up, write_converted)
from data_prep.replay_logs import (CHECKPOINT_FILES, PADDING, STACK_SIZE, FrameFile, check_checkpoint, checkpoint_file, find_game_dir,
                                   list_checkpoints, select_checkpoints)

from scaled_ql.data.schema import CollectionInfo, DatasetFormatError, DatasetMetadata
from scaled_ql.data.writer import default_command


DQN_PROTOCOL = {
    "emulator": "gym *NoFrameskip-v0 (atari-py) as wrapped by Dopamine",
    "rewards": "clipped to [-1, 1] by the agent that logged them",
    "frame_size": 84,
    "frame_stack": STACK_SIZE,
    "frameskip": 4,
    "sticky_action_prob": 0.25,
    "max_episode_frames": 108_000,
    "full_action_space": False,
}
"""The Atari protocol of the DQN Replay runs (Dopamine ``dqn.gin``, gym ``*NoFrameskip-v0``)."""


# ----------------------------------------------------------------------------------------------
# One checkpoint: check, plan, read


@dataclass(frozen=True)
class PlannedEpisode:
    """An episode to write, in chronological positions of its checkpoint.

    Rows 0..T-1 are the transitions at positions ``first .. first + T - 1``. Terminal: the
    final row repeats the frame at ``first + T - 1``. Truncated: the final row is the frame at
    ``first + T``. Positions ``first - 3 .. first - 1`` are its padding slots; for the episode
    joined in progress at a checkpoint's oldest slot (``context`` = 3), they are instead real
    frames of that episode, written as context rows (never transition starts).
    """

    first: int
    steps: int
    terminal: bool
    context: int = 0

    @property
    def frames_stop(self) -> int:
        return self.first + self.steps + (0 if self.terminal else 1)


@dataclass
class CheckpointPlan:
    """Which slots of a checkpoint become which episodes, and what was dropped."""

    order: np.ndarray
    """Slot of every chronological position (fresh slots only)."""
    episodes: list[PlannedEpisode]
    counts: dict[str, int]


def plan_checkpoint(arrays: dict[str, np.ndarray], add_count: int, capacity: int, starts_at_buffer_start: bool, where: str) -> CheckpointPlan:
    """Split the fresh slots of a checkpoint into episodes (see the module docstring)."""
    if add_count < capacity:
        order = np.arange(add_count, dtype=np.int64)
        starts_clean = starts_at_buffer_start
    else:
        cursor = add_count % capacity
        order = np.concatenate([np.arange(cursor, capacity), np.arange(cursor)]).astype(np.int64)
        starts_clean = False
    terminal = arrays["$store$_terminal"][order].astype(bool)
    action = arrays["$store$_action"][order]
    reward = arrays["$store$_reward"][order]
    n = len(order)
    counts = {"fresh_slots": n, "padding_slots": 0, "episodes_terminal": 0, "episodes_truncated": 0, "transitions": 0,
              "dropped_leading_partial": 0, "leading_context_rows": 0, "dropped_trailing_slots": 0}
    ends = np.flatnonzero(terminal).tolist()
    episodes: list[PlannedEpisode] = []
    if starts_clean:
        pos = 0
    else:
        # The episode running at the oldest slot began before it (its start was overwritten). As in
        # Dopamine, whose sampler never starts a transition in the first stack_size - 1 slots after
        # the cursor, its first PADDING slots are context only and its transitions start after them.
        lead_end = ends.pop(0) if ends else None
        last = n - 1 if lead_end is None else lead_end  # its last slot
        steps = (last - PADDING + 1) if lead_end is not None else (last - PADDING)  # truncated: the last slot is the final row
        if steps >= 1:
            episodes.append(PlannedEpisode(PADDING, steps, terminal=lead_end is not None, context=PADDING))
            counts["leading_context_rows"] = PADDING
        else:
            counts["dropped_leading_partial"] = last + 1
        if lead_end is None:
            if steps < 1:
                counts["dropped_leading_partial"] = n
            else:
                counts["dropped_trailing_slots"] = 1
            for ep in episodes:
                counts["episodes_terminal" if ep.terminal else "episodes_truncated"] += 1
                counts["transitions"] += ep.steps
            return CheckpointPlan(order, episodes, counts)
        pos = lead_end + 1
    ends.reverse()  # pop() the next terminal
    while pos < n:
        pad = slice(pos, min(pos + PADDING, n))
        if terminal[pad].any() or action[pad].any() or reward[pad].any():
            bad = pos + int(np.flatnonzero(terminal[pad] | (action[pad] != 0) | (reward[pad] != 0))[0])
            raise DatasetFormatError(
                f"{where}: slot {order[bad]} should be one of the {PADDING} zero padding slots that start an episode "
                f"(after the terminal slot {order[pos - 1] if pos else 'at the buffer start'}), found action {action[bad]}, reward {reward[bad]}, terminal {int(terminal[bad])}"
            )
        counts["padding_slots"] += pad.stop - pad.start
        first = pos + PADDING
        if first >= n:
            break
        if ends:
            end = ends.pop()
            episodes.append(PlannedEpisode(first, end - first + 1, terminal=True))
            pos = end + 1
        else:
            steps = n - 1 - first
            if steps >= 1:
                episodes.append(PlannedEpisode(first, steps, terminal=False))
            counts["dropped_trailing_slots"] = 1 if steps >= 1 else n - first
            break
    for ep in episodes:
        counts["episodes_terminal" if ep.terminal else "episodes_truncated"] += 1
        counts["transitions"] += ep.steps
    return CheckpointPlan(order, episodes, counts)


def subsample_episodes(episodes: list[PlannedEpisode], fraction: float, rng: np.random.Generator) -> list[PlannedEpisode]:
    """Exactly ``round(fraction * N)`` of the N transitions of ``episodes``, as whole episodes
    in random order, the last one cut to a truncated prefix; returned in chronological order."""
    target = round_half_up(fraction * sum(ep.steps for ep in episodes))
    chosen, taken = [], 0
    for i in rng.permutation(len(episodes)).tolist():
        if taken >= target:
            break
        ep = episodes[i]
        if taken + ep.steps <= target:
            chosen.append(ep)
            taken += ep.steps
        else:
            chosen.append(PlannedEpisode(ep.first, target - taken, terminal=False, context=ep.context))
            taken = target
    return sorted(chosen, key=lambda e: e.first)


def _slot_runs(order: np.ndarray, start: int, stop: int) -> list[tuple[int, int]]:
    """Contiguous slot ranges of chronological positions ``[start, stop)`` (split at the wrap)."""
    slots = order[start:stop]
    breaks = np.flatnonzero(np.diff(slots) != 1) + 1
    bounds = np.concatenate(([0], breaks, [len(slots)]))
    return [(int(slots[a]), int(slots[b - 1]) + 1) for a, b in zip(bounds[:-1], bounds[1:])]


def episode_rows(frames: FrameFile, plan: CheckpointPlan, arrays: dict[str, np.ndarray], ep: PlannedEpisode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames [c + T + 1, H, W], actions [c + T], rewards [c + T]) of a planned episode with
    ``c = ep.context`` context rows first; checks its padding frames (an episode with context has none)."""
    block = np.empty((PADDING + ep.steps + 1, *frames.shape[1:]), dtype=np.uint8)
    at = 0
    for a, b in _slot_runs(plan.order, ep.first - PADDING, ep.frames_stop):
        frames.read_into(a, block[at : at + b - a])
        at += b - a
    padding = block[:PADDING].reshape(PADDING, -1).any(axis=1)
    if ep.context:
        assert ep.context == PADDING
        if ep.terminal:
            block[-1] = block[-2]
        slots = plan.order[ep.first - ep.context : ep.first + ep.steps]
        return block, arrays["$store$_action"][slots], arrays["$store$_reward"][slots]
    if padding.any():
        slot = plan.order[ep.first - PADDING + int(np.flatnonzero(padding)[0])]
        raise DatasetFormatError(f"'{frames.path}': slot {slot} should be a zero padding frame before an episode's first step, but it is not all zeros")
    if ep.terminal:  # Dopamine does not store the final observation: repeat the last frame
        block[-1] = block[-2]
    slots = plan.order[ep.first : ep.first + ep.steps]
    return block[PADDING:], arrays["$store$_action"][slots], arrays["$store$_reward"][slots]


# ----------------------------------------------------------------------------------------------
# The converter


def convert_dqn_replay(
    root: str | Path,
    out_dir: str | Path,
    games: Sequence[str],
    runs: Sequence[int] = (1,),
    checkpoints: Sequence[int] | None = None,
    first_fraction: float | None = None,
    sample_fraction: float | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    progress: bool = True,
    *,
    overwrite: bool = False,
    command: str | None = None,
    chunk_rows: int = 20_000,
    max_shard_size: int | str | None = None,
) -> DatasetMetadata:
    """Convert DQN Replay checkpoints of ``games`` x ``runs`` into the dataset folder ``out_dir``.

    See the module docstring for the layout, the slot semantics and the subsets. Games are
    written in the order given, then runs, then checkpoints. Returns the dataset's metadata;
    ``out_dir/conversion_report.json`` lists every converted checkpoint with its counts, and
    what was skipped.
    """
    root = Path(root)
    if not games:
        raise ValueError("convert_dqn_replay needs at least one game")
    if checkpoints is not None and first_fraction is not None:
        raise ValueError("give either checkpoints or first_fraction, not both")
    check_fraction("first_fraction", first_fraction)
    check_fraction("sample_fraction", sample_fraction)
    if not root.is_dir():
        raise DatasetFormatError(f"DQN Replay root '{root}' is not a folder")
    check_output(out_dir, overwrite)
    report = ConversionReport(
        source="dqn_replay",
        settings={"root": str(root), "games": list(games), "runs": [int(r) for r in runs], "checkpoints": None if checkpoints is None else sorted({int(c) for c in checkpoints}),
                  "first_fraction": first_fraction, "sample_fraction": sample_fraction, "seed": seed, "skip_bad": skip_bad},
    )
    selected: dict[tuple[str, int], list[int]] = {}
    collection = CollectionInfo(
        source="",  # completed by _describe once every checkpoint has been read
        policy="DQN (Dopamine) as it trained: epsilon-greedy, epsilon annealed from 1.0 to 0.01",
        epsilon=0.01,
        seed=seed,
        env=dict(DQN_PROTOCOL),
        command=default_command() if command is None else command,
    )
    bar = tqdm(unit="transition", disable=not progress, desc="dqn-replay")

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        chunker = EpisodeChunker(chunk_rows)
        for game in games:
            name, game_dir = find_game_dir(root, game)
            num_actions = game_num_actions(name)
            for run in runs:
                logs = game_dir / str(run) / "replay_logs"
                if not logs.is_dir():
                    err = DatasetFormatError(f"'{logs}': no such folder (run {run} of {name})")
                    if not skip_bad:
                        raise err
                    report.skip(err, logs)
                    continue
                found = list_checkpoints(logs)
                chosen = select_checkpoints(list(found), checkpoints, first_fraction)
                selected[(name, run)] = chosen
                for suffix in chosen:
                    bar.set_description(f"{name} run {run} ckpt {suffix}")
                    files = {n: found.get(suffix, {}).get(n, checkpoint_file(logs, n, suffix)) for n in CHECKPOINT_FILES}
                    try:
                        for frames, actions, rewards, terminal, context in _convert_checkpoint(files, logs, name, run, suffix, num_actions, sample_fraction, seed, skip_bad, report):
                            chunk = chunker.add(name, frames, actions, rewards, terminal, context)
                            bar.update(len(actions))
                            if chunk is not None:
                                yield chunk
                    except DatasetFormatError as err:
                        if not skip_bad:
                            raise
                        report.skip(err, _culprit(err, logs, suffix))
        last = chunker.flush()
        if last is None:
            detail = f"\n{report.summary()}" if report.skipped else ""
            raise DatasetFormatError(f"DQN Replay root '{root}': nothing to convert for games {list(games)}, runs {list(runs)}{detail}")
        _describe(collection, root, selected, checkpoints, first_fraction, sample_fraction, seed, report)
        report.settings["selected_checkpoints"] = {f"{g}/{r}": c for (g, r), c in selected.items()}
        yield last  # write_dataset records ``collection`` after the last chunk

    return write_converted(out_dir, chunks(), collection, report, bar, overwrite=overwrite, max_shard_size=max_shard_size)


def _describe(collection: CollectionInfo, root: Path, selected, checkpoints, first_fraction, sample_fraction, seed, report: ConversionReport) -> None:
    def ranges(values: list[int]) -> str:
        if not values:
            return "none"
        parts, start = [], values[0]
        for a, b in zip(values, values[1:] + [None]):
            if b != a + 1:
                parts.append(str(start) if start == a else f"{start}-{a}")
                start = b
        return ",".join(parts)

    how = "all checkpoints" if checkpoints is None and first_fraction is None else (f"checkpoints {ranges(sorted(set(checkpoints)))}" if checkpoints is not None else f"the first {first_fraction:g} of each run's checkpoints")
    picked = "; ".join(f"{g} run {r}: checkpoints {ranges(c)}" for (g, r), c in selected.items())
    sample = f"; a seeded sample (seed {seed}) of {sample_fraction:g} of each checkpoint's transitions, drawn as whole episodes (the last cut to a truncated prefix)" if sample_fraction else ""
    skipped = f"; {len(report.skipped)} bad input(s) skipped (see {REPORT_FILE})" if report.skipped else ""
    collection.source = (
        f"DQN Replay Dataset (Agarwal et al., 2020; Dopamine logged replay, legacy atari-py ROMs, gym NoFrameskip-v0 with sticky actions) read from '{root}': "
        f"{how} ({picked}){sample}{skipped}. Rewards as stored (clipped to [-1, 1]). Dopamine marks the 27,000-step time limit as terminal, so those "
        "episodes are terminal here too. Dopamine does not store the observation after a terminal transition: a terminal episode's final row repeats its "
        "last frame (never bootstrapped from). Each checkpoint is converted on its own: the episode cut at its oldest slot keeps its transitions after 3 "
        "context rows (steps -3 to -1, frames for the stacks only, as Dopamine's sampler), the one running at its newest slot ends truncated."
    )


def _culprit(err: DatasetFormatError, logs: Path, suffix: int) -> str:
    match = re.search(r"'([^']+)'", str(err))
    return match.group(1) if match else str(logs / f"*_ckpt.{suffix}.gz")


def _convert_checkpoint(files, logs: Path, game: str, run: int, suffix: int, num_actions, sample_fraction, seed: int, skip_bad: bool, report: ConversionReport):
    """Yield ``(frames, actions, rewards, terminal)`` of every episode to write from one checkpoint."""
    missing = [p for p in files.values() if not p.is_file()]
    if missing:
        present = [n for n, p in files.items() if p.is_file()]
        what = "no file of this checkpoint exists" if not present else "missing " + ", ".join(p.name for p in missing)
        raise DatasetFormatError(f"'{missing[0]}': checkpoint {suffix} of '{logs}' is incomplete ({what})")
    arrays, add_count, frames = check_checkpoint(files, game, num_actions)
    try:
        where = f"checkpoint {suffix} of '{logs}'"
        plan = plan_checkpoint(arrays, add_count, len(frames), starts_at_buffer_start=suffix == 0, where=where)
        episodes = plan.episodes
        entry = {"game": game, "run": run, "checkpoint": suffix, "add_count": add_count, "capacity": len(frames), **plan.counts}
        if sample_fraction is not None:
            rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(game.encode()), run, suffix]))
            episodes = subsample_episodes(episodes, sample_fraction, rng)
            entry["sampled_transitions"] = sum(ep.steps for ep in episodes)
        if skip_bad:  # verify everything this checkpoint will read before writing any of it
            for ep in episodes:
                episode_rows(frames, plan, arrays, ep)
            frames.verify()
        for ep in episodes:
            pixels, actions, rewards = episode_rows(frames, plan, arrays, ep)
            yield pixels, actions, rewards, ep.terminal, ep.context
        frames.verify()
        report.inputs.append(entry)
    finally:
        frames.close()

"""Convert the Atari configs of Hugging Face Hub dataset ``jat-project/jat-dataset`` (JAT) into a
scaled_ql dataset, streaming (nothing huge is downloaded at once).

What JAT's Atari data are (sources at the end)
----------------------------------------------

One config per game, ``atari-<game>`` with the game's name lower-cased without separators
(``atari-pong``, ``atari-montezumarevenge``, ``atari-kungfumaster``), splits ``train`` (90% of
the episodes) and ``test`` (10%), Parquet files written by ``Dataset.push_to_hub``. **One row is
one whole episode** (a real game over, across all lives), with three columns of equal length T:

======================  =============================  =========================================
JAT column              feature (Arrow type)           content
======================  =============================  =========================================
``image_observations``  ``Sequence(Image())``          one PNG per step: observation o_t seen
                        (``list<struct<bytes, path>>``) before acting. **Mode RGBA, 84 x 84: the
                                                       4 "channels" are envpool's stack of the 4
                                                       latest 84 x 84 grayscale frames, oldest
                                                       first** (not colour)
``discrete_actions``    ``Sequence(Value("int64"))``   a_t, index in the game's minimal action
                                                       set (envpool's default)
``rewards``             ``Sequence(Value("float32"))`` r_t received for a_t
======================  =============================  =========================================

The final observation (after the last action) is not stored. The data were made by
``data/envs/atari/create_atari_dataset.py`` of huggingface/jat: Sample-Factory APPO agents
(``edbeeching/atari_2B_atari_<game>_1111``), one envpool ``<Game>-v5`` env (frameskip 4 with
max-pooling of the last two frames, 84x84 grayscale from ALE's palette, INTER_AREA resize,
stack 4, up to 30 no-op starts, FIRE on reset, no sticky actions, ``episodic_life=True``,
minimal action set). Each step the script stores ``Image.fromarray(obs.transpose(1, 2, 0))``
(envpool's ``(4, 84, 84)`` stack made channel-last, which PIL makes RGBA, which ``datasets``
encodes as PNG), then the action and ``rew``. A row is closed only when
``infos[0]["terminated"]`` (envpool's ``env->game_over()``): life losses (``episodic_life``
dones) do not split rows, and neither does envpool's time limit, after which envpool resets the
game while the row goes on (see "time-limit resets" below).

Column mapping (JAT -> ours, see ``scaled_ql.data.schema`` for our row convention)
----------------------------------------------------------------------------------

* ``frame``: each PNG is decoded with Pillow to a uint8 array. An ``(84, 84, 4)`` image (JAT's
  RGBA stacks) gives **channel 3, the newest frame of the stack**: o_t's own frame (envpool's
  ``PushStack`` pushes each new frame at the back of its deque and ``WriteState`` copies the
  deque in order into channels 0..3). An ``(84, 84)`` image (mode ``L``) is taken as it is.
  Anything else (another size, RGB, 16-bit, ...) is refused with an error naming the column,
  row and step: no resizing or colour conversion is guessed.
  The stacks are also checked: consecutive stacks must overlap (``S_t[..., :3] ==
  S_{t-1}[..., 1:]``); if they overlap the other way round more often (newest first), or mostly
  not at all (not a frame stack), the row is refused.
* ``action`` = ``discrete_actions`` cast to int32 (checked to lie in the game's minimal
  action set when ale_py has the ROM); ``reward`` = ``rewards`` as stored (float32, our column is
  raw). Whether JAT's rewards are clipped is not settled (Sample-Factory's envpool env sets
  ``reward_clip=True``, but JAT's card reports unclipped-looking returns): the report says per
  config whether every stored reward is in {-1, 0, 1} (``rewards_look_clipped``).
* Episode ends. A JAT row of T steps becomes T + 1 rows: rows 0..T-1 are (o_t, a_t, r_t), all
  kept, and since JAT does not store the final observation, **the final row repeats the last
  frame**, with action 0, reward 0 and ``terminal`` set (rows end at game over). A terminal
  target never bootstraps from that row (discount 0), so TD targets are exact; only losses that
  look at next-state features of terminal transitions (e.g. DR3) see the repeated frame. (The
  same decision as ``data_prep.dqn_replay``.)
* Time-limit resets (``truncated``). JAT does not record truncation. envpool's ``Reset`` after
  its step limit (or any game reset) fills all 4 stack slots with the new game's first frame
  (``push_all``); a life loss instead pushes one more frame (its reset's no-ops) so the stacks
  overlap by 2. So a step whose stack has 4 identical frames and overlaps its predecessor by
  neither 1 nor 2 frames is **a new game inside the row**: the row is split there. The part
  before it is written as ``truncated`` with its last stored frame as the (real) final
  observation, dropping that part's last action and reward (their next observation was never
  stored); the part after continues. With ``split_resets=False`` rows are never split (a
  time-limit cut then stays inside one ``terminal`` episode, with one transition that crosses
  the reset). Counts go to ``conversion_report.json`` (``game_resets_split``,
  ``dropped_transitions``, ``life_loss_resets``, ``stack_breaks``).
* Known, accepted differences: at a life loss the frame of the losing step is only in the
  stacks, not in our single frames (our sampler's stack skips it there); the sampler zero-fills
  stacks before an episode's first frame where envpool repeated the first frame.

Sources (read, not run: there is no network access here)
--------------------------------------------------------

* ``huggingface/jat`` ``data/envs/atari/create_atari_dataset.py`` (commit 1b2ecce: features
  ``Sequence(Image())`` / ``Sequence(Value("int64"))`` / ``Sequence(Value("float32"))``,
  ``Image.fromarray(np.transpose(obs, (1, 2, 0)))``, rows closed on ``infos[0]["terminated"]``,
  ``train_test_split(test_size=0.1)``, ``push_to_hub(config_name=f"atari-{task}")``, task-name
  fixes asteroid/kongfumaster/montezuma/privateye); ``data/GUIDELINES.md`` (final observation not
  stored, channel-last images); ``jat/eval/rl/core.py`` (``AtariDictObservationWrapper``: 84x84x4).
* ``sail-sg/envpool`` ``envpool/atari/atari_env.h`` (``PushStack``, ``Reset``, ``WriteState``:
  ``info:terminated = game_over()``, ``trunc``); ``docs/api/atari.rst`` (defaults).
* ``alex-petrenko/sample-factory`` ``sf_examples/envpool/atari/envpool_atari_utils.py``
  (``reward_clip=True, episodic_life=True``, time limit only for Montezuma: 18,000 frames // 4)
  and ``sf_examples/envpool/envpool_wrappers.py`` (``EnvPoolResetFixWrapper``).
* The Hub dataset card and file listings of ``jat-project/jat-dataset`` (configs, splits,
  ``atari-pong/train-*.parquet``); Hub discussion #3 ("image_observation is NOT IMAGE, it is
  frame-stacked 4 grayscale images", as cited by the project's
  ``reference/offline-atari-data-formats.md`` section 3, which agrees with all of the above).

Sources read
------------

``source`` is a Hub repo id (``load_dataset(repo, name=config, split=split, streaming=True)``)
or a local path: a folder with one sub-folder per config (``<source>/atari-pong/``), or, for a
single config, the dataset itself. A config's folder is either what ``save_to_disk`` wrote (a
``DatasetDict``: the ``split`` is taken; a ``Dataset``: used as it is) or Parquet files named
like the Hub's (``<split>-*.parquet``, ``<split>/*.parquet``, ``<split>.parquet``); a single
``.parquet`` file also works. Local Parquet is streamed too.

Bad rows (undecodable PNG, a frame that cannot be mapped, columns of different lengths, an
empty episode, an action outside the game's actions, a non-finite reward, stacks in the wrong
order) raise :class:`~scaled_ql.data.schema.DatasetFormatError` naming the source, config, split,
row, step and column; with ``skip_bad`` the row is skipped (it is read in full before any of it
is written), a summary is warned and written to ``conversion_report.json``. A config that cannot
be used at all (not ``atari-<game>``, unknown game, missing column, missing split) always raises.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from data_prep.conversion import REPORT_FILE, ConversionReport, EpisodeChunker, check_output, game_num_actions, write_converted
from data_prep.jat_episodes import ACTIONS, COLUMNS, OBSERVATIONS, REWARDS, STACK_SIZE, episode_segments
from scaled_ql.data.schema import CollectionInfo, DatasetFormatError, DatasetMetadata, canonical_game_name
from scaled_ql.data.writer import default_command

CONFIG_PREFIX = "atari-"

JAT_PROTOCOL = {
    "emulator": "envpool",
    "frame_size": 84,
    "frame_stack": STACK_SIZE,
    "frameskip": 4,
    "sticky_action_prob": 0.0,
    "full_action_space": False,
    "noop_max": 30,
    "fire_reset": True,
    "episodic_life": True,
}
"""The Atari protocol JAT's data were collected with (envpool defaults + Sample-Factory's settings)."""

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


# ----------------------------------------------------------------------------------------------
# Configs and games


def jat_config_name(game: str) -> str:
    """JAT's config of ``game``: ``"MsPacman"`` -> ``"atari-mspacman"``."""
    return CONFIG_PREFIX + canonical_game_name(game, "convert_hub_dataset games").lower()


def game_of_config(config: str) -> str:
    """The registry name of an ``atari-<game>`` config (``"atari-pong"`` -> ``"Pong"``); errors name the config."""
    if not isinstance(config, str) or not config.startswith(CONFIG_PREFIX) or len(config) == len(CONFIG_PREFIX):
        raise DatasetFormatError(f"config '{config}' is not an Atari config: expected '{CONFIG_PREFIX}<game>', e.g. 'atari-pong'")
    return canonical_game_name(config[len(CONFIG_PREFIX) :], f"config '{config}'")


def resolve_configs(games: Sequence[str] | None, config_names: Sequence[str] | None) -> list[tuple[str, str]]:
    """``(config, game)`` pairs: from ``config_names`` (their games must equal ``games`` when both
    are given, in order) or else from ``games``."""
    if config_names is not None and not isinstance(config_names, str):
        config_names = list(config_names)
    if isinstance(config_names, str):
        config_names = [config_names]
    if isinstance(games, str):
        games = [games]
    if config_names:
        pairs = [(c, game_of_config(c)) for c in config_names]
        if games:
            wanted = [canonical_game_name(g, "convert_hub_dataset games") for g in games]
            if wanted != [g for _, g in pairs]:
                raise ValueError(f"games {list(games)} do not match the games of config_names {[c for c, _ in pairs]} ({[g for _, g in pairs]})")
    elif games:
        pairs = [(jat_config_name(g), canonical_game_name(g, "convert_hub_dataset games")) for g in games]
    else:
        raise ValueError("convert_hub_dataset needs games or config_names")
    seen: dict[str, str] = {}
    for config, game in pairs:
        if game in seen:
            raise ValueError(f"configs '{seen[game]}' and '{config}' are both game {game}: name each game once")
        seen[game] = config
    return pairs


# ----------------------------------------------------------------------------------------------
# Opening one config


def is_local(source: str | Path) -> bool:
    return isinstance(source, Path) or Path(source).exists()


def _quiet_datasets(progress: bool):
    """Silence ``datasets``' own progress bars unless ``progress``."""
    import datasets  # heavy (about a second): only when this converter runs

    @contextlib.contextmanager
    def ctx():
        were_on = datasets.is_progress_bar_enabled()
        if not progress:
            datasets.disable_progress_bars()
        try:
            yield
        finally:
            if were_on and not progress:
                datasets.enable_progress_bars()

    return ctx()


def _split_parquet_files(folder: Path, split: str) -> list[Path]:
    patterns = (f"{split}-*.parquet", f"{split}/*.parquet", f"{split}.parquet", f"data/{split}-*.parquet")
    for pattern in patterns:
        files = sorted(folder.glob(pattern))
        if files:
            return files
    return []


def open_config(source: str | Path, config: str, split: str, *, single: bool, revision: str | None = None):
    """``(rows, where)``: an ``IterableDataset`` of the config's episodes (images not decoded)
    and a description of it for errors. ``single``: the only config, so ``source`` may be it."""
    import datasets  # heavy (about a second): only when this converter runs

    if not is_local(source):
        source = str(source)
        if not _REPO_ID.match(source):
            raise DatasetFormatError(f"source '{source}' is neither an existing local path nor a Hub repo id ('owner/name')")
        where = f"Hub dataset '{source}' config '{config}' split '{split}'"
        try:
            ds = datasets.load_dataset(source, name=config, split=split, streaming=True, revision=revision)
        except ValueError as err:  # unknown config or split
            raise DatasetFormatError(f"{where}: cannot be opened: {err}") from None
        return ds, where

    root = Path(source)
    candidates = [root / config] + ([root] if single else [])
    for path in candidates:
        where = f"local dataset '{path}' (config '{config}') split '{split}'"
        if path.is_file() and path.suffix == ".parquet":
            files = [path]
        elif (path / "dataset_dict.json").is_file():
            dd = datasets.load_from_disk(str(path))
            if split not in dd:
                raise DatasetFormatError(f"{where}: no split '{split}' (found splits {sorted(dd)})")
            return dd[split].to_iterable_dataset(), where
        elif (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
            return datasets.load_from_disk(str(path)).to_iterable_dataset(), f"local dataset '{path}' (config '{config}')"
        elif path.is_dir():
            files = _split_parquet_files(path, split)
            if not files:
                found = sorted(str(p.relative_to(path)) for p in path.rglob("*.parquet"))[:10]
                if found:
                    raise DatasetFormatError(f"{where}: no Parquet file of split '{split}' (expected '{split}-*.parquet' or '{split}/*.parquet'; found {found})")
                continue
        else:
            continue
        ds = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train", streaming=True)
        return ds, where
    expected = f"'{root / config}'" + (f" or '{root}' itself" if single else "")
    raise DatasetFormatError(
        f"local source '{root}': no dataset for config '{config}' (expected {expected} to be a save_to_disk folder or to hold Parquet files of split '{split}')"
    )


def check_columns(ds, where: str) -> None:
    """The three JAT columns must be there; names the missing one and what was found."""
    names = ds.column_names
    if names is None:  # features unknown: look at the first row
        first = next(iter(ds), None)
        names = list(first) if first is not None else list(COLUMNS)
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise DatasetFormatError(f"{where}: missing column '{missing[0]}' (JAT's Atari columns are {list(COLUMNS)}; found {list(names)})")


# ----------------------------------------------------------------------------------------------
# The converter


def convert_hub_dataset(
    source: str | Path,
    out_dir: str | Path,
    games: Sequence[str] | None,
    *,
    config_names: Sequence[str] | None = None,
    split: str = "train",
    max_episodes: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    command: str | None = None,
    revision: str | None = None,
    split_resets: bool = True,
    chunk_rows: int = 20_000,
    max_shard_size: int | str | None = None,
) -> DatasetMetadata:
    """Convert the ``atari-<game>`` configs of a JAT-format dataset into the dataset folder ``out_dir``.

    ``source``: a Hub repo id (e.g. ``jat-project/jat-dataset``, streamed) or a local path (see
    the module docstring). ``games``: the games to convert, their configs named as JAT names
    them (``Pong`` -> ``atari-pong``); or give ``config_names`` (then ``games`` may be None, or
    must list the same games in the same order). ``max_episodes``: at most that many source
    rows (JAT episodes) of each config, in the split's order. ``revision``: a Hub revision to pin.
    ``split_resets``: split rows at detected game resets (see the module docstring).

    Configs are written in the order given. Returns the dataset's metadata;
    ``out_dir/conversion_report.json`` lists every config with its counts, and what was skipped.
    """
    pairs = resolve_configs(games, config_names)
    if max_episodes is not None and int(max_episodes) < 1:
        raise ValueError(f"max_episodes must be at least 1, found {max_episodes}")
    check_output(out_dir, overwrite)
    local = is_local(source)
    report = ConversionReport(
        source="hub",
        settings={"source": str(source), "configs": [c for c, _ in pairs], "games": [g for _, g in pairs], "split": split, "revision": revision,
                  "max_episodes": max_episodes, "skip_bad": skip_bad, "split_resets": split_resets},
    )
    collection = CollectionInfo(
        source="",  # completed once every config has been read
        policy="Sample-Factory APPO agents (edbeeching/atari_2B_atari_<game>_1111), actions sampled from the policy (no epsilon)",
        epsilon=0.0,
        checkpoint="edbeeching/atari_2B_atari_<game>_1111",
        num_envs=1,
        env=dict(JAT_PROTOCOL),
        command=default_command() if command is None else command,
    )
    bar = tqdm(unit="transition", disable=not progress, desc="hub")

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        chunker = EpisodeChunker(chunk_rows)
        for config, game in pairs:
            bar.set_description(f"{config}/{split}")
            with _quiet_datasets(progress):
                ds, where = open_config(source, config, split, single=len(pairs) == 1, revision=revision)
            check_columns(ds, where)
            ds = ds.select_columns(list(COLUMNS)).decode(False)
            num_actions = game_num_actions(game)
            entry = {"config": config, "game": game, "split": split, "rows_read": 0, "rows_skipped": 0, "episodes_terminal": 0, "episodes_truncated": 0,
                     "transitions": 0, "game_resets_split": 0, "dropped_transitions": 0, "life_loss_resets": 0, "stack_breaks": 0,
                     "rows_not_starting_at_reset": 0, "frames": None, "reward_min": None, "reward_max": None, "rewards_look_clipped": None}
            clipped = True
            for i, row in enumerate(_rows(ds, max_episodes)):
                entry["rows_read"] += 1
                row_where = f"{where}, row {i}"
                try:
                    segments, counts = episode_segments(row[OBSERVATIONS], row[ACTIONS], row[REWARDS], row_where, num_actions, split_resets=split_resets)
                except DatasetFormatError as err:
                    if not skip_bad:
                        raise
                    report.skip(err, row_where)
                    entry["rows_skipped"] += 1
                    continue
                entry["frames"] = counts["frames"]
                for key in ("game_resets_split", "dropped_transitions", "life_loss_resets", "stack_breaks"):
                    entry[key] += counts[key]
                entry["rows_not_starting_at_reset"] += int(counts["frames"] == "stack" and not counts["starts_at_reset"])
                rewards = np.asarray(row[REWARDS], dtype=np.float32)
                entry["reward_min"] = float(min(rewards.min(), entry["reward_min"] if entry["reward_min"] is not None else np.inf))
                entry["reward_max"] = float(max(rewards.max(), entry["reward_max"] if entry["reward_max"] is not None else -np.inf))
                clipped = clipped and bool(np.isin(rewards, (-1.0, 0.0, 1.0)).all())
                for frames, actions, rews, terminal in segments:
                    entry["episodes_terminal" if terminal else "episodes_truncated"] += 1
                    entry["transitions"] += len(actions)
                    bar.update(len(actions))
                    chunk = chunker.add(game, frames, actions, rews, terminal)
                    if chunk is not None:
                        yield chunk
            if entry["rows_read"] - entry["rows_skipped"] > 0:
                entry["rewards_look_clipped"] = clipped
            elif entry["rows_read"] == 0:
                raise DatasetFormatError(f"{where}: has no rows")
            report.inputs.append(entry)
        last = chunker.flush()
        if last is None:
            detail = f"\n{report.summary()}" if report.skipped else ""
            raise DatasetFormatError(f"source '{source}': no episode to convert for configs {[c for c, _ in pairs]}{detail}")
        collection.source = _describe(source, local, pairs, split, revision, max_episodes, split_resets, report)
        yield last  # write_dataset records ``collection`` after the last chunk

    return write_converted(out_dir, chunks(), collection, report, bar, overwrite=overwrite, max_shard_size=max_shard_size)


def _rows(ds, max_episodes: int | None) -> Iterable[dict[str, Any]]:
    for i, row in enumerate(ds):
        if max_episodes is not None and i >= max_episodes:
            return
        yield row


def _describe(source, local: bool, pairs, split: str, revision, max_episodes, split_resets: bool, report: ConversionReport) -> str:
    if local:
        origin = "; ".join(f"local dataset '{source}' config {config}" for config, _ in pairs)
    else:
        origin = "; ".join(f"Hugging Face Hub {source}/{config}" for config, _ in pairs)
    rev = f", revision {revision}" if revision else ""
    limit = f", the first {max_episodes} episode(s) of each config" if max_episodes else ""
    clipped = [e["config"] for e in report.inputs if e.get("rewards_look_clipped")]
    reward_note = (f"Every stored reward of {', '.join(clipped)} is in {{-1, 0, 1}} (they look clipped). " if clipped else "")
    skipped = f"; {len(report.skipped)} bad row(s) skipped (see {REPORT_FILE})" if report.skipped else ""
    resets = sum(e["game_resets_split"] for e in report.inputs)
    return (
        f"{origin} (split {split}{rev}{limit}{skipped}), JAT format (Gallouedec et al., 2024): Sample-Factory APPO agents on envpool v5 "
        "(frameskip 4 with max-pooling, 84x84 grayscale, 4-frame stacks, up to 30 no-op starts, FIRE on reset, no sticky actions, "
        "episodic-life training wrapper; envpool's default time limit, 4,500 agent steps for Montezuma's Revenge). "
        "Frames: the newest frame (channel 3) of each stored RGBA 4-frame stack. Rewards as stored. " + reward_note +
        "JAT rows end at game over and do not store the final observation: a terminal episode's final row repeats its last frame "
        "(never bootstrapped from). JAT does not record time-limit truncation"
        + (f"; {resets} game reset(s) found inside rows (4 identical stacked frames) split them into a truncated part ending at its last stored frame "
           "and the rest" if split_resets else "; rows were not split at game resets")
        + "."
    )

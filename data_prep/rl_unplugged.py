"""Convert RL Unplugged Atari TFRecord shards into a scaled_ql dataset, without TensorFlow.

Files read (GZIP-compressed TFRecords; uncompressed ones are read too), named as released::

    <anything>/<Game>/run_<k>-<iiiii>-of-<nnnnn>

Two variants, told apart by the features of each file's records (field names and types as
DeepMind's ``rl_unplugged/atari.py`` and TFDS ``rlu_atari`` parse them):

* **transitions** (``gs://rl_unplugged/atari/<Game>/run_<k>-<iiiii>-of-00100``): one
  ``tf.train.Example`` per SARSA transition: ``o_t`` / ``o_tp1`` (bytes x 4: PNG frames of
  the 84x84x4 stack, oldest first), ``a_t`` / ``a_tp1`` (int64), ``r_t`` / ``d_t`` /
  ``episode_return`` (float), ``episode_id`` (int64 holding a uint64). There is no step index.
* **episodes** (``gs://rl_unplugged/atari_episodes_ordered/<Game>/run_<k>-<iiiii>-of-00050``):
  one ``tf.train.Example`` per episode: ``observations`` (bytes x T, single PNG frames),
  ``actions`` (int64 x T), ``unclipped_rewards`` / ``clipped_rewards`` / ``discounts``
  (float x T), ``checkpoint_idx`` / ``episode_idx`` (int64), ``episode_return`` /
  ``clipped_episode_return`` (float).

Reading: the TFRecord framing (uint64 length, masked CRC-32C of the length, data, masked
CRC-32C of the data) is parsed here and both CRCs are verified (vectorized numpy CRC-32C);
the Example protobuf is decoded by a small wire-format parser; PNGs are decoded with Pillow
(8-bit grayscale only, as ``decode_png(channels=1)`` yields for these files).

**Episodes variant -> rows.** Step t holds observation o_t, action a_t and reward r_t (TFDS
does not shift rewards; that ``r_t`` sits on the step of ``a_t`` is TFDS's reading, not
confirmed by DeepMind's code). Rows are the T observations, the last one the final row: its
action and reward are dropped (after the final observation there is no next one; when
``discounts[-1] == 0`` TFDS says only its observation is valid). The episode is ``terminal``
when ``discounts[-1] == 0``, else ``truncated``. Rewards: ``unclipped_rewards`` (our
``reward`` column is raw).

**Transitions variant -> rows.** Records carry no step index and may come in any order, so
episodes are rebuilt from the frames themselves, one file at a time: the transitions of an
``episode_id`` are edges from the stack ``o_t`` to the stack ``o_tp1`` (frames identified by
a hash of their PNG bytes; if the same frame was encoded to different bytes, the file is
re-read hashing decoded pixels), every record is checked to have ``o_tp1[:3] == o_t[1:]``,
the first transition is the one whose stack has no predecessor and whose three oldest frames
are zero (Dopamine's padding), and the episode is the trail through all its transitions
(Hierholzer's algorithm). Row t is the newest frame of ``o_t``; the final row is the newest
frame of the last ``o_tp1`` (a real observation, also for terminal transitions), marked
``terminal`` if that transition has ``d_t == 0``, else ``truncated``. Limits:

* if an episode's stacks repeat (identical 4-frame stacks at different times, e.g. a static
  screen), the order of the repeated loops is ambiguous; the rebuilt order is one in which
  every transition's ``o_t``, ``o_tp1``, action and reward are exactly as stored, but the
  looped segments may be permuted;
* an episode split over several files (or with missing transitions) keeps only the part
  that starts at its first step, up to the first gap, as ``truncated``; parts without the
  first step are dropped and counted in ``conversion_report.json``;
* memory grows with a file: its PNG bytes (each frame once) are held until it is done.
  ``r_t`` is stored as given (the DQN Replay origin suggests it is clipped).

Bad input (truncated or corrupt gzip, a CRC mismatch, a truncated record, a record that is
not an Example, a missing feature or one of the wrong type or length, a non-PNG or non-gray
frame, frames of other sizes) raises :class:`~scaled_ql.data.schema.DatasetFormatError`
naming the file, the record and the problem; with ``skip_bad`` the file is skipped (every
file is then read and checked in full before any of its rows are written), the rest
converts, and a summary is warned and written to ``conversion_report.json``.
"""

from __future__ import annotations

import glob
import hashlib
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from data_prep.conversion import (REPORT_FILE, ConversionReport, EpisodeChunker, actions_in_range, check_actions, check_output,
                                  game_num_actions, write_converted)
from data_prep.dqn_replay import DQN_PROTOCOL
from data_prep.tfrecord import ProtoError, example_feature, parse_example, read_tfrecords
from scaled_ql.data.schema import FRAME_SHAPE, CollectionInfo, DatasetFormatError, DatasetMetadata, canonical_game_name
from scaled_ql.data.writer import default_command

SHARD_NAME = re.compile(r"^run_(?P<run>\d+)-(?P<shard>\d+)-of-(?P<count>\d+)$")

TRANSITION_FEATURES = {"o_t": ("bytes", 4), "o_tp1": ("bytes", 4), "a_t": ("int64", 1), "a_tp1": ("int64", 1), "r_t": ("float", 1), "d_t": ("float", 1), "episode_id": ("int64", 1), "episode_return": ("float", 1)}
"""Transition records: feature -> (kind, number of values), as ``FixedLenFeature``s."""
EPISODE_FEATURES = {"observations": "bytes", "actions": "int64", "unclipped_rewards": "float", "clipped_rewards": "float", "discounts": "float"}
"""Episode records: the per-step lists (equal lengths) this reader needs."""


# ----------------------------------------------------------------------------------------------
# Frames


def decode_png(data: bytes, where: str) -> np.ndarray:
    """An 8-bit grayscale PNG -> uint8 [H, W]."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise DatasetFormatError(f"{where}: a {img.format} image, expected PNG")
            if img.mode != "L":
                raise DatasetFormatError(f"{where}: a PNG of mode {img.mode}, expected 8-bit grayscale (mode L)")
            frame = np.asarray(img, dtype=np.uint8)
    except DatasetFormatError:
        raise
    except Exception as err:  # Pillow raises several types for undecodable data
        raise DatasetFormatError(f"{where}: not a readable PNG ({type(err).__name__}: {err})") from None
    if frame.shape != FRAME_SHAPE:
        raise DatasetFormatError(f"{where}: a {frame.shape[1]}x{frame.shape[0]} frame, expected 84x84")
    return frame


class _FrameKeys:
    """Identity of a frame: a hash of its PNG bytes, or (``pixels``) of its decoded pixels."""

    def __init__(self, pixels: bool) -> None:
        self.pixels = pixels
        self._cache: dict[bytes, bytes] = {}

    def __call__(self, png: bytes, where: str) -> bytes:
        digest = hashlib.blake2b(png, digest_size=8).digest()
        if not self.pixels:
            return digest
        key = self._cache.get(digest)
        if key is None:
            frame = decode_png(png, where)
            key = self._cache[digest] = hashlib.blake2b(frame.tobytes() + bytes(str(frame.shape), "ascii"), digest_size=8).digest()
        return key


class _NeedPixelKeys(Exception):
    pass


# ----------------------------------------------------------------------------------------------
# Files -> episodes


Episode = tuple[np.ndarray, np.ndarray, np.ndarray, bool]
"""(frames [T + 1, H, W], actions [T], rewards [T], terminal)."""


def episode_records(path: Path, records: Iterable[bytes], stats: dict[str, int], num_actions: int | None = None) -> Iterator[Episode]:
    """Episodes of an ``atari_episodes_ordered`` file (one record each)."""
    for index, data in enumerate(records):
        where = f"RL Unplugged file '{path}', record {index}"
        try:
            features = parse_example(data)
        except ProtoError as err:
            raise DatasetFormatError(f"{where}: {err}") from None
        lists = {name: example_feature(features, name, kind, None, where) for name, kind in EPISODE_FEATURES.items()}
        lengths = {name: len(v) for name, v in lists.items()}
        if len(set(lengths.values())) != 1:
            raise DatasetFormatError(f"{where}: the per-step lists have different lengths {lengths}")
        steps = lengths["observations"] - 1
        stats["records"] += 1
        if steps < 1:
            stats["dropped_short_episodes"] += 1
            continue
        rewards = lists["unclipped_rewards"][:steps]
        if not np.isfinite(rewards).all() or not np.isfinite(lists["discounts"]).all():
            raise DatasetFormatError(f"{where}: rewards or discounts are not finite")
        frames = np.stack([decode_png(png, f"{where}, feature 'observations' value {i}") for i, png in enumerate(lists["observations"])])
        check_actions(lists["actions"][:steps], num_actions, f"{where}, feature 'actions'")
        terminal = bool(lists["discounts"][-1] == 0)
        stats["episodes_terminal" if terminal else "episodes_truncated"] += 1
        stats["transitions"] += steps
        yield frames, lists["actions"][:steps], rewards, terminal


def transition_records(path: Path, records_factory, stats: dict[str, int], num_actions: int | None = None) -> Iterator[Episode]:
    """Episodes rebuilt from the transition records of one file (see the module docstring)."""
    try:
        table = _read_transitions(path, records_factory(), _FrameKeys(pixels=False))
        if _dangling(table) > len(set(table["episode_id"])):
            raise _NeedPixelKeys
    except _NeedPixelKeys:
        table = _read_transitions(path, records_factory(), _FrameKeys(pixels=True))
        stats["pixel_keys"] = 1
    bad = np.flatnonzero(~actions_in_range(np.array(table["action"], dtype=np.int64), num_actions))
    if bad.size:
        raise DatasetFormatError(f"RL Unplugged file '{path}', record {bad[0]}: feature 'a_t' is {table['action'][bad[0]]}, outside the game's {num_actions} actions")
    yield from _rebuild_episodes(path, table, stats)


def _read_transitions(path: Path, records: Iterable[bytes], key: _FrameKeys) -> dict[str, Any]:
    episode_ids, actions, rewards, discounts, returns = [], [], [], [], []
    node_t: list[bytes] = []
    node_tp1: list[bytes] = []
    pngs: dict[bytes, bytes] = {}
    for index, data in enumerate(records):
        where = f"RL Unplugged file '{path}', record {index}"
        try:
            features = parse_example(data)
        except ProtoError as err:
            raise DatasetFormatError(f"{where}: {err}") from None
        values = {name: example_feature(features, name, kind, count, where) for name, (kind, count) in TRANSITION_FEATURES.items()}
        o_t, o_tp1 = values["o_t"], values["o_tp1"]
        keys_t = [key(png, f"{where}, feature 'o_t' value {i}") for i, png in enumerate(o_t)]
        keys_tp1 = [key(png, f"{where}, feature 'o_tp1' value {i}") for i, png in enumerate(o_tp1)]
        if keys_tp1[:3] != keys_t[1:]:
            if not key.pixels:
                raise _NeedPixelKeys
            hint = " (they overlap newest-first: the frames of a stack are expected oldest first)" if keys_tp1[1:] == keys_t[:3] else ""
            raise DatasetFormatError(f"{where}: the first three frames of 'o_tp1' are not the last three of 'o_t'{hint}")
        for k, png in zip(keys_t + keys_tp1[3:], o_t + o_tp1[3:]):
            pngs.setdefault(k, png)
        r, d = float(values["r_t"][0]), float(values["d_t"][0])
        if not (np.isfinite(r) and np.isfinite(d)):
            raise DatasetFormatError(f"{where}: r_t {r} or d_t {d} is not finite")
        episode_ids.append(int(values["episode_id"][0]) & 0xFFFFFFFFFFFFFFFF)
        actions.append(int(values["a_t"][0]))
        rewards.append(r)
        discounts.append(d)
        returns.append(float(values["episode_return"][0]))
        node_t.append(b"".join(keys_t))
        node_tp1.append(b"".join(keys_tp1))
    return {"episode_id": episode_ids, "action": actions, "reward": rewards, "discount": discounts, "return": returns, "node_t": node_t, "node_tp1": node_tp1, "png": pngs}


def _dangling(table: dict[str, Any]) -> int:
    """Non-terminal transitions whose next stack starts no transition of their episode.

    With one encoding per frame that is at most one per episode (where the file holds no
    more of it); many more mean the same frame has several PNG encodings."""
    starts = set(zip(table["episode_id"], table["node_t"]))
    return sum(d != 0 and (e, n) not in starts for e, n, d in zip(table["episode_id"], table["node_tp1"], table["discount"]))


def _trail(start: bytes, edges: list[int], node_t: list[bytes], node_tp1: list[bytes]) -> list[int]:
    """Hierholzer: a trail from ``start`` through the edges (transitions) ``edges``, earliest
    records first where there is a choice; cut at the first place it does not connect."""
    out: dict[bytes, list[int]] = defaultdict(list)
    for e in reversed(edges):
        out[node_t[e]].append(e)
    stack: list[tuple[bytes, int | None]] = [(start, None)]
    path: list[int] = []
    while stack:
        node, edge = stack[-1]
        if out.get(node):
            e = out[node].pop()
            stack.append((node_tp1[e], e))
        else:
            stack.pop()
            if edge is not None:
                path.append(edge)
    path.reverse()
    for k in range(1, len(path)):
        if node_tp1[path[k - 1]] != node_t[path[k]]:
            return path[:k]
    return path


def _rebuild_episodes(path: Path, table: dict[str, Any], stats: dict[str, int]) -> Iterator[Episode]:
    node_t, node_tp1, pngs = table["node_t"], table["node_tp1"], table["png"]
    stats["records"] += len(node_t)
    by_episode: dict[int, list[int]] = defaultdict(list)
    for i, episode_id in enumerate(table["episode_id"]):
        by_episode[episode_id].append(i)
    zero_frames: dict[bytes, bool] = {}

    def frame(k: bytes, where: str) -> np.ndarray:
        return decode_png(pngs[k], where)

    def is_zero(k: bytes) -> bool:
        if k not in zero_frames:
            zero_frames[k] = not frame(k, f"RL Unplugged file '{path}'").any()
        return zero_frames[k]

    for episode_id, edges in sorted(by_episode.items()):
        where = f"RL Unplugged file '{path}', episode_id {episode_id}"
        targets = {node_tp1[e] for e in edges}
        starts = [e for e in edges if node_t[e] not in targets and all(is_zero(node_t[e][8 * j : 8 * j + 8]) for j in range(3))]
        if not starts:
            stats["dropped_without_first_step"] += len(edges)
            continue
        trail = _trail(node_t[starts[0]], edges, node_t, node_tp1)
        ends = [k for k, e in enumerate(trail) if table["discount"][e] == 0]
        if ends:
            trail = trail[: ends[0] + 1]
        stats["dropped_unconnected"] += len(edges) - len(trail)
        last = trail[-1]
        terminal = table["discount"][last] == 0
        frames = np.stack([frame(node_t[e][24:], where) for e in trail] + [frame(node_tp1[last][24:], where)])
        rewards = np.array([table["reward"][e] for e in trail], dtype=np.float32)
        if terminal and len(trail) == len(edges) and not np.isclose(np.clip(rewards, -1, 1).sum(), table["return"][last], atol=1e-3):
            stats["episode_return_mismatch"] += 1
        stats["episodes_terminal" if terminal else "episodes_truncated"] += 1
        stats["transitions"] += len(trail)
        yield frames, np.array([table["action"][e] for e in trail], dtype=np.int64), rewards, terminal


def file_episodes(path: Path, num_actions: int | None = None) -> tuple[str, Iterator[Episode], dict[str, int]]:
    """(variant, episodes, counts) of one file; the variant is told by its first record.
    Actions must be in ``[0, num_actions)`` (unchecked when None)."""
    stats: dict[str, int] = defaultdict(int)
    records = read_tfrecords(path)
    first = next(records, None)
    records.close()
    if first is None:
        return "empty", iter(()), stats
    try:
        names = parse_example(first)
    except ProtoError as err:
        raise DatasetFormatError(f"RL Unplugged file '{path}', record 0: {err}") from None
    counts = ("records", "transitions", "episodes_terminal", "episodes_truncated")
    if "o_t" in names:
        stats.update(dict.fromkeys(counts + ("dropped_without_first_step", "dropped_unconnected", "episode_return_mismatch", "pixel_keys"), 0))
        return "transitions", transition_records(path, lambda: read_tfrecords(path), stats, num_actions), stats
    if "observations" in names:
        stats.update(dict.fromkeys(counts + ("dropped_short_episodes",), 0))
        return "episodes", episode_records(path, read_tfrecords(path), stats, num_actions), stats
    raise DatasetFormatError(f"RL Unplugged file '{path}', record 0: neither a transition (o_t, o_tp1, ...) nor an episode (observations, actions, ...) record; features {sorted(names)}")


# ----------------------------------------------------------------------------------------------
# The converter


def find_shards(paths_or_glob: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files named ``run_<k>-<iiiii>-of-<nnnnn>`` given as paths, glob patterns or folders (searched recursively)."""
    items = [paths_or_glob] if isinstance(paths_or_glob, (str, Path)) else list(paths_or_glob)
    found: set[Path] = set()
    for item in items:
        item_path = Path(item)
        if item_path.is_dir():
            found.update(p for p in item_path.rglob("run_*") if p.is_file() and SHARD_NAME.match(p.name))
        elif item_path.is_file():
            found.add(item_path)
        else:
            matches = [Path(p) for p in glob.glob(str(item), recursive=True)]
            if not matches:
                raise DatasetFormatError(f"RL Unplugged input '{item}': no such file, folder or glob match")
            found.update(p for p in matches if p.is_file())
    return sorted(found)


def shard_identity(path: Path) -> tuple[str, int, int]:
    """(game, run, shard index) from ``<Game>/run_<k>-<iiiii>-of-<nnnnn>``."""
    match = SHARD_NAME.match(path.name)
    if not match:
        raise DatasetFormatError(f"RL Unplugged file '{path}': expected a name like 'run_1-00000-of-00100' inside a folder named after the game")
    game = canonical_game_name(path.parent.name, f"RL Unplugged file '{path}' (the game is its folder's name)")
    return game, int(match["run"]), int(match["shard"])


def convert_rl_unplugged(
    paths_or_glob: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    games: Sequence[str] | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    *,
    overwrite: bool = False,
    command: str | None = None,
    chunk_rows: int = 20_000,
    max_shard_size: int | str | None = None,
) -> DatasetMetadata:
    """Convert RL Unplugged Atari shards (either variant) into the dataset folder ``out_dir``.

    ``paths_or_glob``: files, folders (searched recursively for shard names) or glob patterns.
    ``games``: keep only these games (each must have files). Files are converted in the order
    (game, run, shard). Returns the dataset's metadata; ``out_dir/conversion_report.json``
    lists every file with its counts, and what was skipped.
    """
    check_output(out_dir, overwrite)
    shards = [(shard_identity(p), p) for p in find_shards(paths_or_glob)]
    if games is not None:
        wanted = [canonical_game_name(g, "convert_rl_unplugged games") for g in games]
        present = {ident[0] for ident, _ in shards}
        missing = [g for g in wanted if g not in present]
        if missing:
            raise DatasetFormatError(f"RL Unplugged input '{paths_or_glob}': no files for game(s) {missing} (found {sorted(present)})")
        shards = [(ident, p) for ident, p in shards if ident[0] in wanted]
    if not shards:
        raise DatasetFormatError(f"RL Unplugged input '{paths_or_glob}': no files named like '<Game>/run_1-00000-of-00100'")
    shards.sort(key=lambda s: (s[0], str(s[1])))
    report = ConversionReport(source="rl_unplugged", settings={"inputs": [str(p) for p in ([paths_or_glob] if isinstance(paths_or_glob, (str, Path)) else paths_or_glob)], "games": None if games is None else list(games), "skip_bad": skip_bad})
    variants: set[str] = set()
    collection = CollectionInfo(
        source="",  # completed once every file has been read
        policy="DQN (Dopamine) as it trained: epsilon-greedy, epsilon annealed from 1.0 to 0.01",
        epsilon=0.01,
        env={**DQN_PROTOCOL, "rewards": "episode shards: `unclipped_rewards` (raw); transition shards: `r_t` as "
             "stored (clipped to [-1, 1] by the logging agent)"},
        command=default_command() if command is None else command,
    )
    bar = tqdm(total=len(shards), unit="file", disable=not progress, desc="rl-unplugged")

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        chunker = EpisodeChunker(chunk_rows)
        for (game, run, shard), path in shards:
            bar.set_description(f"{game} run {run} shard {shard}")
            num_actions = game_num_actions(game)
            try:
                if skip_bad:  # read and check the whole file before writing any of it
                    for _ in file_episodes(path, num_actions)[1]:
                        pass
                variant, episodes, stats = file_episodes(path, num_actions)
                for frames, actions, rewards, terminal in episodes:
                    chunk = chunker.add(game, frames, actions, rewards, terminal)
                    if chunk is not None:
                        yield chunk
                variants.add(variant)
                report.inputs.append({"file": str(path), "game": game, "run": run, "shard": shard, "variant": variant, **stats})
            except DatasetFormatError as err:
                if not skip_bad:
                    raise
                report.skip(err, path)
            bar.update(1)
        last = chunker.flush()
        if last is None:
            detail = f"\n{report.summary()}" if report.skipped else ""
            raise DatasetFormatError(f"RL Unplugged input '{paths_or_glob}': no episode to convert{detail}")
        runs = sorted({f"{g} run {r}" for (g, r, _), _ in shards})
        skipped = f"; {len(report.skipped)} bad file(s) skipped (see {REPORT_FILE})" if report.skipped else ""
        collection.source = (
            f"RL Unplugged Atari (Gulcehre et al., 2020), {' and '.join(sorted(variants))} variant, {len(shards)} file(s) of {', '.join(runs)}{skipped}. "
            "The data are DQN Replay runs (Dopamine DQN, sticky actions, legacy atari-py ROMs). Episodes variant: rewards unclipped; the last "
            "observation is the final row (terminal when its discount is 0, else truncated). Transitions variant: episodes rebuilt from the "
            "overlapping frame stacks of each file (see data_prep/rl_unplugged.py); rewards r_t as stored; final rows are real observations."
        )
        yield last  # write_dataset records ``collection`` after the last chunk

    return write_converted(out_dir, chunks(), collection, report, bar, overwrite=overwrite, max_shard_size=max_shard_size)

"""Look inside a dataset: what it holds (``scaled-ql data info``) and one transition (``data show``).

:func:`dataset_info` reads only the small columns (never a frame) of an Arrow dataset folder or
a Parquet folder, one record batch at a time, so it runs in bounded memory on any size.
:func:`transition` builds the i-th transition of a game with ``Sampler.batch_at``, exactly as
training sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from scaled_ql.data.parquet import verify_parquet
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.schema import (COLUMNS, METADATA_FILE, DatasetFormatError, canonical_game_name, check_values, open_arrow_file,
                                   read_metadata, verify_checksums)
from scaled_ql.data.shards import PARQUET_METADATA_FILE, iter_whole_episodes, read_parquet_metadata
from scaled_ql.data.store import ReplayStore

SMALL_COLUMNS = [c for c in COLUMNS if c != "frame"]


# ----------------------------------------------------------------------------------------------
# Dataset summary


def _small_batches(path: Path) -> tuple[str, dict[str, Any], Iterator[pa.RecordBatch]]:
    """(format, metadata dict, record batches of the small columns in row order)."""
    if (path / PARQUET_METADATA_FILE).is_file():

        meta = read_parquet_metadata(path)

        def parquet_batches() -> Iterator[pa.RecordBatch]:
            for entry in meta["files"]:
                yield from pq.ParquetFile(path / entry["name"]).iter_batches(batch_size=65_536, columns=SMALL_COLUMNS)

        return "parquet", meta, parquet_batches()
    arrow = read_metadata(path)  # raises, naming the folder, when it is neither

    def arrow_batches() -> Iterator[pa.RecordBatch]:
        for entry in arrow.files:
            file = path / entry["name"]
            _, table = open_arrow_file(file, arrow.frame_shape)
            small = table.select(SMALL_COLUMNS)
            try:
                small.validate(full=True)  # e.g. a game name that is not UTF-8 (a flipped byte)
            except pa.ArrowInvalid as err:
                raise DatasetFormatError(f"dataset file '{file}' is corrupt (its small columns do not validate: {err}); "
                                         "scaled-ql data verify checks every file's checksum") from None
            yield from small.to_batches()

    return "arrow", {**arrow.to_json_dict(), "path": str(path)}, arrow_batches()


def _stats(values: list[np.ndarray]) -> dict[str, float | None]:
    v = np.concatenate(values) if values else np.zeros(0)
    if v.size == 0:
        return {"mean": None, "min": None, "max": None}
    return {"mean": round(float(v.mean()), 4), "min": round(float(v.min()), 4), "max": round(float(v.max()), 4)}


def dataset_info(path: str | Path) -> dict[str, Any]:
    """Summary of an Arrow dataset folder or a Parquet folder.

    Per game: rows, episodes (terminal / truncated), transitions (= agent steps = rows -
    episodes), episode length and the behaviour policy's episode return (sum of the rewards as
    stored: raw for ALE rollouts, already clipped for DQN-Replay), mean / min / max over all
    episodes, and the mean over episodes that ended with ``terminal`` (truncated ones were cut
    and their return is partial). Also the bytes on disk and the collection info of the
    metadata. Counts are checked against the metadata file; a mismatch names the folder.
    """
    path = Path(path)
    kind, meta, batches = _small_batches(path)
    per_game: dict[str, dict[str, list]] = {}
    for whole in iter_whole_episodes(batches, where=f"dataset folder '{path}'"):
        ends = np.flatnonzero(whole.column("terminal").to_numpy() | whole.column("truncated").to_numpy())
        starts = np.concatenate(([0], ends[:-1] + 1))
        returns = np.add.reduceat(whole.column("reward").to_numpy().astype(np.float64), starts)
        context = np.minimum(whole.column("step").to_numpy()[starts].astype(np.int64), 0)  # -(context rows)
        lengths = ends - starts + context  # agent steps T (context rows of an episode joined in progress excluded)
        terminal = whole.column("terminal").to_numpy()[ends]
        games = whole.column("game").take(pa.array(starts)).to_numpy(zero_copy_only=False)
        for game in dict.fromkeys(games.tolist()):
            mask = games == game
            g = per_game.setdefault(game, {"returns": [], "lengths": [], "terminal": [], "context": []})
            g["context"].append(-context[mask])
            g["returns"].append(returns[mask])
            g["lengths"].append(lengths[mask])
            g["terminal"].append(terminal[mask])
    games_out: dict[str, Any] = {}
    for game in meta["games"]:
        g = per_game.get(game, {"returns": [], "lengths": [], "terminal": [], "context": []})
        lengths = np.concatenate(g["lengths"]) if g["lengths"] else np.zeros(0, np.int64)
        context_rows = int(sum(int(c.sum()) for c in g["context"]))
        terminal = np.concatenate(g["terminal"]) if g["terminal"] else np.zeros(0, bool)
        returns = np.concatenate(g["returns"]) if g["returns"] else np.zeros(0)
        episodes, transitions = int(lengths.size), int(lengths.sum())
        if episodes != int(meta["games"][game]["episodes"]) or episodes + transitions + context_rows != int(meta["games"][game]["rows"]):
            raise DatasetFormatError(
                f"dataset folder '{path}': game '{game}' has {episodes + transitions + context_rows} rows and {episodes} episodes, "
                f"its metadata says {meta['games'][game]['rows']} and {meta['games'][game]['episodes']}"
            )
        games_out[game] = {
            "rows": episodes + transitions + context_rows,
            **({"context_rows": context_rows} if context_rows else {}),
            "episodes": episodes,
            "terminal_episodes": int(terminal.sum()),
            "truncated_episodes": int((~terminal).sum()),
            "transitions": transitions,
            "episode_length": _stats([lengths]),
            "return": _stats([returns]),
            "return_mean_terminal": _stats([returns[terminal]])["mean"],
        }
    extra = sorted(set(per_game) - set(games_out))
    if extra:
        raise DatasetFormatError(f"dataset folder '{path}': rows of game(s) {extra}, which its metadata does not list")
    files = [p for p in path.rglob("*") if p.is_file()]
    info: dict[str, Any] = {
        "path": str(path),
        "format": kind,
        "format_version": meta["format_version"],
        "frame_shape": list(meta["frame_shape"]),
        "games": games_out,
        "total": {
            "rows": sum(g["rows"] for g in games_out.values()),
            "episodes": sum(g["episodes"] for g in games_out.values()),
            "transitions": sum(g["transitions"] for g in games_out.values()),
        },
        "bytes_on_disk": sum(p.stat().st_size for p in files),
        "files": len(files),
        "data_files": len(meta["files"]),
        "collection": meta.get("collection", {}),
    }
    if kind == "parquet":
        info["compression"] = meta.get("compression")
        info["shards"] = {g: v.get("shards") for g, v in meta["games"].items()}
    return info


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def format_dataset_info(info: dict[str, Any]) -> str:
    """:func:`dataset_info` as a few lines of text and a table."""
    h, w = info["frame_shape"]
    c = info.get("collection") or {}
    lines = [
        f"dataset {info['path']}  ({info['format']} format v{info['format_version']}, frames {h}x{w}, "
        f"{_human_bytes(info['bytes_on_disk'])} on disk in {info['files']} files)",
    ]
    if c:
        policy = c.get("policy", "?")
        lines.append(f"source: {c.get('source', '?')}; behaviour policy: {policy}" + (f" (epsilon {c['epsilon']})" if "epsilon" in c else "") + f"; seed {c.get('seed', '?')}")
        if c.get("command"):
            lines.append(f"command: {c['command']}")
    else:
        lines.append("source: (no collection information recorded)")
    if info["format"] == "parquet":
        lines.append(f"compression: {info.get('compression')}; shards: " + ", ".join(f"{g} {n}" for g, n in (info.get("shards") or {}).items()))
    header = ("game", "transitions", "episodes", "term/trunc", "len mean", "return mean", "min", "max", "mean (term.)")
    rows = []

    def fmt(x) -> str:
        return "-" if x is None else f"{x:.1f}" if isinstance(x, float) else str(x)

    for game, g in info["games"].items():
        rows.append((game, str(g["transitions"]), str(g["episodes"]), f"{g['terminal_episodes']}/{g['truncated_episodes']}",
                     fmt(g["episode_length"]["mean"]), fmt(g["return"]["mean"]), fmt(g["return"]["min"]), fmt(g["return"]["max"]),
                     fmt(g["return_mean_terminal"])))
    t = info["total"]
    rows.append(("total", str(t["transitions"]), str(t["episodes"]), "", "", "", "", "", ""))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        lines.append("  ".join([r[0].ljust(widths[0]), *(r[i].rjust(widths[i]) for i in range(1, len(r)))]).rstrip())
    lines.append("returns: sum of stored rewards per episode (raw for ALE rollouts; DQN-Replay stores them clipped)")
    lines.append("checksums: not checked here (scaled-ql data verify PATH reads every byte and checks them)")
    return "\n".join(lines)


def verify_dataset(path: str | Path) -> dict[str, Any]:
    """Check an Arrow or Parquet dataset folder end to end (``scaled-ql data verify``): every
    data file's size and sha256 against the metadata (reads every byte), every reward finite
    and every action in its game's action set, the episode structure and the counts of the
    metadata. Returns a summary; the first problem raises, naming the file (and the row)."""
    path = Path(path)
    if (path / PARQUET_METADATA_FILE).is_file():

        meta = verify_parquet(path)
        files = [path / e["name"] for e in meta["files"]]
        tables = ((f, pq.read_table(f, columns=["action", "reward", "game"])) for f in files)
        collection = meta.get("collection", {})
    else:
        arrow = read_metadata(path)
        verify_checksums(arrow)
        files = [path / e["name"] for e in arrow.files]
        tables = ((f, open_arrow_file(f, arrow.frame_shape)[1]) for f in files)
        collection = arrow.collection
    full = bool(collection.get("env", {}).get("full_action_space"))
    rows = 0
    for file, table in tables:
        codes = pc.dictionary_encode(table.column("game").cast(pa.string())).combine_chunks()
        check_values(table.column("action").to_numpy(), table.column("reward").to_numpy(), codes.dictionary.to_pylist(),
                     codes.indices.to_numpy(zero_copy_only=False), f"dataset file '{file}'", full_action_space=full)
        rows += table.num_rows
    info = dataset_info(path)  # episode structure and counts against the metadata
    return {"path": str(path), "format": info["format"], "data_files": len(files), "rows": rows,
            "checksums": "ok", "values": "ok", "episodes": "ok"}


# ----------------------------------------------------------------------------------------------
# One transition


def transition(
    path_or_store,
    game: str,
    index: int,
    *,
    n_step: int = 3,
    gamma: float = 0.99,
    reward_clip: float = 1.0,
    frame_stack: int = 4,
) -> dict[str, Any]:
    """The ``index``-th transition of ``game`` (in row order) as training builds it.

    ``path_or_store``: an Arrow dataset folder (opened without checking sha256) or a
    :class:`~scaled_ql.data.store.ReplayStore`. Returns ``obs`` / ``next_obs`` (uint8
    ``[frame_stack, H, W]``, oldest first), ``action``, ``reward`` (r_t as stored),
    ``n_step_return`` (sum of gamma^i clip(r_{t+i}) over ``steps`` <= n rewards), ``discount``
    (gamma^steps, 0 when the target reaches a terminal row), ``terminal`` / ``truncated`` (the
    target reaches the episode's last row, ended that way), and where it comes from (``row``,
    ``episode_id``, ``step``, ``next_step``).
    """
    if isinstance(path_or_store, ReplayStore):
        store = path_or_store
    else:
        path = Path(path_or_store)
        if (path / PARQUET_METADATA_FILE).is_file() and not (path / METADATA_FILE).is_file():
            raise DatasetFormatError(f"'{path}' is a Parquet folder; transitions are read from the Arrow format (convert it with scaled-ql data import-parquet)")
        store = ReplayStore(path, list(read_metadata(path).games), verify_checksums=False)
    game = canonical_game_name(game, f"transition of {store.paths[0]}")
    if game not in store.games:
        raise KeyError(f"game '{game}' is not in dataset {[str(p) for p in store.paths]} (it holds {list(store.games)})")
    game_id = store.games.index(game)
    starts = store.valid_starts(game_id)
    if not -starts.size <= index < starts.size:
        raise IndexError(f"game '{game}' has {starts.size} transitions in {[str(p) for p in store.paths]}; index {index} is out of range")
    row = int(starts[index])
    sampler = Sampler(store, len(store.games), n_step=n_step, gamma=gamma, reward_clip=reward_clip, frame_stack=frame_stack)
    batch = sampler.batch_at(np.array([row]))
    steps = int(min(int(store.episode_end[row]) - row, n_step))
    boot = row + steps
    return {
        "game": game,
        "index": int(index) % starts.size,
        "transitions": int(starts.size),
        "row": row,
        "episode_id": int(store.episode_id[row]),
        "step": int(store.step[row]),
        "next_step": int(store.step[boot]),
        "steps": steps,
        "obs": batch.obs[0],
        "action": int(batch.action[0]),
        "reward": float(store.reward[row]),
        "n_step_return": float(batch.reward[0]),
        "discount": float(batch.discount[0]),
        "next_obs": batch.next_obs[0],
        "terminal": bool(store.terminal[boot]),
        "truncated": bool(store.truncated[boot]),
        "n_step": n_step,
        "gamma": gamma,
        "reward_clip": reward_clip,
    }


def format_transition(t: dict[str, Any]) -> str:
    """:func:`transition` as text (frames summarized; see :func:`save_transition_image`)."""
    def frames(stack: np.ndarray) -> str:
        return ", ".join("zeros (before the episode)" if not f.any() else f"mean {f.mean():.1f}" for f in stack)

    end = "terminal: no bootstrap" if t["terminal"] else "truncated: bootstraps from the final observation" if t["truncated"] else "inside the episode"
    return "\n".join([
        f"{t['game']} transition {t['index']} of {t['transitions']}: row {t['row']}, episode_id {t['episode_id']}, step {t['step']} -> {t['next_step']} ({t['steps']} steps, {end})",
        f"action {t['action']}, reward r_t {t['reward']:g}",
        f"{t['n_step']}-step return of rewards clipped to +-{t['reward_clip']:g}: {t['n_step_return']:.6g}, discount {t['discount']:.6g} (gamma {t['gamma']:g})",
        f"obs frames (oldest first): {frames(t['obs'])}",
        f"next_obs frames: {frames(t['next_obs'])}",
    ])


def save_transition_image(t: dict[str, Any], path: str | Path) -> Path:
    """Write ``obs`` (top row) and ``next_obs`` (bottom row) of a transition as one grayscale PNG."""
    k, h, w = t["obs"].shape
    gap = 2
    canvas = np.full((2 * h + gap, k * w + (k - 1) * gap), 128, np.uint8)
    for r, stack in enumerate((t["obs"], t["next_obs"])):
        for i, frame in enumerate(stack):
            canvas[r * (h + gap) : r * (h + gap) + h, i * (w + gap) : i * (w + gap) + w] = frame
    path = Path(path)
    Image.fromarray(canvas, mode="L").save(path)
    return path

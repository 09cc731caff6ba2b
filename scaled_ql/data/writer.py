"""Writing a dataset folder (:mod:`scaled_ql.data.schema`) from chunks of whole episodes: streamed
to Arrow, saved by ``datasets``, checked, with its metadata and card, and moved into place only
once complete; plus the checks of an output folder before any work starts."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from scaled_ql.data.card import add_episode_returns, render_card, return_stats, value_counts
from scaled_ql.data.schema import (_SCALAR_TYPES, CARD_FILE, COLUMNS, FORMAT_VERSION, FRAME_SHAPE, METADATA_FILE, CollectionInfo,
                                   DatasetFormatError, DatasetMetadata, canonical_game_name, check_episodes, check_values,
                                   dataset_features, known_game, sha256_file)


def chunk_to_table(chunk: Mapping[str, Any], frame_shape: Sequence[int] = FRAME_SHAPE, where: str = "chunk",
                   full_action_space: bool = False) -> pa.Table:
    """Check one chunk of whole episodes (a dict of column arrays) and make an Arrow table."""
    missing = [name for name in COLUMNS if name not in chunk]
    if missing:
        raise DatasetFormatError(f"{where}: missing column(s) {missing}")
    frames = np.asarray(chunk["frame"])
    if frames.dtype != np.uint8 or frames.ndim != 3 or frames.shape[1:] != tuple(frame_shape):
        raise DatasetFormatError(f"{where}: column 'frame' must be uint8 [rows, {frame_shape[0]}, {frame_shape[1]}], found {frames.dtype} {list(frames.shape)}")
    n = frames.shape[0]
    columns = {name: np.asarray(chunk[name], dtype=None if name == "game" else np.dtype(dtype)) for name, dtype in _SCALAR_TYPES.items()}
    for name, values in columns.items():
        if values.shape != (n,):
            raise DatasetFormatError(f"{where}: column '{name}' has shape {list(values.shape)}, expected [{n}] like 'frame'")
    names, inverse = np.unique(columns["game"].astype(str), return_inverse=True)
    canonical = [canonical_game_name(name, where) for name in names.tolist()]
    columns["game"] = np.asarray(canonical, dtype=object)[inverse.reshape(-1)]
    check_values(columns["action"], columns["reward"], canonical, inverse.reshape(-1), where, full_action_space=full_action_space)
    check_episodes(columns["episode_id"], columns["step"], columns["terminal"], columns["truncated"], columns["action"], columns["reward"], where)
    height, width = frame_shape
    pixels = pa.array(np.ascontiguousarray(frames).reshape(-1))
    arrays = {"frame": pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(pixels, width), height)}
    for name, dtype in _SCALAR_TYPES.items():
        arrays[name] = pa.array(columns[name], type=pa.type_for_alias(dtype))
    return pa.table(arrays)


def write_dataset(
    path: str | Path,
    chunks: Iterable[Mapping[str, Any]],
    *,
    collection: CollectionInfo | None = None,
    frame_shape: Sequence[int] = FRAME_SHAPE,
    shard_rows: int = 2_000,
    max_shard_size: int | str | None = None,
    overwrite: bool = False,
) -> DatasetMetadata:
    """Write a dataset folder from ``chunks`` and return its metadata.

    Each chunk is a mapping of column name -> array (see the module docstring) holding whole
    episodes; chunks are streamed to an Arrow file as they come (memory stays bounded), then
    ``datasets`` saves the folder (``save_to_disk``, sharded by ``max_shard_size``), and the
    metadata file and dataset card are added. The folder appears at ``path`` only once
    complete. ``overwrite`` replaces an existing scaled_ql dataset folder at ``path``.
    """
    import datasets  # heavy (about a second to import): loaded when first needed
    from datasets.arrow_writer import ArrowWriter  # heavy (about a second to import): loaded when first needed

    path = Path(path)
    frame_shape = tuple(int(x) for x in frame_shape)
    check_output_folder(path, overwrite)
    target = path.resolve()
    remove_stale_temporaries(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    (work / _OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": _hostname()}))
    try:
        features = dataset_features(frame_shape)
        counts: dict[str, dict[str, int]] = {}
        seen_ids: set[int] = set()
        returns: dict[str, list[float]] = {}
        writer = ArrowWriter(features=features, path=str(work / "rows.arrow"), writer_batch_size=shard_rows)
        try:
            for i, chunk in enumerate(chunks):
                table = chunk_to_table(chunk, frame_shape, where=f"writing '{path}', chunk {i}",
                                       full_action_space=bool(collection is not None and collection.env.get("full_action_space")))
                if table.num_rows == 0:
                    continue
                ends = np.flatnonzero(np.asarray(table["terminal"]) | np.asarray(table["truncated"]))
                ids = np.asarray(table["episode_id"])[ends].tolist()
                repeated = seen_ids.intersection(ids)
                if repeated or len(set(ids)) != len(ids):
                    raise DatasetFormatError(f"writing '{path}', chunk {i}: episode_id {sorted(repeated)[:1] or ids} is used by two episodes; ids must be unique")
                seen_ids.update(ids)
                rows_per_game = value_counts(table["game"])
                episodes_per_game = value_counts(table["game"].take(pa.array(ends)))
                context = np.asarray(table["step"]) < 0
                context_per_game = value_counts(table["game"].filter(pa.array(context))) if context.any() else {}
                add_episode_returns(returns, table, ends)
                for name, rows in rows_per_game.items():
                    c = counts.setdefault(name, {"rows": 0, "episodes": 0, "steps": 0})
                    c["rows"] += rows
                    c["episodes"] += episodes_per_game.get(name, 0)
                    if context_per_game.get(name):
                        c["context_rows"] = c.get("context_rows", 0) + context_per_game[name]
                    c["steps"] = c["rows"] - c["episodes"] - c.get("context_rows", 0)
                writer.write_table(table)
            if not counts:
                raise DatasetFormatError(f"writing '{path}': no rows were given")
            for name, values in returns.items():
                counts[name] |= return_stats(values)
            for name in counts:  # a game variant records its ALE mode and difficulty beside its name
                spec = known_game(name)
                if spec is not None and spec.is_variant:
                    counts[name] |= {"game": spec.base, "mode": spec.mode, "difficulty": spec.difficulty}
            writer.finalize()
        finally:
            writer.close()

        staging = work / "dataset"
        bars_were_on = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            ds = datasets.Dataset.from_file(str(work / "rows.arrow"))
            ds.save_to_disk(str(staging), max_shard_size=max_shard_size)
            del ds
        finally:
            if bars_were_on:
                datasets.enable_progress_bars()
        os.remove(work / "rows.arrow")

        state = json.loads((staging / "state.json").read_text())
        files = []
        for entry in state["_data_files"]:
            file = staging / entry["filename"]
            with pa.memory_map(str(file), "r") as mapped:
                rows = pa.ipc.open_stream(mapped).read_all().num_rows
            files.append({"name": entry["filename"], "rows": rows, "bytes": file.stat().st_size, "sha256": sha256_file(file)})
        meta = DatasetMetadata(
            path=path,
            format_version=FORMAT_VERSION,
            frame_shape=frame_shape,  # type: ignore[arg-type]
            games=counts,
            files=files,
            collection=asdict(collection) if collection is not None else {},
        )
        (staging / METADATA_FILE).write_text(json.dumps(meta.to_json_dict(), indent=2) + "\n")
        (staging / CARD_FILE).write_text(render_card(meta))
        if target.exists():  # swap: the old folder moves into `work` (removed below), the new one takes its place
            os.replace(target, work / "replaced")
        os.replace(staging, target)
        return meta
    except OSError as err:  # a full disk, a read-only folder: name the dataset being written (pyarrow's errors do not)
        raise OSError(err.errno, f"writing dataset: {err.strerror or err}", str(err.filename or path)) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


_OWNER_FILE = "scaled_ql_writer.json"
"""In a hidden work folder ``.<name>.XXXX`` next to the output: the writing process's pid and host."""


def _hostname() -> str:
    return socket.gethostname()


def check_output_folder(path: str | Path, overwrite: bool) -> None:
    """Fail, before any work, where :func:`write_dataset` would refuse the output ``path``: an
    existing file, a non-empty folder without ``overwrite``, or a folder that is not a
    scaled_ql dataset (never replaced, even with ``overwrite``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"dataset folder '{path}': a file (not a folder) is at that path; choose another output path")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(f"dataset folder '{path}' already exists and is not empty (pass overwrite=True / --overwrite to replace it)")
        if not (path / METADATA_FILE).is_file():
            raise FileExistsError(f"refusing to overwrite '{path}': it is not a scaled_ql dataset folder (no {METADATA_FILE})")
        if Path.cwd().resolve().is_relative_to(path.resolve()):
            raise FileExistsError(f"refusing to overwrite '{path}': it holds the current working directory")


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the hidden work folders ``.<name>.XXXX`` that a killed writer of ``path`` left next
    to it (its process is gone), saying so on stderr; returns them. A work folder of a writer
    still running on this host is left alone."""
    path = Path(path).resolve()
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.glob(f".{path.name}.*"):
        if not candidate.is_dir() or candidate.is_symlink():
            continue
        owner = candidate / _OWNER_FILE
        if owner.is_file():
            try:
                info = json.loads(owner.read_text())
                pid, host = int(info["pid"]), str(info["host"])
            except (ValueError, KeyError, TypeError, OSError):
                continue
            if host != _hostname() or _process_alive(pid):
                continue
        elif not {p.name for p in candidate.iterdir()} <= {"rows.arrow", "dataset", "replaced"}:
            continue  # not a work folder of write_dataset (written before owner files existed)
        size = sum(f.stat().st_size for f in candidate.rglob("*") if f.is_file())
        shutil.rmtree(candidate, ignore_errors=True)
        print(f"removed '{candidate}' ({size / 2**20:.1f} MiB): an unfinished write of '{path.name}' whose process is gone",
              file=sys.stderr)
        removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_command() -> str:
    """The current process's command line, for the dataset card."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else ""

"""Parquet shards of a dataset, for the Hub and for streaming: export, verify, import.

The training format (:mod:`scaled_ql.data.schema`) is uncompressed Arrow, memory-mapped by the
store. For publishing and for data larger than a disk, the same rows are also written as
zstd-compressed Parquet shards, one group of shards per game::

    <out>/
        README.md                          dataset card; YAML ``configs``: ``all`` (default)
                                           and one config per game
        scaled_ql_parquet.json             format, frame shape, per-game counts, the source's
                                           collection info, and every shard's rows, episodes,
                                           bytes and sha256
        data/<Game>/train-00000-of-00003.parquet
        ...

``datasets.load_dataset("parquet", data_files=...)``, ``load_dataset(<out or repo id>, "Pong")``
and the Hub's dataset viewer read it as they are.

Decisions:

* **Frames are raw bytes.** Column ``frame`` is Parquet ``binary`` (``datasets.Value("binary")``)
  holding the H*W pixels of one frame, row-major; ``np.frombuffer(b, np.uint8).reshape(H, W)``
  decodes it. Stored as nested fixed-size lists (the Arrow format's type), Parquet writes a
  repetition level per pixel: on real ALE frames that read 19-37x slower and came out 1.8-2.5x
  larger than raw bytes under the same zstd (see ``docs/DATA.md``). Every other column
  keeps the Arrow format's name and type.
* **A shard holds whole episodes of one game**, rows in the source's order, so a shard can be
  read, imported or streamed on its own (a rank streams only its own shards). A shard closes
  at the first episode end at or past ``rows_per_shard`` rows (one episode longer than that
  makes a larger shard).
* **Row groups** of ``row_group_rows`` rows (the unit a streaming reader fetches).
* Games appear in the order of the source's ``scaled_ql_dataset.json``; within a game, rows keep
  the source's order. :func:`import_parquet` writes games in that order, so a source written
  game by game (as ``scaled-ql prep`` and the converters write) comes back row for row.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scaled_ql.data.card import render_parquet_card
from scaled_ql.data.schema import (CARD_FILE, FORMAT_NAME, METADATA_FILE, CollectionInfo, DatasetFormatError, DatasetMetadata,
                                   canonical_game_name, open_arrow_file, read_metadata, sha256_file, verify_checksums)
from scaled_ql.data.shards import (DATA_DIR, PARQUET_FORMAT, PARQUET_METADATA_FILE, PARQUET_VERSION, episode_bounds,
                                   iter_shard_tables, iter_whole_episodes, parquet_schema, read_parquet_metadata, shard_name,
                                   shards_of, table_to_chunk, to_parquet_table)
from scaled_ql.data.writer import write_dataset


def arrow_batches(meta: DatasetMetadata) -> Iterator[pa.RecordBatch]:
    """Record batches of every Arrow file of a dataset folder, in row order, memory-mapped."""
    for entry in meta.files:
        _, table = open_arrow_file(meta.path / entry["name"], meta.frame_shape)
        yield from table.to_batches()


class _GameShards:
    """Writes one game's whole-episode tables into numbered shards of about ``rows_per_shard`` rows."""

    def __init__(self, folder: Path, game: str, frame_shape, rows_per_shard: int, row_group_rows: int, compression: str, compression_level: int | None):
        self.folder, self.game, self.frame_shape = folder, game, frame_shape
        self.rows_per_shard, self.row_group_rows = rows_per_shard, row_group_rows
        self.compression, self.compression_level = compression, compression_level
        self.parts: list[dict[str, Any]] = []  # finished shards: temp path, rows, episodes
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._shard_rows = 0
        self._shard_episodes = 0

    def add(self, table: pa.Table) -> None:
        """Append whole episodes of this game, closing shards at episode ends."""
        while table.num_rows:
            starts, ends = episode_bounds(table)
            room = self.rows_per_shard - self._shard_rows
            # Take episodes up to the first whose end reaches the shard's size.
            reach = np.flatnonzero(ends + 1 >= room)
            take = int(reach[0]) + 1 if reach.size else len(ends)
            rows = int(ends[take - 1]) + 1
            self._append(table.slice(0, rows), take)
            table = table.slice(rows)
            if self._shard_rows >= self.rows_per_shard:
                self._close_shard()

    def _append(self, table: pa.Table, episodes: int) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._shard_rows += table.num_rows
        self._shard_episodes += episodes
        if self._pending_rows >= self.row_group_rows:
            self._flush(whole_groups_only=True)

    def _flush(self, whole_groups_only: bool) -> None:
        if not self._pending_rows:
            return
        table = pa.concat_tables(self._pending)
        keep = table.num_rows % self.row_group_rows if whole_groups_only else 0
        write = table.slice(0, table.num_rows - keep)
        if self._writer is None:
            path = self.folder / f".part-{len(self.parts):05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(
                str(path), parquet_schema(self.frame_shape), compression=self.compression,
                compression_level=self.compression_level, use_dictionary=["game"], write_statistics=["episode_id", "step", "game"],
            )
            self._path = path
        for start in range(0, write.num_rows, self.row_group_rows):
            group = write.slice(start, self.row_group_rows)
            self._writer.write_table(to_parquet_table(group, self.frame_shape), row_group_size=self.row_group_rows)
        rest = table.slice(table.num_rows - keep)
        self._pending = [rest] if keep else []
        self._pending_rows = keep

    def _close_shard(self) -> None:
        self._flush(whole_groups_only=False)
        if self._writer is not None:
            self._writer.close()
            self.parts.append({"path": self._path, "rows": self._shard_rows, "episodes": self._shard_episodes})
        self._writer = None
        self._shard_rows = self._shard_episodes = 0

    def close(self) -> None:
        if self._shard_rows:
            self._close_shard()


def export_parquet(
    dataset_dir: str | Path,
    out_dir: str | Path,
    *,
    rows_per_shard: int = 100_000,
    row_group_rows: int = 1_024,
    compression: str = "zstd",
    compression_level: int | None = None,
    verify: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the dataset folder ``dataset_dir`` (Arrow format) as Parquet shards in ``out_dir``.

    Streams the memory-mapped Arrow files once (RAM holds about one row group per game); the
    folder appears at ``out_dir`` only when complete. ``verify`` checks the source's sha256
    first. ``overwrite`` replaces an existing scaled_ql Parquet folder. Returns a report
    (rows, shards per game, bytes before and after, seconds, rows/s).
    """
    if rows_per_shard < 1 or row_group_rows < 1:
        raise ValueError(f"rows_per_shard ({rows_per_shard}) and row_group_rows ({row_group_rows}) must be positive")
    start_time = time.perf_counter()
    meta = read_metadata(dataset_dir)
    if verify:
        verify_checksums(meta)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite, PARQUET_METADATA_FILE)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        writers = {g: _GameShards(work / DATA_DIR / g, g, meta.frame_shape, rows_per_shard, row_group_rows, compression, compression_level) for g in meta.games}

        def route(whole: pa.Table) -> None:
            starts, ends = episode_bounds(whole)
            games = whole.column("game").take(pa.array(starts)).to_pylist()
            # Runs of consecutive episodes of the same game go to that game's shards in one piece.
            run = 0
            for i in range(1, len(games) + 1):
                if i == len(games) or games[i] != games[run]:
                    if games[run] not in writers:
                        raise DatasetFormatError(f"dataset folder '{meta.path}': rows of game '{games[run]}', which its {METADATA_FILE} does not list")
                    writers[games[run]].add(whole.slice(int(starts[run]), int(ends[i - 1] - starts[run] + 1)))
                    run = i

        for whole in iter_whole_episodes(arrow_batches(meta), where=f"dataset folder '{meta.path}'"):
            route(whole)

        files = []
        games_out: dict[str, dict[str, int]] = {}
        for game, writer in writers.items():
            writer.close()
            count = len(writer.parts)
            for i, part in enumerate(writer.parts):
                name = shard_name(game, i, count)
                os.replace(part["path"], work / name)
                files.append({"name": name, "game": game, "rows": part["rows"], "episodes": part["episodes"],
                              "bytes": (work / name).stat().st_size, "sha256": sha256_file(work / name)})
            rows = sum(p["rows"] for p in writer.parts)
            episodes = sum(p["episodes"] for p in writer.parts)
            if rows != meta.games[game]["rows"] or episodes != meta.games[game]["episodes"]:
                raise DatasetFormatError(
                    f"dataset folder '{meta.path}': game '{game}' has {rows} rows and {episodes} episodes, its {METADATA_FILE} says {meta.games[game]['rows']} and {meta.games[game]['episodes']}"
                )
            context = int(meta.games[game].get("context_rows", 0))  # context rows are not steps (see scaled_ql.data.schema)
            games_out[game] = {"rows": rows, "episodes": episodes, "steps": rows - episodes - context, "shards": count,
                               **({"context_rows": context} if context else {})}
        parquet_meta = {
            "format": PARQUET_FORMAT,
            "format_version": PARQUET_VERSION,
            "frame_shape": list(meta.frame_shape),
            "frame_encoding": "raw uint8 bytes, row-major (np.frombuffer(b, np.uint8).reshape(frame_shape))",
            "rows": meta.num_rows,
            "episodes": meta.num_episodes,
            "games": games_out,
            "compression": compression if compression_level is None else f"{compression}:{compression_level}",
            "rows_per_shard": rows_per_shard,
            "row_group_rows": row_group_rows,
            "source": {"format": FORMAT_NAME, "format_version": meta.format_version, "files": [{k: f[k] for k in ("name", "rows", "sha256")} for f in meta.files]},
            "files": files,
            "collection": meta.collection,
        }
        (work / PARQUET_METADATA_FILE).write_text(json.dumps(parquet_meta, indent=2) + "\n")
        (work / CARD_FILE).write_text(render_parquet_card(meta, parquet_meta))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start_time
    arrow_bytes = sum(int(f["bytes"]) for f in meta.files)
    parquet_bytes = sum(f["bytes"] for f in files)
    return {
        "out_dir": str(out_dir),
        "rows": meta.num_rows,
        "games": {g: v["shards"] for g, v in games_out.items()},
        "shards": len(files),
        "arrow_bytes": arrow_bytes,
        "parquet_bytes": parquet_bytes,
        "compression_ratio": round(arrow_bytes / max(parquet_bytes, 1), 2),
        "seconds": round(seconds, 3),
        "rows_per_s": round(meta.num_rows / seconds, 1),
    }


def _check_out_dir(out_dir: Path, overwrite: bool, marker: str) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not overwrite:
            raise FileExistsError(f"folder '{out_dir}' already exists and is not empty (pass overwrite=True / --overwrite to replace it)")
        if not (out_dir / marker).is_file():
            raise FileExistsError(f"refusing to overwrite '{out_dir}': it has no {marker}, so it is not a folder this command wrote")


def verify_parquet(parquet_dir: str | Path) -> dict[str, Any]:
    """Check every shard's size and sha256 against ``scaled_ql_parquet.json``, and that ``data/``
    holds no unlisted Parquet file (the card's ``configs`` globs would load it). Returns the
    metadata; an error names the shard."""
    parquet_dir = Path(parquet_dir)
    meta = read_parquet_metadata(parquet_dir)
    listed = {e["name"] for e in meta["files"]}
    for file in sorted((parquet_dir / DATA_DIR).rglob("*.parquet")):
        name = file.relative_to(parquet_dir).as_posix()
        if name not in listed:
            raise DatasetFormatError(f"Parquet shard '{file}' is not listed in {PARQUET_METADATA_FILE} (a leftover or added file; the card's data_files globs would load it)")
    for entry in meta["files"]:
        file = parquet_dir / entry["name"]
        size = file.stat().st_size
        if size != int(entry["bytes"]):
            raise DatasetFormatError(f"Parquet shard '{file}' is corrupt or was modified: {size} bytes, expected {entry['bytes']} (from {PARQUET_METADATA_FILE})")
        digest = sha256_file(file)
        if digest != entry["sha256"]:
            raise DatasetFormatError(f"Parquet shard '{file}' is corrupt or was modified: sha256 {digest}, expected {entry['sha256']} (from {PARQUET_METADATA_FILE})")
    return meta


def import_parquet(
    parquet_dir: str | Path,
    out_dir: str | Path,
    *,
    games: Sequence[str] | None = None,
    verify: bool = True,
    overwrite: bool = False,
    chunk_rows: int = 20_000,
    max_shard_size: int | str | None = None,
) -> DatasetMetadata:
    """Convert a Parquet folder back into the memory-mapped Arrow training format at ``out_dir``.

    Streams shard by shard (RAM holds about ``chunk_rows`` rows); ``games`` picks a subset (and
    their order; default: all, in the folder's order). The dataset card and metadata keep the
    source's collection info. Like every dataset write, ``write_dataset`` needs about twice the
    result's size on disk while it works.
    """
    parquet_dir = Path(parquet_dir)
    meta = verify_parquet(parquet_dir) if verify else read_parquet_metadata(parquet_dir)
    frame_shape = tuple(int(x) for x in meta["frame_shape"])
    names = list(meta["games"]) if games is None else [canonical_game_name(g, "import_parquet games") for g in games]
    for g in names:
        if g not in meta["games"]:
            raise DatasetFormatError(f"Parquet folder '{parquet_dir}' has no game '{g}' (it holds {list(meta['games'])})")

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        for game in names:
            for shard in shards_of(meta, game):
                where = f"Parquet shard '{shard}'"
                pending: list[pa.Table] = []
                rows = 0
                for table in iter_shard_tables(shard, frame_shape, where=where):
                    games_here = set(table.column("game").unique().to_pylist())
                    if games_here != {game}:
                        raise DatasetFormatError(f"{where}: holds rows of {sorted(games_here)}, expected only '{game}' (from {PARQUET_METADATA_FILE})")
                    pending.append(table)
                    rows += table.num_rows
                    if rows >= chunk_rows:
                        yield table_to_chunk(pa.concat_tables(pending), frame_shape, where)
                        pending, rows = [], 0
                if pending:
                    yield table_to_chunk(pa.concat_tables(pending), frame_shape, where)

    known = {f.name for f in dataclass_fields(CollectionInfo)}
    collection = CollectionInfo(**{k: v for k, v in meta.get("collection", {}).items() if k in known})
    return write_dataset(out_dir, chunks(), collection=collection, frame_shape=frame_shape, overwrite=overwrite, max_shard_size=max_shard_size)

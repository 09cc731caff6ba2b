"""Parquet shards of a dataset, for the Hub and for streaming: export, verify, import, push.

The training format (:mod:`scaled_ql.data.format`) is uncompressed Arrow, memory-mapped by the
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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scaled_ql.data.format import (
    CARD_FILE,
    COLUMNS,
    FORMAT_NAME,
    METADATA_FILE,
    CollectionInfo,
    DatasetFormatError,
    DatasetMetadata,
    canonical_game_name,
    check_episodes,
    check_values,
    dataset_features,
    open_arrow_file,
    read_metadata,
    render_card,
    sha256_file,
    verify_checksums,
    write_dataset,
)

PARQUET_FORMAT = "scaled_ql_parquet"
PARQUET_VERSION = 1
PARQUET_METADATA_FILE = "scaled_ql_parquet.json"
DATA_DIR = "data"
SPLIT = "train"
ALL_CONFIG = "all"


def parquet_features(frame_shape: Sequence[int]):
    """``datasets.Features`` of the Parquet shards: the Arrow format's, with ``frame`` as raw bytes."""
    from datasets import Value

    features = dataset_features(frame_shape)
    features["frame"] = Value("binary")
    return features


def parquet_schema(frame_shape: Sequence[int]) -> pa.Schema:
    """Arrow schema of a shard; its metadata carries the ``datasets`` features and the frame shape."""
    schema = parquet_features(frame_shape).arrow_schema
    meta = dict(schema.metadata or {})
    meta[b"scaled_ql"] = json.dumps({"format": PARQUET_FORMAT, "format_version": PARQUET_VERSION, "frame_shape": list(frame_shape)}).encode()
    return schema.with_metadata(meta)


def shard_name(game: str, index: int, count: int) -> str:
    """Path of a shard inside the Parquet folder, e.g. ``data/Pong/train-00000-of-00003.parquet``."""
    return f"{DATA_DIR}/{game}/{SPLIT}-{index:05d}-of-{count:05d}.parquet"


# ----------------------------------------------------------------------------------------------
# Frames: Arrow fixed-size lists <-> Parquet binary, without copying pixels where possible


def frames_to_binary(column: pa.ChunkedArray | pa.Array, frame_shape: Sequence[int]) -> pa.Array:
    """Frame column of the Arrow format (``[n]`` fixed-size lists) as one ``binary`` array of ``n`` frames."""
    frame_bytes = int(np.prod(frame_shape))
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    n = 0
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        flat = chunk.flatten().flatten()
        if chunk.null_count or flat.null_count or len(flat) != len(chunk) * frame_bytes:
            raise DatasetFormatError("column 'frame' has missing values or pixels")
        parts.append(flat.buffers()[1].slice(flat.offset, len(flat)))
        n += len(chunk)
    if len(parts) == 1:
        data = parts[0]
    else:  # several chunks: one copy into a contiguous buffer
        data = pa.py_buffer(np.concatenate([np.frombuffer(p, np.uint8) for p in parts]) if parts else np.zeros(0, np.uint8))
    offsets = pa.py_buffer(np.arange(n + 1, dtype=np.int32) * np.int32(frame_bytes))
    return pa.Array.from_buffers(pa.binary(), n, [None, offsets, data])


def binary_to_frames(column: pa.ChunkedArray | pa.Array, frame_shape: Sequence[int], where: str) -> np.ndarray:
    """A ``binary`` (or ``large_binary``) frame column as uint8 ``[n, H, W]``; every value must be H*W bytes."""
    frame_bytes = int(np.prod(frame_shape))
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        if not (pa.types.is_binary(chunk.type) or pa.types.is_large_binary(chunk.type)):
            raise DatasetFormatError(f"{where}: column 'frame' has type {chunk.type}, expected binary (raw uint8 frames of {tuple(frame_shape)})")
        offset_type = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], dtype=offset_type)[chunk.offset : chunk.offset + len(chunk) + 1]
        if chunk.null_count or not (np.diff(offsets) == frame_bytes).all():
            bad = int(np.argmax(np.diff(offsets) != frame_bytes)) if chunk.null_count == 0 else 0
            raise DatasetFormatError(f"{where}: frame of row {bad} (of a batch) is missing or has {int(np.diff(offsets)[bad])} bytes, expected {frame_bytes} ({tuple(frame_shape)} uint8)")
        data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        out.append(data.reshape(len(chunk), *frame_shape))
    if not out:
        return np.zeros((0, *frame_shape), np.uint8)
    return out[0] if len(out) == 1 else np.concatenate(out)


def to_parquet_table(table: pa.Table, frame_shape: Sequence[int]) -> pa.Table:
    """Rows of the Arrow format as a table with :func:`parquet_schema` (frames as binary)."""
    schema = parquet_schema(frame_shape)
    arrays = [frames_to_binary(table.column("frame"), frame_shape)]
    arrays += [table.column(name).cast(schema.field(name).type) for name in COLUMNS[1:]]
    return pa.Table.from_arrays(arrays, schema=schema)


# ----------------------------------------------------------------------------------------------
# Whole episodes out of a stream of record batches


class EpisodeAssembler:
    """Cuts a stream of row tables (any boundaries) into tables of whole episodes.

    ``push(table)`` returns the rows up to the last episode end seen so far (None if no episode
    ended) and keeps the rest for the next push; ``finish()`` raises if rows of an unfinished
    episode are left. Each returned table is checked against the row convention
    (:func:`scaled_ql.data.format.check_episodes`, plus one game per episode); ``where`` names the
    source in errors.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self._pending: list[pa.Table] = []
        self.rows_emitted = 0

    def push(self, table: pa.Table | pa.RecordBatch) -> pa.Table | None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.num_rows == 0:
            return None
        ends = np.flatnonzero(_flag(table, "terminal") | _flag(table, "truncated"))
        if ends.size == 0:
            self._pending.append(table)
            return None
        cut = int(ends[-1]) + 1
        whole = pa.concat_tables([*self._pending, table.slice(0, cut)]) if self._pending else table.slice(0, cut)
        self._pending = [table.slice(cut)] if cut < table.num_rows else []
        first = self.rows_emitted
        self.rows_emitted += whole.num_rows
        check_whole_episodes(whole, where=f"{self.where}, rows {first} to {self.rows_emitted - 1}")
        return whole

    def finish(self) -> None:
        left = sum(t.num_rows for t in self._pending)
        if left:
            episode = self._pending[0].column("episode_id")[0].as_py()
            raise DatasetFormatError(f"{self.where}: ends inside an episode ({left} rows of episode_id {episode} have no terminal or truncated last row)")


def _flag(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy().astype(bool, copy=False)


def episode_bounds(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """First and last row of every episode of a table of whole episodes."""
    ends = np.flatnonzero(_flag(table, "terminal") | _flag(table, "truncated"))
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    return starts, ends.astype(np.int64)


def check_whole_episodes(table: pa.Table, where: str) -> np.ndarray:
    """Check that ``table`` holds whole episodes, each of one game; returns the episodes' last rows."""
    col = lambda name: table.column(name).to_numpy()  # noqa: E731
    ends = check_episodes(col("episode_id"), col("step"), _flag(table, "terminal"), _flag(table, "truncated"), col("action"), col("reward"), where)
    game = table.column("game").combine_chunks()
    encoded = game.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    # Finite rewards, actions within the full 18-action set (a stream does not say which set it uses).
    check_values(col("action"), col("reward"), encoded.dictionary.to_pylist(), codes, where, full_action_space=True)
    starts = np.concatenate(([0], ends[:-1] + 1))
    first_code = np.repeat(codes[starts], ends - starts + 1)
    if (codes != first_code).any():
        row = int(np.argmax(codes != first_code))
        first = int(starts[np.searchsorted(starts, row, "right") - 1])
        raise DatasetFormatError(f"{where}: row {row} (episode_id {col('episode_id')[row]}) changes game within an episode ('{game[row].as_py()}' after '{game[first].as_py()}')")
    return ends


def iter_whole_episodes(tables: Iterable[pa.Table | pa.RecordBatch], where: str) -> Iterator[pa.Table]:
    """Tables of whole episodes cut from ``tables`` (see :class:`EpisodeAssembler`); raises if the
    stream ends inside an episode."""
    assembler = EpisodeAssembler(where)
    for table in tables:
        whole = assembler.push(table)
        if whole is not None:
            yield whole
    assembler.finish()


def arrow_batches(meta: DatasetMetadata) -> Iterator[pa.RecordBatch]:
    """Record batches of every Arrow file of a dataset folder, in row order, memory-mapped."""
    for entry in meta.files:
        _, table = open_arrow_file(meta.path / entry["name"], meta.frame_shape)
        yield from table.to_batches()


# ----------------------------------------------------------------------------------------------
# Export


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
            context = int(meta.games[game].get("context_rows", 0))  # context rows are not steps (see scaled_ql.data.format)
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


def render_parquet_card(meta: DatasetMetadata, parquet_meta: dict[str, Any]) -> str:
    """Dataset card of a Parquet folder: the Arrow card's games table and provenance, with Hub
    ``configs`` (``all`` plus one per game) and the Parquet layout."""
    import yaml

    source_card = render_card(meta)
    _, front, body = source_card.split("---\n", 2)
    front = yaml.safe_load(front)
    front["configs"] = [
        {"config_name": ALL_CONFIG, "default": True, "data_files": [{"split": SPLIT, "path": f"{DATA_DIR}/*/{SPLIT}-*.parquet"}]},
        *({"config_name": g, "data_files": [{"split": SPLIT, "path": f"{DATA_DIR}/{g}/{SPLIT}-*.parquet"}]} for g in parquet_meta["games"]),
    ]
    rows = parquet_meta["rows"]
    front["size_categories"] = [_size_category(rows)]
    sections = {s.split("\n", 1)[0]: "## " + s for s in body.split("\n## ")[1:]}  # heading -> text
    h, w = parquet_meta["frame_shape"]
    kept = [sections[k] for k in ("Games", "How it was made") if k in sections]
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        "# Offline Atari dataset (scaled_ql format, Parquet)",
        "",
        f"Written by `scaled_ql` (format `{PARQUET_FORMAT}` version {PARQUET_VERSION}) from a `{FORMAT_NAME}` folder. "
        "One config per game and `all` (the default):",
        "",
        "```python",
        "from datasets import load_dataset",
        'pong = load_dataset("<repo id or folder>", "Pong", split="train")            # or streaming=True',
        'frames = np.frombuffer(pong[0]["frame"], np.uint8).reshape(' f"{h}, {w})",
        "```",
        "",
        "For training, convert back to the memory-mapped Arrow format with `scaled-ql data import-parquet` "
        "(`scaled_ql.data.parquet.import_parquet`), or stream it with `scaled_ql.data.streaming.StreamingSampler`.",
        "",
        *[s.rstrip() + "\n" for s in kept],
        "## Files",
        "",
        f"`{DATA_DIR}/<Game>/{SPLIT}-XXXXX-of-YYYYY.parquet`: each shard holds whole episodes of one game, rows in order "
        f"(about {parquet_meta['rows_per_shard']} rows a shard, row groups of {parquet_meta['row_group_rows']} rows, "
        f"{parquet_meta['compression']} compression). `{PARQUET_METADATA_FILE}` lists every shard's game, rows, episodes, "
        "bytes and sha256 (`scaled_ql.data.parquet.verify_parquet` checks them).",
        "",
        "| game | shards | agent steps | episodes | rows |",
        "|---|---:|---:|---:|---:|",
        *[f"| {g} | {v['shards']} | {v['steps']} | {v['episodes']} | {v['rows']} |" for g, v in parquet_meta["games"].items()],
        "",
        "## Format",
        "",
        f"One row per step. `frame`: the {h}x{w} uint8 grayscale observation as {h * w} raw bytes, row-major "
        "(frames are single, not stacked: stack 4 at sample time, zero-filled before an episode's first frame). "
        "`action` (int32), `reward` (float32, as stored by the source), `terminal`, `truncated`, `episode_id` (int64, unique), "
        "`step` (int32), `game` (string).",
        "",
        "Row convention (RLDS-like): an episode of T agent steps is T + 1 contiguous rows. Row t holds the observation "
        "before action t, action t and reward r_t. The last row holds the final observation with action 0 and reward 0, "
        "and is marked `terminal` (game over) or `truncated` (time limit or collection budget: bootstrap from it).",
        "",
    ]
    return "\n".join(lines)


def _size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if rows < limit:
            return name
    return "1B<n<10B"


# ----------------------------------------------------------------------------------------------
# Verify and read


def read_parquet_metadata(parquet_dir: str | Path) -> dict[str, Any]:
    """Read and check ``scaled_ql_parquet.json`` (format, version, games, listed shards exist)."""
    parquet_dir = Path(parquet_dir)
    meta_path = parquet_dir / PARQUET_METADATA_FILE
    if not parquet_dir.is_dir():
        raise DatasetFormatError(f"Parquet folder '{parquet_dir}' does not exist")
    if not meta_path.is_file():
        hint = " (it is an Arrow dataset folder: export it with scaled-ql data export-parquet)" if (parquet_dir / METADATA_FILE).is_file() else ""
        raise DatasetFormatError(f"folder '{parquet_dir}' has no '{PARQUET_METADATA_FILE}': not a scaled_ql Parquet folder{hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"'{meta_path}' is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != PARQUET_FORMAT:
        raise DatasetFormatError(f"'{meta_path}': expected \"format\": \"{PARQUET_FORMAT}\", found {meta.get('format') if isinstance(meta, dict) else meta!r}")
    if meta.get("format_version") != PARQUET_VERSION:
        raise DatasetFormatError(f"'{meta_path}': format_version {meta.get('format_version')!r} is not supported (this scaled_ql reads version {PARQUET_VERSION})")
    for key in ("frame_shape", "games", "files"):
        if key not in meta:
            raise DatasetFormatError(f"'{meta_path}': missing key '{key}'")
    for game in meta["games"]:
        if canonical_game_name(game, f"'{meta_path}'") != game:
            raise DatasetFormatError(f"'{meta_path}': game {game!r} is not spelled as in the registry")
    for entry in meta["files"]:
        if not (parquet_dir / entry["name"]).is_file():
            raise DatasetFormatError(f"Parquet shard '{parquet_dir / entry['name']}' is missing (listed in '{meta_path}')")
    meta["path"] = str(parquet_dir)
    return meta


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


def shards_of(meta: dict[str, Any], game: str) -> list[Path]:
    """Paths of ``game``'s shards, in order."""
    return [Path(meta["path"]) / e["name"] for e in meta["files"] if e["game"] == game]


def iter_shard_tables(file: str | Path | Any, frame_shape: Sequence[int], *, batch_rows: int = 1_024, where: str | None = None) -> Iterator[pa.Table]:
    """Tables of whole episodes read from one Parquet shard (a path or an open binary file),
    ``batch_rows`` rows at a time (joined up to the next episode end); frames stay ``binary``."""
    where = where or f"Parquet shard '{file}'"
    try:
        reader = pq.ParquetFile(file)
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetFormatError(f"{where} is not a readable Parquet file (corrupt?): {err}") from None
    _check_parquet_schema(reader.schema_arrow, where)
    batches = reader.iter_batches(batch_size=batch_rows, columns=list(COLUMNS))
    try:
        yield from iter_whole_episodes(batches, where)
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetFormatError(f"{where} is not a readable Parquet file (corrupt?): {err}") from None


def _check_parquet_schema(schema: pa.Schema, where: str) -> None:
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise DatasetFormatError(f"{where}: missing column(s) {missing} (found {schema.names})")
    frame = schema.field("frame").type
    if not (pa.types.is_binary(frame) or pa.types.is_large_binary(frame)):
        raise DatasetFormatError(f"{where}: column 'frame' has type {frame}, expected binary (raw uint8 frames)")


def table_to_chunk(table: pa.Table, frame_shape: Sequence[int], where: str) -> dict[str, np.ndarray]:
    """A table of Parquet rows as the column dict :func:`scaled_ql.data.format.write_dataset` takes."""
    chunk = {"frame": binary_to_frames(table.column("frame"), frame_shape, where)}
    for name in COLUMNS[1:]:
        col = table.column(name)
        chunk[name] = col.to_numpy(zero_copy_only=False) if name != "game" else np.asarray(col.to_pylist(), dtype=object)
    return chunk


# ----------------------------------------------------------------------------------------------
# Import


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


# ----------------------------------------------------------------------------------------------
# Push


def push_dataset(
    path: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    api: Any = None,
    work_dir: str | Path | None = None,
    commit_message: str | None = None,
) -> dict[str, Any]:
    """Upload a Parquet folder to a Hub dataset repo in one commit (``HfApi.upload_folder``).

    ``path`` is a Parquet folder, or an Arrow dataset folder, which is first exported to
    ``work_dir`` (default: a temporary folder). Shards are verified before anything is sent.
    ``dry_run`` lists the files and uploads nothing. ``api`` defaults to ``huggingface_hub.HfApi()``.
    """
    path = Path(path)
    report: dict[str, Any] = {"repo_id": repo_id, "repo_type": "dataset", "dry_run": dry_run}
    if (path / METADATA_FILE).is_file() and not (path / PARQUET_METADATA_FILE).is_file():
        folder = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="scaled_ql_push_dataset_")) / "parquet"
        report["export"] = export_parquet(path, folder, overwrite=work_dir is not None)
    else:
        folder = path
    meta = verify_parquet(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    report.update({
        "folder": str(folder),
        "files": [p.relative_to(folder).as_posix() for p in files],
        "bytes": sum(p.stat().st_size for p in files),
        "games": list(meta["games"]),
        "rows": meta["rows"],
    })
    if dry_run:
        return report
    from scaled_ql.hub.upload import upload_in_one_commit

    report |= upload_in_one_commit(
        folder, repo_id, repo_type="dataset", private=private, api=api,
        message=commit_message or f"Upload scaled_ql dataset ({len(meta['games'])} games, {meta['rows']} rows, {len(files)} files)",
    )
    return report


# ----------------------------------------------------------------------------------------------
# Benchmark (called by ``scaled-ql bench parquet``; not part of the tests)


def bench_parquet(
    path: str | Path | None = None,
    *,
    rows_per_game: int = 20_000,
    games: Sequence[str] = ("Pong", "Breakout"),
    rows_per_shard: int = 100_000,
    stream_batches: int = 200,
    batch_size: int = 256,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Export rows/s, verify MB/s, import rows/s and streaming transitions/s of a dataset folder.

    ``path`` defaults to a synthetic dataset of noise frames (``rows_per_game`` per game): its
    compression ratio means nothing (noise does not compress); pass a real dataset (e.g.
    ``data/tiny``) for that. Everything written goes to a temporary folder, removed at the end.
    """
    from scaled_ql.data.streaming import StreamingSampler

    tmp = Path(tempfile.mkdtemp(prefix="scaled_ql_bench_parquet_", dir=work_dir))
    try:
        if path is None:
            from scaled_ql.bench import write_benchmark_dataset

            path = write_benchmark_dataset(tmp / "arrow", games, rows_per_game)
            source = f"synthetic noise frames, {len(games)} games x {rows_per_game} rows"
        else:
            source = str(path)
        meta = read_metadata(path)
        export = export_parquet(path, tmp / "parquet", rows_per_shard=rows_per_shard, verify=False)
        t0 = time.perf_counter()
        verify_parquet(tmp / "parquet")
        verify_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        import_parquet(tmp / "parquet", tmp / "back", verify=False)
        import_s = time.perf_counter() - t0
        shutil.rmtree(tmp / "back")
        names = list(meta.games)
        bs = max(len(names), batch_size - batch_size % len(names))
        sampler = StreamingSampler.from_parquet(tmp / "parquet", names, bs, buffer_size=min(50_000, max(1_000, meta.num_rows // (2 * len(names)))), seed=0)
        it = iter(sampler)
        next(it)  # first fill of every game's buffer
        t0 = time.perf_counter()
        drawn = 0
        for _ in range(stream_batches):
            drawn += len(next(it))
        stream_s = time.perf_counter() - t0
        return {
            "benchmark": "parquet",
            "dataset": source,
            "rows": meta.num_rows,
            "games": names,
            "arrow_bytes": export["arrow_bytes"],
            "parquet_bytes": export["parquet_bytes"],
            "compression_ratio": export["compression_ratio"],
            "shards": export["shards"],
            "export_rows_per_s": export["rows_per_s"],
            "export_MB_per_s": round(export["arrow_bytes"] / export["seconds"] / 1e6, 1),
            "verify_MB_per_s": round(export["parquet_bytes"] / verify_s / 1e6, 1),
            "import_rows_per_s": round(meta.num_rows / import_s, 1),
            "stream_transitions_per_s": round(drawn / stream_s, 1),
            "stream_batch_size": bs,
            "cpu_count": os.cpu_count(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

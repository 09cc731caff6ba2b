"""Parquet shards of a dataset (the layout :mod:`scaled_ql.data.parquet` writes): their schema, frames
as raw bytes, the shards' metadata, and reading a shard as whole episodes; what the Parquet
conversion, the streaming sampler and the inspection read."""


from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scaled_ql.data.schema import (COLUMNS, METADATA_FILE, DatasetFormatError, canonical_game_name, read_format_json, check_episodes, check_values,
                                   dataset_features)

PARQUET_FORMAT = "scaled_ql_parquet"
PARQUET_VERSION = 1
PARQUET_METADATA_FILE = "scaled_ql_parquet.json"
DATA_DIR = "data"
SPLIT = "train"
ALL_CONFIG = "all"


def parquet_features(frame_shape: Sequence[int]):
    """``datasets.Features`` of the Parquet shards: the Arrow format's, with ``frame`` as raw bytes."""
    from datasets import Value  # heavy (about a second to import): loaded when first needed

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
    (:func:`scaled_ql.data.schema.check_episodes`, plus one game per episode); ``where`` names the
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




# ----------------------------------------------------------------------------------------------
# Reading shards


def read_parquet_metadata(parquet_dir: str | Path, check_files: bool = True) -> dict[str, Any]:
    """Read and check ``scaled_ql_parquet.json`` (format, version, games, and with ``check_files``
    that the listed shards exist)."""
    parquet_dir = Path(parquet_dir)
    meta_path = parquet_dir / PARQUET_METADATA_FILE
    if not parquet_dir.is_dir():
        raise DatasetFormatError(f"Parquet folder '{parquet_dir}' does not exist")
    if not meta_path.is_file():
        hint = " (it is an Arrow dataset folder: export it with scaled-ql data export-parquet)" if (parquet_dir / METADATA_FILE).is_file() else ""
        raise DatasetFormatError(f"folder '{parquet_dir}' has no '{PARQUET_METADATA_FILE}': not a scaled_ql Parquet folder{hint}")
    meta = check_parquet_metadata(read_format_json(meta_path, PARQUET_FORMAT), str(meta_path))
    for entry in meta["files"] if check_files else []:
        if not (parquet_dir / entry["name"]).is_file():
            raise DatasetFormatError(f"Parquet shard '{parquet_dir / entry['name']}' is missing (listed in '{meta_path}')")
    meta["path"] = str(parquet_dir)
    return meta


def check_parquet_metadata(meta: dict[str, Any], meta_path: str) -> dict[str, Any]:
    """Check the parsed ``scaled_ql_parquet.json`` (read from ``meta_path``, a path or a URL):
    format version, required keys, games spelled as in the registry."""
    if meta.get("format_version") != PARQUET_VERSION:
        raise DatasetFormatError(f"'{meta_path}': format_version {meta.get('format_version')!r} is not supported (this scaled_ql reads version {PARQUET_VERSION})")
    for key in ("frame_shape", "games", "files"):
        if key not in meta:
            raise DatasetFormatError(f"'{meta_path}': missing key '{key}'")
    for game in meta["games"]:
        if canonical_game_name(game, f"'{meta_path}'") != game:
            raise DatasetFormatError(f"'{meta_path}': game {game!r} is not spelled as in the registry")
    return meta


def shards_of(meta: dict[str, Any], game: str) -> list[Path]:
    """Paths of ``game``'s shards, in order."""
    return [Path(meta["path"]) / e["name"] for e in meta["files"] if e["game"] == game]


def iter_shard_tables(file: str | Path | Any, frame_shape: Sequence[int], *, batch_rows: int = 1_024, where: str | None = None,
                      skip_rows: int = 0) -> Iterator[pa.Table]:
    """Tables of whole episodes read from one Parquet shard (a path, an open binary file or a
    ``pyarrow.BufferReader``), ``batch_rows`` rows at a time (joined up to the next episode end);
    frames stay ``binary``. ``skip_rows`` (an episode's first row) starts there, reading from its
    row group on."""
    where = where or f"Parquet shard '{file}'"
    try:
        reader = pq.ParquetFile(file)
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetFormatError(f"{where} is not a readable Parquet file (corrupt?): {err}") from None
    _check_parquet_schema(reader.schema_arrow, where)
    groups = [reader.metadata.row_group(i).num_rows for i in range(reader.num_row_groups)]
    if not 0 <= skip_rows <= sum(groups):
        raise DatasetFormatError(f"{where}: cannot start at row {skip_rows}, the shard has {sum(groups)} rows")
    first = 0
    while first < len(groups) and skip_rows >= groups[first]:
        skip_rows -= groups[first]
        first += 1
    batches = drop_rows(reader.iter_batches(batch_size=batch_rows, columns=list(COLUMNS), row_groups=range(first, len(groups))), skip_rows)
    try:
        yield from iter_whole_episodes(batches, where)
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetFormatError(f"{where} is not a readable Parquet file (corrupt?): {err}") from None


def drop_rows(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """``batches`` without their first ``rows`` rows."""
    for batch in batches:
        if rows >= batch.num_rows:
            rows -= batch.num_rows
            continue
        yield batch.slice(rows) if rows else batch
        rows = 0


def _check_parquet_schema(schema: pa.Schema, where: str) -> None:
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise DatasetFormatError(f"{where}: missing column(s) {missing} (found {schema.names})")
    frame = schema.field("frame").type
    if not (pa.types.is_binary(frame) or pa.types.is_large_binary(frame)):
        raise DatasetFormatError(f"{where}: column 'frame' has type {frame}, expected binary (raw uint8 frames)")


def table_to_chunk(table: pa.Table, frame_shape: Sequence[int], where: str) -> dict[str, np.ndarray]:
    """A table of Parquet rows as the column dict :func:`scaled_ql.data.writer.write_dataset` takes."""
    chunk = {"frame": binary_to_frames(table.column("frame"), frame_shape, where)}
    for name in COLUMNS[1:]:
        col = table.column(name)
        chunk[name] = col.to_numpy(zero_copy_only=False) if name != "game" else np.asarray(col.to_pylist(), dtype=object)
    return chunk





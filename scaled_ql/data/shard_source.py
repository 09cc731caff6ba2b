"""Where streamed Parquet shards come from, and reading one whole, checked, with retries.

A *shard source* is a Parquet folder written by :func:`scaled_ql.data.parquet.export_parquet`
(its ``scaled_ql_parquet.json`` lists every shard with its rows, bytes and sha256), found at:

* a local folder, or one on a shared filesystem (NFS, Lustre, GPFS): ``data/atari40-pq``;
* a Hub dataset repo that ``scaled-ql data push`` filled: ``user/atari40`` or
  ``user/atari40@<revision>`` (read as ``hf://datasets/user/atari40``, huggingface_hub's
  ``HfFileSystem`` through fsspec);
* any other fsspec URL of such a folder: ``s3://bucket/atari40``, ``file:///scratch/atari40``.

A shard is read whole into memory (about 10-25 MB for 100,000 rows of Atari frames under zstd),
then checked against the listed size and sha256 before a row is used, so a missing, truncated or
modified shard is found when the stream reaches it, and named. A transient failure (a dropped
connection, an HTTP 5xx, a short read from a remote store) is retried ``retries`` times with
exponential backoff (``retry_wait_s``, twice that, ...); then the read stops with a
:class:`ShardReadError` naming the shard, the attempts and the last cause. A local shard is not
re-read on a size or checksum mismatch (a file on disk does not heal), only on an I/O error.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec

from scaled_ql.data.schema import DatasetFormatError
from scaled_ql.data.shards import PARQUET_FORMAT, PARQUET_METADATA_FILE, check_parquet_metadata, read_parquet_metadata

HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w.\-/]+)?$")
"""``owner/name`` or ``owner/name@revision``: a Hub dataset repo id, as ``data.path`` may name one."""


class ShardReadError(DatasetFormatError):
    """A shard could not be read: missing, truncated, failing its checksum, or a stream that kept
    failing after its retries. The message names the shard, what was expected and what was found."""


def resolve_location(location: str | Path) -> tuple[str, str]:
    """``(kind, root)`` of a shard source: ``("parquet", folder)`` for a local path,
    ``("hub", "hf://datasets/<repo>[@rev]")`` for a Hub repo id (``owner/name`` where neither it nor
    a local folder ``owner`` exists), ``("url", url)`` for an fsspec URL."""
    text = str(location)
    if "://" in text:
        return ("hub" if text.startswith("hf://") else "url"), text.rstrip("/")
    # A path that exists, or whose parent folder does (``data/mine`` with a ``data/`` here), is local.
    if Path(text).exists() or not HUB_REPO_ID.match(text) or Path(text.split("@")[0]).parent.is_dir():
        return "parquet", text
    return "hub", f"hf://datasets/{text}"


def read_url_bytes(url: str) -> bytes:
    """The whole file at ``url`` (an fsspec URL; ``hf://`` goes through huggingface_hub's HfFileSystem)."""
    with fsspec.open(url, "rb") as handle:
        return handle.read()


def read_local_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def _is_missing(err: BaseException) -> bool:
    # FileNotFoundError from local files and fsspec; huggingface_hub's EntryNotFoundError / RepositoryNotFoundError.
    return isinstance(err, FileNotFoundError) or type(err).__name__ in ("EntryNotFoundError", "RepositoryNotFoundError", "RevisionNotFoundError")


class ShardSource:
    """The shards of one Parquet folder (local, Hub or URL) and a checked, retried reader of each.

    ``read_bytes(url) -> bytes`` is the transport (default: plain file reads for a local folder,
    fsspec for the others); ``sleep`` waits between retries. Both are what a test replaces to
    inject failures at the reading boundary. ``check_files``: a local folder's listed shards must
    all exist at the start (off when bad shards are to be skipped when reached).
    """

    def __init__(self, location: str | Path, *, retries: int = 4, retry_wait_s: float = 1.0, check_files: bool = True,
                 read_bytes: Callable[[str], bytes] | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        if retries < 0 or retry_wait_s < 0:
            raise ValueError(f"retries ({retries}) and retry_wait_s ({retry_wait_s}) must be non-negative")
        self.location = str(location)
        self.kind, self.root = resolve_location(location)
        self.remote = self.kind != "parquet"
        self.retries, self.retry_wait_s, self.sleep = int(retries), float(retry_wait_s), sleep
        self._read = read_bytes or (read_url_bytes if self.remote else read_local_bytes)
        if self.remote:
            meta_url = self.url(PARQUET_METADATA_FILE)
            try:
                raw = self._read_checked(meta_url, lambda data: None, f"'{meta_url}' (the Parquet folder's metadata)")
            except ShardReadError as err:
                if "://" in self.location:
                    raise
                raise ShardReadError(f"'{self.location}' is not a local folder, so it was read as a Hub dataset repo id: {err}") from None
            try:
                meta = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise DatasetFormatError(f"'{meta_url}' is not valid JSON: {err}") from None
            if not isinstance(meta, dict) or meta.get("format") != PARQUET_FORMAT:
                raise DatasetFormatError(f"'{meta_url}': expected \"format\": \"{PARQUET_FORMAT}\", found {meta.get('format') if isinstance(meta, dict) else meta!r}")
            self.meta = check_parquet_metadata(meta, meta_url)
            self.meta["path"] = self.root
        else:
            self.meta = read_parquet_metadata(self.root, check_files=check_files)
        self.frame_shape = tuple(int(x) for x in self.meta["frame_shape"])
        self.games = list(self.meta["games"])

    def url(self, name: str) -> str:
        """Where file ``name`` (relative to the folder) is read from."""
        return f"{self.root}/{name}" if self.remote else str(Path(self.root) / name)

    def shards(self, game: str) -> list[dict[str, Any]]:
        """``game``'s shard entries of the metadata (name, rows, episodes, bytes, sha256), in order."""
        return [e for e in self.meta["files"] if e["game"] == game]

    def read_shard(self, entry: dict[str, Any]) -> bytes:
        """The bytes of shard ``entry``, checked against its listed size and sha256."""
        url = self.url(entry["name"])

        def problem(data: bytes) -> str | None:
            if len(data) != int(entry["bytes"]):
                return f"truncated or modified: {len(data)} bytes, expected {entry['bytes']} (from {PARQUET_METADATA_FILE})"
            digest = hashlib.sha256(data).hexdigest()
            if digest != entry["sha256"]:
                return f"failed its checksum: sha256 {digest}, expected {entry['sha256']} (from {PARQUET_METADATA_FILE})"
            return None

        return self._read_checked(url, problem, f"Parquet shard '{url}'")

    def _read_checked(self, url: str, problem: Callable[[bytes], str | None], what: str) -> bytes:
        waits, last = [], ""
        for attempt in range(self.retries + 1):
            try:
                data = self._read(url)
            except Exception as err:  # noqa: BLE001 - any transport error of any fsspec backend is retried, then named
                if _is_missing(err):
                    raise ShardReadError(f"{what} is missing (listed in {PARQUET_METADATA_FILE} of '{self.location}')") from None
                if not self.remote and not isinstance(err, OSError):
                    raise
                last = f"{type(err).__name__}: {err}"
            else:
                found = problem(data)
                if found is None:
                    return data
                if not self.remote:  # a file on disk reads the same again
                    raise ShardReadError(f"{what} {found}")
                last = found
            if attempt < self.retries:
                waits.append(self.retry_wait_s * 2 ** attempt)
                self.sleep(waits[-1])
        raise ShardReadError(f"{what}: reading failed {self.retries + 1} time(s) (waits between tries {waits} s); last: {last}")

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data, in the form of ``scaled_ql.train.checkpoint.dataset_fingerprint``
        and equal to the source Arrow folder's (the shards' metadata lists its files' sha256), so a
        checkpoint knows the rows and not merely their container."""
        digest = hashlib.sha256()
        source = self.meta.get("source", {}).get("files") or self.meta["files"]
        for entry in source:
            digest.update(f"{entry['name']}:{entry['sha256']}\n".encode())
        return {"paths": [self.location], "sha256": digest.hexdigest(), "rows": int(self.meta.get("rows", 0))}

"""``scaled-ql data push``: publish a dataset's Parquet shards to a Hub dataset repo in one commit."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from scaled_ql.data.schema import METADATA_FILE
from scaled_ql.data.parquet import export_parquet, verify_parquet
from scaled_ql.data.shards import PARQUET_METADATA_FILE
from scaled_ql.hub.upload import upload_in_one_commit


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
    report |= upload_in_one_commit(
        folder, repo_id, repo_type="dataset", private=private, api=api,
        message=commit_message or f"Upload scaled_ql dataset ({len(meta['games'])} games, {meta['rows']} rows, {len(files)} files)",
    )
    return report

"""One Hub upload, shared by models (``scaled-ql push``) and datasets (``scaled-ql data push``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import HfApi


def upload_in_one_commit(folder: str | Path, repo_id: str, *, repo_type: str, private: bool, message: str,
                         api: Any = None) -> dict[str, str]:
    """Create the repo if needed and upload ``folder`` as a single commit; return its URLs."""
    if api is None:
        api = HfApi()
    repo = api.create_repo(repo_id=repo_id, repo_type=repo_type, private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=str(folder), commit_message=message)
    return {"url": str(getattr(repo, "url", repo)), "commit": str(getattr(commit, "commit_url", commit))}

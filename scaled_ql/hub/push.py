"""``scaled-ql push``: publish a checkpoint to the Hugging Face Hub in one commit.

The upload folder holds ``model.safetensors``, ``config.json`` and ``train_config.json`` of the
checkpoint's ``model/`` folder, a model card (``README.md``), the evaluation (``eval.json``,
``eval.png``) and the run's TensorBoard logs (``tb/``). ``--dry-run`` builds the same folder and
lists it without touching the network.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from scaled_ql.hub.card import render_model_card
from scaled_ql.hub.upload import upload_in_one_commit
from scaled_ql.models import count_parameters
from scaled_ql.models.loading import CHECKPOINTS, CheckpointError, load_model, resolve_model_dir

MODEL_FILES = ("model.safetensors", "config.json", "train_config.json")


def _checkpoint_layout(checkpoint: str | Path) -> tuple[Path, Path | None, int | None]:
    """(model dir, run dir or None, step or None) of a run, checkpoint or model folder."""
    model_dir = resolve_model_dir(checkpoint)
    ckpt_dir = model_dir.parent
    if ckpt_dir.parent.name == CHECKPOINTS and ckpt_dir.name.isdigit():
        return model_dir, ckpt_dir.parent.parent, int(ckpt_dir.name)
    return model_dir, None, None


def find_evaluation(run_dir: Path | None, step: int | None) -> Path | None:
    """The ``eval.json`` made for this checkpoint's step, if the run has one."""
    if run_dir is None:
        return None
    candidates = []
    if step is not None:
        candidates.append(run_dir / "eval" / f"step_{step:08d}" / "eval.json")
        final = run_dir / "eval" / "final" / "eval.json"
        state = run_dir / CHECKPOINTS / f"{step:08d}" / "state" / "trainer.json"
        checkpoints = sorted(p.name for p in (run_dir / CHECKPOINTS).iterdir() if p.name.isdigit())
        if state.is_file() and checkpoints and checkpoints[-1] == f"{step:08d}":
            candidates.append(final)  # the final evaluation belongs to the newest checkpoint
    return next((c for c in candidates if c.is_file()), None)


def build_push_folder(checkpoint: str | Path, repo_id: str, out_dir: str | Path, eval_json: str | Path | None = None) -> list[Path]:
    """Assemble the upload folder in ``out_dir``; return its files (relative paths), sorted."""
    model_dir, run_dir, step = _checkpoint_layout(checkpoint)
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint '{model_dir}': expected {', '.join(MODEL_FILES)}, missing {', '.join(missing)}")
    model, _ = load_model(model_dir)  # before anything is copied: corrupt or non-finite weights are refused, naming the file
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"upload folder '{out}' is not empty")
    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copy2(model_dir / name, out / name)

    eval_path = Path(eval_json) if eval_json is not None else find_evaluation(run_dir, step)
    results = None
    if eval_path is not None:
        if not eval_path.is_file():
            raise FileNotFoundError(f"evaluation file '{eval_path}' does not exist")
        results = json.loads(eval_path.read_text())
        shutil.copy2(eval_path, out / "eval.json")
        if (eval_path.parent / "eval.png").is_file():
            shutil.copy2(eval_path.parent / "eval.png", out / "eval.png")
    if run_dir is not None and (run_dir / "tb").is_dir():
        shutil.copytree(run_dir / "tb", out / "tb")

    card = render_model_card(
        json.loads((model_dir / "config.json").read_text()),
        json.loads((model_dir / "train_config.json").read_text()),
        results, repo_id, count_parameters(model), step if step is not None else 0,
    )
    card.save(out / "README.md")
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())


def push_checkpoint(
    checkpoint: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    eval_json: str | Path | None = None,
    out_dir: str | Path | None = None,
    api: Any = None,
) -> dict[str, Any]:
    """Build the upload folder and (unless ``dry_run``) create the repo and upload it in one commit."""
    folder = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="scaled_ql_push_"))
    files = build_push_folder(checkpoint, repo_id, folder, eval_json)
    report: dict[str, Any] = {"repo_id": repo_id, "folder": str(folder), "files": [str(f) for f in files], "dry_run": dry_run}
    if dry_run:
        return report
    report |= upload_in_one_commit(folder, repo_id, repo_type="model", private=private, api=api,
                                   message=f"Upload scaled_ql checkpoint ({len(files)} files)")
    return report

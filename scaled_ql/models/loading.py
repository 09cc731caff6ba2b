"""Loading a trained Q-network for use: from a run folder, a checkpoint, its ``model/`` folder or a Hub repo.

A run folder holds ``checkpoints/<step:08d>/`` (``model/`` beside ``state/``; see
``scaled_ql.train.checkpoint``, which writes them). This module knows only how to find the
``model/`` folder in that layout and load the network from it; it needs nothing of training.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import hf_hub_download

from scaled_ql.config import ExperimentConfig, load_config_json
from scaled_ql.models.qnet import MultiGameQNetwork
from scaled_ql.models.weights import PICKLE_FILES, WeightsError, looks_like_repo_id

CHECKPOINTS = "checkpoints"
"""The run folder's sub-folder of checkpoints, one ``<step:08d>`` folder each."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or incompatible; the message names the path."""


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (half-written ``.tmp-`` folders excluded)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_model_dir(path: str | Path) -> Path:
    """Accept a run folder, a checkpoint folder or its ``model/`` folder; return the ``model/`` folder."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    if (path / "model" / "model.safetensors").is_file():
        return path / "model"
    if (path / CHECKPOINTS).is_dir():
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest / "model"
    pickles = [name for name in PICKLE_FILES if (path / name).is_file() or (path / "model" / name).is_file()]
    raise CheckpointError(
        f"checkpoint '{path}': expected a folder holding model.safetensors (or model/model.safetensors, "
        f"or a run folder with checkpoints/), found "
        + (f"only {pickles[0]}, a pickle file, which scaled_ql never loads (nothing is unpickled)" if pickles else "none")
    )


def load_model(path: str | Path, device: str = "cpu") -> tuple[MultiGameQNetwork, str | Path]:
    """Load the Q-network of a run folder, checkpoint folder, ``model/`` folder or Hub repo id;
    returns it (in eval mode) and where it came from (the ``model/`` folder or the repo id)."""
    local = Path(path)
    if not local.exists() and (not looks_like_repo_id(str(path)) or local.parent.is_dir() and str(local.parent) not in ("", ".")):
        # A path (not owner/name, or one whose parent folder is here, like runs/tny): never ask the Hub.
        raise CheckpointError(f"checkpoint '{path}': no such folder" + (f" (nor Hub repo id: expected owner/name)" if not looks_like_repo_id(str(path)) else ""))
    source: str | Path = resolve_model_dir(local) if local.exists() else str(path)
    try:
        model = MultiGameQNetwork.from_pretrained(source, map_location=device, strict=True)
    except WeightsError:
        raise
    except FileNotFoundError:  # huggingface_hub's LocalEntryNotFoundError: offline, or the Hub unreachable
        raise CheckpointError(f"checkpoint '{source}': not a folder here, and as a Hub repo id: could not reach the Hugging Face "
                              f"Hub to download it, and it is not in the local cache (offline? check the network or HF_HUB_OFFLINE)") from None
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint '{source}' does not match this version's Q-network: {err}") from None
    return model.to(device).eval(), source


def load_train_config(source: str | Path) -> ExperimentConfig | None:
    """The training config saved beside the weights (a local ``model/`` folder or a Hub repo), if any."""
    local = Path(source) / "train_config.json"
    if local.is_file():
        return load_config_json(local)
    if Path(source).exists():
        return None
    try:  # a Hub repo id
        path = hf_hub_download(str(source), "train_config.json")
    except Exception:  # noqa: BLE001 - a repo without it (or offline): the caller uses its defaults
        return None
    return load_config_json(path)

"""Reading a Q-network's weights from a folder or a Hub repo: safetensors only, checked first.

``MultiGameQNetwork.from_pretrained`` goes through :func:`load_weights_into`: the weights file
must be ``model.safetensors`` (a ``pytorch_model.bin`` is a pickle and is refused, never
unpickled); the shapes the ``config.json`` asks for are compared with the file's header on a
network built on the ``meta`` device (no memory), so an absurd config fails before any
allocation; a truncated or corrupt file, and a non-finite tensor, are refused naming the file
and the tensor.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

SAFETENSORS_FILE = "model.safetensors"
PICKLE_FILES = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class WeightsError(ValueError):
    """A checkpoint's weights are missing, not safetensors, corrupt, non-finite or do not match
    its config; the message names the file (and the tensor)."""


def looks_like_repo_id(text: str) -> bool:
    """``owner/name`` and nothing a local path would be written as (``./x``, ``/x``, ``a/b/c``)."""
    return bool(REPO_ID.fullmatch(text)) and ".." not in text


def weights_file(model_id: str, *, revision=None, cache_dir=None, force_download=False, local_files_only=False, token=None) -> Path:
    """The ``model.safetensors`` of a local folder or a Hub repo (downloaded); refuses pickles."""
    if os.path.isdir(model_id):
        file = Path(model_id) / SAFETENSORS_FILE
        if file.is_file():
            return file
        pickles = [name for name in PICKLE_FILES if (Path(model_id) / name).is_file()]
        found = f"found only {pickles[0]}, a pickle file, which scaled_ql never loads (nothing is unpickled)" if pickles else "found none"
        raise WeightsError(f"checkpoint '{model_id}': expected weights in {SAFETENSORS_FILE}, {found}")
    try:
        return Path(hf_hub_download(repo_id=model_id, filename=SAFETENSORS_FILE, revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, token=token, local_files_only=local_files_only))
    except RepositoryNotFoundError:
        raise WeightsError(f"checkpoint '{model_id}': no such folder here and no such Hub model repo (or it is private: log in)") from None
    except LocalEntryNotFoundError:
        cached_pickle = any(isinstance(try_to_load_from_cache(model_id, name, cache_dir=cache_dir, revision=revision), str)
                            for name in PICKLE_FILES)
        if cached_pickle:
            raise WeightsError(f"Hub repo '{model_id}': no {SAFETENSORS_FILE}, only a pickle file (pytorch_model.bin), "
                               "which scaled_ql never loads (nothing is unpickled)") from None
        raise WeightsError(f"Hub repo '{model_id}': could not reach the Hugging Face Hub to download {SAFETENSORS_FILE}, "
                           "and it is not in the local cache (offline? check the network or HF_HUB_OFFLINE)") from None
    except EntryNotFoundError:
        raise WeightsError(f"Hub repo '{model_id}' has no {SAFETENSORS_FILE}; scaled_ql loads safetensors only and never "
                           "unpickles a pytorch_model.bin") from None


def _header_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    try:
        with safe_open(str(file), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"weights file '{file}' is corrupt or truncated (not a readable safetensors file): {err}") from None


def check_config_against_weights(cls, model_kwargs: dict[str, Any], file: Path) -> None:
    """Build ``cls(**model_kwargs)`` on the meta device (no memory) and compare every tensor's
    shape with the file's header; a mismatch names the tensor and both shapes."""
    shapes = _header_shapes(file)
    model = model_kwargs.get("model") or {}
    depth = model.get("vit_depth") if model.get("backbone") == "vit" else None
    if isinstance(depth, int) and depth > len(shapes):  # every layer has tensors: building that many would only take long
        raise WeightsError(f"weights file '{file}': its config.json asks for {depth} ViT layers (model.vit_depth), "
                           f"but the file holds only {len(shapes)} tensors")
    with torch.device("meta"):
        probe = cls(**model_kwargs)
    expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    for name, shape in expected.items():
        if name in shapes and shapes[name] != shape:
            raise WeightsError(f"weights file '{file}': tensor '{name}' has shape {list(shapes[name])}, but its config.json "
                               f"asks for {list(shape)} ({sum(math.prod(s) for s in expected.values()):,} parameters in all)")
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise WeightsError(f"weights file '{file}' does not match its config.json: missing tensors {missing[:5]}, "
                           f"unexpected tensors {unexpected[:5]}")


def read_weights(file: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, each checked finite; errors name the file and tensor."""
    try:
        state = load_file(str(file), device=str(device))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"weights file '{file}' is corrupt or truncated (not a readable safetensors file): {err}") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise WeightsError(f"weights file '{file}': tensor '{name}' has {bad} non-finite values (NaN or inf); refusing it")
    return state

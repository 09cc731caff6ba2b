"""Checkpoints: a Hub-ready ``model/`` folder beside a ``state/`` folder, written atomically.

Layout of ``<run>/checkpoints/<step:08d>/``::

    model/config.json           architecture, games, value head, preprocessing protocol
    model/model.safetensors     online network weights
    model/train_config.json     the full resolved experiment config
    state/target.safetensors    target network weights
    state/optimizer.safetensors optimizer tensors (Adam moments, step counts)
    state/rng.safetensors       torch CPU (and CUDA) generator states
    state/trainer.json          step, optimizer param groups, sampler state, loop state

A checkpoint is written into ``checkpoints/.tmp-<step>``, every file is fsynced, and the
folder is renamed into place, so a folder named by a step number is always complete; a kill
during the write leaves only a ``.tmp-`` folder, which is ignored and cleaned up. Nothing is
pickled: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from scaled_ql.config import ExperimentConfig, load_config_json
from scaled_ql.models.loading import CHECKPOINTS, CheckpointError, latest_checkpoint, list_checkpoints, resolve_model_dir
from scaled_ql.train.parallel import LOCAL, Distribution

__all__ = ["CHECKPOINTS", "CheckpointError", "latest_checkpoint", "list_checkpoints", "resolve_model_dir", "save_checkpoint",
           "load_checkpoint", "load_optimizer", "find_resumable_checkpoint", "checkpoint_problem", "check_compatible"]


def _fsync_tree(path: Path) -> None:
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    for folder in [path, *sorted(p for p in path.rglob("*") if p.is_dir())]:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def optimizer_to_safetensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into flat tensors and JSON-able param groups."""
    return state_dict_to_safetensors(optimizer.state_dict())


def state_dict_to_safetensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a torch optimizer state dict (``state``, ``param_groups``) into flat tensors and JSON."""
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{index}.{key}"] = tensor.detach().cpu().contiguous()
    return tensors, {"param_groups": state["param_groups"]}


def optimizer_from_safetensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    return {"state": state, "param_groups": meta["param_groups"]}


def match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state the memory layout (e.g. channels_last) of its parameter.

    safetensors stores contiguous tensors; the fused AdamW kernel walks a parameter and its
    moments element by element in memory order, so a channels_last weight with a contiguous
    moment would pair the wrong elements.
    """
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    return tensors


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


ZERO_SCALARS = ("dynamic_loss_scale", "overflow", "clip_grad", "zero_stage", "group_paddings", "param_alignment_paddings",
                "partition_count", "ds_version")
"""The JSON-able entries of a DeepSpeed ZeRO optimizer's ``state_dict()`` that a checkpoint keeps
(its loss-scaler object and its universal-checkpoint slice mappings are not kept: the loss scale
is static here, and a resume uses the same number of processes)."""


def _rank_optimizer_state(optimizer: Any, layout: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's part of a sharded optimizer, through the optimizer's public ``state_dict()``:
    FSDP's per-rank state, or a ZeRO partition (the inner Adam state over the flat fp32 partition,
    the partition itself, and the ZeRO optimizer's scalars)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if layout == "per_rank":
        return optimizer_to_safetensors(inner)
    zero = inner.state_dict()
    tensors, meta = state_dict_to_safetensors(zero["base_optimizer_state"])
    parts = zero["single_partition_of_fp32_groups"]
    for i, part in enumerate(parts):
        tensors[f"fp32_partition.{i}"] = part.detach().cpu().contiguous()
    meta["fp32_partitions"] = len(parts)
    meta["zero"] = {k: _json_value(zero[k]) for k in ZERO_SCALARS if k in zero}
    return tensors, meta


def _json_value(value: Any) -> Any:
    """Enums and tuples of a ZeRO state dict as JSON values."""
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return int(value) if hasattr(value, "value") and isinstance(value.value, int) else value


def _zero_state_dict(tensors: dict[str, torch.Tensor], meta: dict[str, Any], rank: int, world_size: int) -> list[dict[str, Any] | None]:
    """The list of per-rank state dicts a ZeRO optimizer's public ``load_state_dict`` takes, this
    rank's entry rebuilt from its files. A checkpoint written before the ZeRO scalars were kept
    holds only the Adam state and the fp32 partition: the rest is the running DeepSpeed's."""
    parts = {k: tensors.pop(k) for k in [k for k in tensors if k.startswith("fp32_partition.")]}
    zero = dict(meta.get("zero") or {"ds_version": importlib.metadata.version("deepspeed")})
    zero["base_optimizer_state"] = optimizer_from_safetensors(tensors, meta)
    zero["single_partition_of_fp32_groups"] = [parts[f"fp32_partition.{i}"] for i in range(len(parts))]
    states: list[dict[str, Any] | None] = [None] * world_size
    states[rank] = zero
    return states


def save_checkpoint(
    run_dir: Path,
    step: int,
    cfg: ExperimentConfig,
    model: nn.Module,
    target: nn.Module,
    optimizer: torch.optim.Optimizer,
    rank_state: dict[str, Any],
    dist: Distribution = LOCAL,
    write_rank_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and keep the newest ``cfg.train.keep_checkpoints``.

    Collective: every process calls it. Process 0 writes the model, target network and the
    shared state; every process's sampler state (``rank_state``) and RNG state are gathered into
    ``trainer.json`` and ``rng.safetensors``; a sharded (ZeRO) optimizer is written one file per
    process. ``model`` is the unwrapped online network. ``write_rank_files(state_dir)``, if given,
    lets every process add its own files (e.g. its online replay) before the checkpoint appears.
    """
    rank, world = dist.rank, dist.world_size
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"{step:08d}"
    tmp = root / f".tmp-{step:08d}"
    try:
        if rank == 0:
            root.mkdir(parents=True, exist_ok=True)
            for stale in root.glob(".tmp-*"):  # left by a save that was killed
                shutil.rmtree(stale, ignore_errors=True)
            (tmp / "state").mkdir(parents=True)
        dist.barrier()

        layout = dist.sharded_optimizer or "full"
        sharded = layout != "full"
        if write_rank_files is not None:
            write_rank_files(tmp / "state")
        if sharded:
            opt_tensors, opt_meta = _rank_optimizer_state(optimizer, layout)
            save_file(opt_tensors, tmp / "state" / f"optimizer_rank{rank}.safetensors")
            (tmp / "state" / f"optimizer_rank{rank}.json").write_text(json.dumps(opt_meta))
        gathered = dist.gather_objects(rank_state)
        rngs = dist.gather_objects(rng_tensors())
        if rank == 0:
            model.save_pretrained(tmp / "model")
            (tmp / "model" / "train_config.json").write_text(cfg.to_json())
            save_file({k: v.detach().cpu().contiguous() for k, v in target.state_dict().items()}, tmp / "state" / "target.safetensors")
            meta: dict[str, Any] = {"step": step, "world_size": world, "sharded_optimizer": sharded,
                                    "optimizer_layout": layout, "ranks": gathered}
            if not sharded:
                opt_tensors, meta["optimizer"] = optimizer_to_safetensors(getattr(optimizer, "optimizer", optimizer))
                save_file(opt_tensors, tmp / "state" / "optimizer.safetensors")
            save_file({f"rank{r}.{k}": v for r, t in enumerate(rngs) for k, v in t.items()}, tmp / "state" / "rng.safetensors")
            (tmp / "state" / "trainer.json").write_text(json.dumps(meta, indent=1))
        dist.barrier()  # every shard is on disk before the rename makes the checkpoint visible

        if rank == 0:
            _fsync_tree(tmp)
            if final.exists():  # re-saving the same step (e.g. resumed exactly at a checkpoint)
                shutil.rmtree(final)
            os.replace(tmp, final)
            fd = os.open(root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            for old in list_checkpoints(run_dir)[: -cfg.train.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
    except (OSError, SafetensorError) as err:  # a full disk, a read-only folder: one line naming both, no leftovers
        shutil.rmtree(tmp, ignore_errors=True)
        cause = getattr(err, "strerror", None) or str(err)
        raise CheckpointError(f"could not write checkpoint '{final}': {cause}"
                              + (f" ('{err.filename}')" if getattr(err, "filename", None) else "")
                              + "; no partial checkpoint was left") from None
    dist.barrier()
    return final


def checkpoint_problem(path: Path) -> str | None:
    """Why checkpoint ``path`` cannot be resumed from (a missing, truncated or corrupt file,
    named), or None when every file is readable. Reads the safetensors headers (which cover
    the file's length) and the JSON files, not the tensors."""
    path = Path(path)
    for name in ("model/config.json", "model/model.safetensors", "model/train_config.json", "state/target.safetensors",
                 "state/rng.safetensors", "state/trainer.json"):
        if not (path / name).is_file():
            return f"'{path / name}' is missing"
    for file in sorted(path.rglob("*")):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as handle:
                    handle.keys()
            elif file.suffix == ".json":
                json.loads(file.read_text())
        except (SafetensorError, OSError, ValueError) as err:
            return f"'{file}' is corrupt or truncated ({err})"
    meta = json.loads((path / "state" / "trainer.json").read_text())
    if not meta.get("sharded_optimizer") and not (path / "state" / "optimizer.safetensors").is_file():
        return f"'{path / 'state' / 'optimizer.safetensors'}' is missing"
    return None


def find_resumable_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest intact checkpoint of ``run_dir`` and, one line each, what was skipped and why
    (a newer corrupt checkpoint; a ``.tmp-`` folder of a write that was killed; none at all)."""
    root = Path(run_dir) / CHECKPOINTS
    notes = []
    for candidate in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(candidate)
        if problem is None:
            return candidate, notes
        notes.append(f"skipped checkpoint '{candidate}': {problem}")
    partial = sorted(root.glob(".tmp-*")) if root.is_dir() else []
    why = (f"the only checkpoint write, '{partial[-1]}', was interrupted before it completed" if partial and not notes
           else "no checkpoint is intact" if notes else f"'{root}' holds no checkpoint")
    notes.append(f"--resume: nothing to resume in '{run_dir}' ({why}): starting fresh from step 0")
    return None, notes


def dataset_fingerprint(metadata: list[Any]) -> dict[str, Any]:
    """What identifies the training data: its folders and one sha256 over every data file's
    sha256 (from the datasets' metadata, so nothing is read)."""
    digest = hashlib.sha256()
    for meta in metadata:
        for entry in meta.files:
            digest.update(f"{entry['name']}:{entry['sha256']}\n".encode())
    return {"paths": [str(m.path) for m in metadata], "sha256": digest.hexdigest(), "rows": sum(m.num_rows for m in metadata)}


def check_same_dataset(path: Path, meta: dict[str, Any], current: dict[str, Any]) -> None:
    """Stop when checkpoint ``path`` was trained on other data than ``current`` (a dataset
    regenerated at the same path, say), naming both."""
    saved = meta.get("ranks", [{}])[0].get("dataset")
    if saved is None or saved["sha256"] == current["sha256"]:
        return  # checkpoints written before fingerprints were recorded are not checked
    raise CheckpointError(
        f"checkpoint '{path}' was trained on dataset {saved['paths']} with fingerprint {saved['sha256'][:16]} ({saved['rows']} rows), "
        f"but data.path now holds {current['paths']} with fingerprint {current['sha256'][:16]} ({current['rows']} rows): the "
        "data changed (regenerated at the same path?). Resume with the original data, or start a new run (name=...)"
    )


@dataclass
class LoadedState:
    step: int
    world_size: int
    meta: dict[str, Any]


def load_checkpoint(path: Path, cfg: ExperimentConfig, model: nn.Module, target: nn.Module, rank: int = 0) -> LoadedState:
    """Restore weights, target and this process's RNG from checkpoint ``path`` (before wrapping)."""
    path = Path(path)
    saved_cfg = load_config_json(path / "model" / "train_config.json")
    check_compatible(saved_cfg, cfg, where=str(path))
    try:
        model.load_state_dict(load_file(path / "model" / "model.safetensors"), strict=True)
        target.load_state_dict(load_file(path / "state" / "target.safetensors"), strict=True)
        meta = json.loads((path / "state" / "trainer.json").read_text())
        rngs = load_file(path / "state" / "rng.safetensors")
    except (OSError, RuntimeError, KeyError, json.JSONDecodeError, SafetensorError) as err:
        raise CheckpointError(f"checkpoint '{path}' could not be loaded: {err}") from None
    mine = {k.split(".", 1)[1]: v for k, v in rngs.items() if k.startswith(f"rank{rank}.")}
    if mine:
        restore_rng(mine)
    return LoadedState(step=int(meta["step"]), world_size=int(meta["world_size"]), meta=meta)


def load_optimizer(path: Path, loaded: LoadedState, optimizer: Any, rank: int, world_size: int) -> None:
    """Restore the optimizer (after it is wrapped): the whole state, or this process's ZeRO shard."""
    path = Path(path)
    try:
        if loaded.meta.get("sharded_optimizer"):
            if world_size != loaded.world_size:
                raise CheckpointError(
                    f"checkpoint '{path}' holds an optimizer sharded over {loaded.world_size} processes; "
                    f"this run has {world_size}. Resume a DeepSpeed or FSDP run with the same number of processes"
                )
            inner = getattr(optimizer, "optimizer", optimizer)
            tensors = load_file(path / "state" / f"optimizer_rank{rank}.safetensors")
            meta = json.loads((path / "state" / f"optimizer_rank{rank}.json").read_text())
            if loaded.meta.get("optimizer_layout") == "per_rank":
                inner.load_state_dict(optimizer_from_safetensors(tensors, meta))
            else:  # ZeRO: its public load, the fp32 master weights from the saved partition (no precision loss)
                inner.load_state_dict(_zero_state_dict(tensors, meta, rank, world_size), load_optimizer_states=True,
                                      load_from_fp32_weights=True)
        else:
            inner = getattr(optimizer, "optimizer", optimizer)
            inner.load_state_dict(optimizer_from_safetensors(load_file(path / "state" / "optimizer.safetensors"), loaded.meta["optimizer"]))
            match_param_layout(inner)
    except (OSError, RuntimeError, KeyError, ValueError, json.JSONDecodeError, SafetensorError) as err:
        raise CheckpointError(f"checkpoint '{path}': the optimizer state could not be loaded: {err}") from None


# Keys whose change breaks a resume: the network, the games, the data and the loss.
_RESUME_KEYS = ("games", "env", "model", "data", "loss", "seed", "train.batch_size", "train.lr", "train.target_update_period",
                "dist.backend", "dist.grad_accum")


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def check_compatible(saved: ExperimentConfig, current: ExperimentConfig, where: str) -> None:
    """Stop with the differing keys named when a checkpoint does not match the current config."""
    a, b = saved.to_dict(), current.to_dict()
    diffs = []
    for key in _RESUME_KEYS:
        va, vb = _get(a, key), _get(b, key)
        if isinstance(va, dict):
            diffs += [f"{key}.{k}: checkpoint has {va[k]!r}, config has {vb.get(k)!r}" for k in va if va[k] != vb.get(k)]
        elif va != vb:
            diffs.append(f"{key}: checkpoint has {va!r}, config has {vb!r}")
    if diffs:
        raise CheckpointError(f"checkpoint '{where}' was made with a different config:\n  " + "\n  ".join(diffs))

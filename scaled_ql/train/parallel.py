"""The only place that knows about distribution: build the accelerator, wrap model and optimizer,
and the one narrow interface the rest of training sees, :class:`Distribution` (backward, clip,
reduce, is-main, barrier, gather).

Models never import this; the training loop calls :func:`make_accelerator` once and
:func:`prepare` once, and hands a :class:`Distribution` to the update step and the checkpoint
code (never the accelerator itself). What the launcher decided (``accelerate launch`` sets ``ACCELERATE_*``
variables; ``torchrun`` sets ``WORLD_SIZE``) is read here, checked against the config's ``dist``
section, and written back into the config as resolved values, so the run's ``config.json``
records it. A disagreement stops with both values named.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import (DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin, gather_object,
                               patch_environment)
from torch import nn

from scaled_ql.config import ConfigError, ExperimentConfig


@dataclass(frozen=True)
class Topology:
    """The resolved layout of a run."""

    world_size: int
    rank: int
    per_device_batch: int
    mixed_precision: str


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    return None if value is None else value.strip().lower() in ("1", "true", "yes")


def _check_launcher(cfg: ExperimentConfig, mixed_precision: str) -> None:
    dist = cfg.dist
    for env, backend in (("ACCELERATE_USE_DEEPSPEED", "deepspeed"), ("ACCELERATE_USE_FSDP", "fsdp")):
        flag = _env_flag(env)
        if flag is True and dist.backend != backend:
            raise ConfigError(f"the launcher sets {env}=true but config key 'dist.backend' is '{dist.backend}'; "
                              f"add dist.backend={backend} or launch with another accelerate config")
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    if dist.backend == "deepspeed" and stage is not None and int(stage) != dist.zero_stage:
        raise ConfigError(f"the launcher sets ACCELERATE_DEEPSPEED_ZERO_STAGE={stage} but config key 'dist.zero_stage' is {dist.zero_stage}")
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched is not None and launched != mixed_precision:
        raise ConfigError(f"the launcher sets ACCELERATE_MIXED_PRECISION={launched} but config key 'dist.mixed_precision' "
                          f"resolves to '{mixed_precision}'")


def resolve_mixed_precision(cfg: ExperimentConfig, device_type: str) -> str:
    if cfg.dist.mixed_precision != "auto":
        if cfg.dist.mixed_precision == "bf16" and device_type == "cpu":
            raise ConfigError("config key 'dist.mixed_precision': expected 'no' or 'auto' on CPU (bf16 matmul is "
                              "hundreds of times slower there), found 'bf16'")
        return cfg.dist.mixed_precision
    return "bf16" if device_type == "cuda" else "no"


def _accelerator_kwargs(cfg: ExperimentConfig, wants_gpu: bool, mixed_precision: str, per_device: int) -> dict[str, Any]:
    """The arguments of ``Accelerator`` for the config's backend (the process state set up first where it must be)."""
    dist, train = cfg.dist, cfg.train
    kwargs: dict = {"mixed_precision": mixed_precision, "gradient_accumulation_steps": dist.grad_accum}
    if dist.backend == "deepspeed":
        if not wants_gpu:
            # On CPU, accelerate only finds the processes (gloo) when asked with cpu=True, which
            # in turn switches DeepSpeed off; set the process state up first, then DeepSpeed.
            PartialState(cpu=True)
        # Built from keyword arguments (not a full JSON config), so an accelerate config file that
        # sets the ZeRO stage or bf16 stays compatible; precision comes from `mixed_precision`.
        plugin = DeepSpeedPlugin(zero_stage=dist.zero_stage, gradient_accumulation_steps=dist.grad_accum,
                                 gradient_clipping=float(train.grad_clip))
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = per_device
        plugin.deepspeed_config["steps_per_print"] = 1 << 30
        kwargs["deepspeed_plugin"] = plugin
    elif dist.backend == "fsdp":
        if not wants_gpu:
            raise ConfigError("config key 'dist.backend' is 'fsdp', which accelerate runs on GPUs only; on CPU use "
                              "dist.backend=ddp or dist.backend=deepspeed")
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(sharding_strategy="SHARD_GRAD_OP", use_orig_params=True)
    else:
        kwargs["cpu"] = not wants_gpu
    return kwargs


_in_process_group = False
"""Whether this process has been in a torch.distributed process group (see :func:`end_program`)."""


def make_accelerator(cfg: ExperimentConfig) -> tuple[Accelerator, ExperimentConfig, Topology]:
    """Build the accelerator and return the config with ``dist`` resolved (world size, precision)."""
    dist, train = cfg.dist, cfg.train
    if train.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'train.device': expected an available device, found 'cuda' but torch sees no GPU")
    wants_gpu = train.device == "cuda" or (train.device == "auto" and torch.cuda.is_available())
    mixed_precision = resolve_mixed_precision(cfg, "cuda" if wants_gpu else "cpu")
    _check_launcher(cfg, mixed_precision)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.world_size and dist.world_size != world_size:
        raise ConfigError(f"config key 'dist.world_size' is {dist.world_size} but the launcher started {world_size} "
                          f"processes; set dist.world_size=0 to take the launcher's")
    per_device, rest = divmod(train.batch_size, world_size * dist.grad_accum)
    if rest or per_device % len(cfg.games):
        raise ConfigError(
            f"config key 'train.batch_size' ({train.batch_size}, the global batch) must split into "
            f"{world_size} processes x {dist.grad_accum} micro-batches (dist.grad_accum) of a multiple of "
            f"{len(cfg.games)} games; found {train.batch_size / (world_size * dist.grad_accum):g} per micro-batch"
        )

    if dist.backend == "deepspeed" and not wants_gpu and "WORLD_SIZE" not in os.environ:
        raise ConfigError("config key 'dist.backend' is 'deepspeed', which on CPU needs the processes a launcher starts; "
                          "found no launcher (WORLD_SIZE is unset). Run it under `torchrun --standalone --nproc_per_node N "
                          "-m scaled_ql.cli pretrain ...` (N=1 for one process), or use dist.backend=ddp")
    # accelerate sets up DeepSpeed's process group only when this flag is present (as `accelerate
    # launch --use_deepspeed` sets it); under torchrun the config supplies it. It is read while the
    # accelerator is built and put back afterwards: a later run in this process may use another backend.
    with patch_environment(**({"ACCELERATE_USE_DEEPSPEED": "true"} if dist.backend == "deepspeed" else {})):
        accelerator = Accelerator(**_accelerator_kwargs(cfg, wants_gpu, mixed_precision, per_device))
    global _in_process_group
    _in_process_group = _in_process_group or (torch.distributed.is_available() and torch.distributed.is_initialized())

    resolved = dataclasses.replace(cfg, dist=dataclasses.replace(dist, world_size=accelerator.num_processes,
                                                                  mixed_precision=mixed_precision))
    return accelerator, resolved, Topology(world_size=accelerator.num_processes, rank=accelerator.process_index,
                                           per_device_batch=per_device, mixed_precision=mixed_precision)


def end_program(status: int) -> int:
    """End a program (not a function call: the CLI's entry) that ran in a process group; return
    ``status`` when it did not.

    torch's gloo backend keeps its worker threads after ``destroy_process_group`` while anything
    still holds the group, and DDP and DeepSpeed hold it until the process ends. A worker that
    drops the last reference to a collective's tensor while the interpreter shuts down must take
    the GIL, and CPython before 3.14 ends such a thread inside a C++ destructor: the process
    aborts ("terminate called without an active exception", SIGABRT) after the run finished and
    wrote its checkpoint, and the launcher reports a failure (pytorch/pytorch#190489). So after a
    process group, the program runs its exit handlers, flushes its output and leaves with
    ``status`` without the interpreter's teardown, the only moment such a thread can abort it.
    """
    if not _in_process_group:
        return status
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def prepare(accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """Wrap the online network and its optimizer (DDP, DeepSpeed engine or FSDP). The target
    network is never wrapped: it is a plain copy refreshed from the unwrapped online weights."""
    return accelerator.prepare(model, optimizer)


def shutdown(accelerator: Accelerator | None) -> None:
    """End the run cleanly: free the wrapped model and optimizer, destroy the process group and
    reset accelerate's state (a later run in this process starts afresh). Leaving the process
    after a group is :func:`end_program`'s part."""
    if accelerator is not None:
        accelerator.free_memory()  # DeepSpeed's engine keeps itself alive through its hooks until destroyed
        accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    # accelerate keeps its state in process-wide singletons; reset them so a later run in the same
    # process (tests, notebooks) builds its own accelerator from its own config.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside its wrappers: DDP, FSDP and DeepSpeed keep it in ``.module``,
    ``torch.compile`` in ``._orig_mod``."""
    while True:
        inner = getattr(model, "module", None)
        if inner is None:
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class Distribution:
    """What the update step, the loop and the checkpoint code may ask of distribution: backward,
    clip, reduce, is-main, barrier, gather (and the accumulation context). ``Distribution(None)``
    (:data:`LOCAL`) is one process without an accelerator: plain ``loss.backward()``."""

    def __init__(self, accelerator: Accelerator | None = None) -> None:
        self._accelerator = accelerator

    @property
    def rank(self) -> int:
        return self._accelerator.process_index if self._accelerator is not None else 0

    @property
    def world_size(self) -> int:
        return self._accelerator.num_processes if self._accelerator is not None else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return self._accelerator.device if self._accelerator is not None else torch.device("cpu")

    @property
    def sharded_optimizer(self) -> str | None:
        """``zero`` (DeepSpeed ZeRO: each process holds its partition of the optimizer state),
        ``per_rank`` (FSDP: each process holds the state of its shard) or None (every process holds
        the same, whole state), from accelerate's public ``distributed_type``."""
        kind = self._accelerator.distributed_type if self._accelerator is not None else DistributedType.NO
        return {DistributedType.DEEPSPEED: "zero", DistributedType.FSDP: "per_rank"}.get(kind)

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        """Wrap model and optimizer for this distribution (:func:`prepare`); unchanged without an accelerator."""
        return (model, optimizer) if self._accelerator is None else prepare(self._accelerator, model, optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        if self._accelerator is None:
            loss.backward()
        else:
            self._accelerator.backward(loss)

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor | None:
        """Clip the gradients' global norm to ``max_norm`` and return the norm before clipping; None
        between the micro-batches of gradient accumulation (nothing to clip yet) or when the engine
        (DeepSpeed) clips inside its own step and reports no norm."""
        if self._accelerator is None:
            return nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if not self._accelerator.sync_gradients:
            return None
        norm = self._accelerator.clip_grad_norm_(model.parameters(), max_norm)  # DeepSpeed: its engine's norm
        return None if norm is None else torch.as_tensor(norm, dtype=torch.float32)

    def accumulate(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Gradient accumulation over ``dist.grad_accum`` micro-batches (a no-op without an accelerator)."""
        return contextlib.nullcontext() if self._accelerator is None else self._accelerator.accumulate(model)

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """``sum`` or ``mean`` of ``tensor`` over the processes (itself with one process)."""
        return tensor if self._accelerator is None else self._accelerator.reduce(tensor, op)

    def barrier(self) -> None:
        if self._accelerator is not None:
            self._accelerator.wait_for_everyone()

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's ``tensor``, concatenated along the first dimension."""
        return tensor if self._accelerator is None else self._accelerator.gather(tensor)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (JSON-able), in rank order."""
        return [obj] if self._accelerator is None else gather_object([obj])


LOCAL = Distribution(None)
"""One process, no accelerator."""

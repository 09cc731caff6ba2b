"""The one training loop: load -> while: sample, update, log, checkpoint, evaluate -> save.

Pretraining, offline fine-tuning (``finetune.init``: :mod:`scaled_ql.train.finetune`) and online
fine-tuning (``online.enabled``: :mod:`scaled_ql.train.online`) are this loop with other data
sources and loss weights. Distribution is applied at its edge (:mod:`scaled_ql.train.parallel`);
the loop sees only the narrow :class:`~scaled_ql.train.parallel.Distribution` interface.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from scaled_ql.config import ConfigError, ExperimentConfig, load_config_json
from scaled_ql.data.augment import augment_batch
from scaled_ql.data.prefetch import Prefetcher
from scaled_ql.eval.hook import plot_curves, run_evaluation
from scaled_ql.losses.algorithms import Algorithm, check_algorithm, make_algorithm
from scaled_ql.models import MultiGameQNetwork, build_model, count_parameters
from scaled_ql.train.checkpoint import (LoadedState, check_compatible, check_same_dataset, find_resumable_checkpoint,
                                       latest_checkpoint, load_checkpoint, load_optimizer, save_checkpoint)
from scaled_ql.train.data_source import open_data_source
from scaled_ql.train.finetune import init_from_pretrained
from scaled_ql.train.interrupt import TrainingInterrupted, enter_loop, leave_loop, stop_on_signals, stop_requested
from scaled_ql.train.online import OnlinePart
from scaled_ql.train.parallel import Distribution, Topology, make_accelerator, shutdown, unwrap
from scaled_ql.train.phases import PhaseClock
from scaled_ql.train.step import holdout_metrics, lr_factor, set_lr, sync_target, train_step


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the message names the step and the last good checkpoint."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path
    eval_results: dict[str, Any] | None


def build_training_state(cfg: ExperimentConfig, device: torch.device):
    """The online network, its target copy and the optimizer, as every run and benchmark builds them."""
    model = build_model(cfg).to(device)
    target = build_model(cfg).to(device)
    if cfg.train.channels_last:
        for net in (model, target):
            net.channels_last = True
            # DeepSpeed flattens parameters into one buffer and needs them contiguous.
            if cfg.dist.backend != "deepspeed" or net is target:
                net.to(memory_format=torch.channels_last)
    if cfg.finetune.init:
        init_from_pretrained(model, cfg)
    sync_target(model, target)
    target.requires_grad_(False)
    if cfg.train.compile:  # in place: the parameters, their names and the checkpoints stay the same
        for net in (model, target):
            net.compile()
    # Heads at train.lr; the backbone at train.lr * finetune.backbone_lr_scale, or frozen.
    head_params = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    backbone_params = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    groups = [{"params": head_params, "lr": cfg.train.lr}]
    if cfg.finetune.freeze_backbone:
        model.backbone.requires_grad_(False)
    else:
        groups.insert(0, {"params": backbone_params, "lr": cfg.train.lr * cfg.finetune.backbone_lr_scale})
    optimizer = torch.optim.AdamW(
        groups, lr=cfg.train.lr, eps=cfg.train.adam_eps, weight_decay=cfg.train.weight_decay,
        fused=device.type in ("cpu", "cuda"),  # one kernel for all parameters: 5x faster step on CPU
    )
    return model, target, optimizer


def _prepare_run_dir(cfg: ExperimentConfig, resume: bool, dist: Distribution) -> Path:
    """Check the run folder on every process; only the main process writes ``config.json``."""
    run_dir = cfg.run_dir
    saved = run_dir / "config.json"
    if saved.exists() and not resume and latest_checkpoint(run_dir) is not None:
        raise ConfigError(
            f"run folder '{run_dir}' already holds checkpoints: pass --resume to continue it, "
            f"or choose another name= / runs_dir="
        )
    if resume and saved.exists():
        check_compatible(load_config_json(saved), cfg, where=str(saved))
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # Written whole or not at all: the other processes of a resumed run read it meanwhile.
        partial = saved.with_name(".config.json.tmp")
        partial.write_text(cfg.to_json())
        os.replace(partial, saved)
    dist.barrier()
    return run_dir


def pretrain(cfg: ExperimentConfig, *, resume: bool = False, progress: bool = True, clock: PhaseClock | None = None) -> TrainResult:
    """Train ``cfg`` from its dataset; resume from the run's newest checkpoint with ``resume``.

    Runs as one process or as many (``accelerate launch`` / ``torchrun``): distribution is
    applied at the edge by :mod:`scaled_ql.train.parallel`, the loop below is the same. ``clock``
    times the loop's phases (default: one without device synchronization, for the logs only).
    """
    check_algorithm(cfg)  # a config that does not fit its algorithm stops before any work
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    accelerator, cfg, topo = make_accelerator(cfg)
    try:
        with stop_on_signals():  # SIGTERM / SIGINT / SIGUSR1: finish the update, checkpoint, stop
            run = _Run(cfg, Distribution(accelerator), topo, resume)
            return _train(run, progress, clock or PhaseClock(run.dist.device))
    finally:
        shutdown(accelerator)


class _Run:
    """Everything the loop works on, built (and resumed) before it starts; what can fail on bad
    input fails here, before any long work."""

    def __init__(self, cfg: ExperimentConfig, dist: Distribution, topo: Topology, resume: bool) -> None:
        self.cfg, self.dist, self.topo = cfg, dist, topo
        device = dist.device
        torch.manual_seed(cfg.seed)
        # data.path alone picks the source: a memory-mapped Arrow folder, or Parquet shards streamed
        # (a local or shared folder, a Hub dataset repo, a URL); the checkpoints record which.
        self.data = open_data_source(cfg, topo)
        self.sampler, self.holdout = self.data.sampler, self.data.holdout
        # Online fine-tuning: the mix draws exactly the configured offline share of every batch.
        self.online = OnlinePart(cfg, self.sampler, topo) if cfg.online.enabled else None
        self.prefetcher: Prefetcher | None = None  # started by the loop, after any resume
        self.run_dir = _prepare_run_dir(cfg, resume, dist)
        model, self.target, optimizer = build_training_state(cfg, device)
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]  # train.lr_schedule scales these

        self.step, self.last_ckpt, loaded = 0, None, None
        found, notes = find_resumable_checkpoint(self.run_dir) if resume else (None, [])
        for note in notes if dist.is_main else []:
            tqdm.write(note)
        self.dataset = self.data.fingerprint
        if dist.is_main:
            tqdm.write(f"data: {self.data.kind} source '{self.data.location}'"
                       + (" (streamed: each process reads its own shards)" if self.data.streaming else " (memory-mapped)"))
        if found is not None:
            loaded = load_checkpoint(found, cfg, model, self.target, rank=topo.rank)
            check_same_dataset(found, loaded.meta, self.dataset)
            self.step, self.last_ckpt = loaded.step, found
        self.model, self.optimizer = dist.prepare(model, optimizer)
        self.net: MultiGameQNetwork = unwrap(self.model)
        # The algorithm reads the network's own support buffer (its device and dtype).
        self.algorithm: Algorithm = make_algorithm(cfg, support=self.net.support)
        if loaded is not None:
            self._resume(found, loaded)

    def _resume(self, found: Path, loaded: LoadedState) -> None:
        load_optimizer(found, loaded, self.optimizer, self.topo.rank, self.topo.world_size)
        # Memory-mapped: the index stream is global (every rank holds the same state), so a run saved
        # by N processes resumes on M with the same global batches. Streamed: each rank its own.
        self.data.load_state_dict(loaded.meta["ranks"], self.topo.rank, found)
        if self.online is not None:
            self.online.load(found, loaded, self.topo)
        if self.dist.is_main:
            tqdm.write(f"resumed {self.run_dir} from {found} at step {self.step}"
                       + (f" (saved by {loaded.world_size} processes, resumed by {self.topo.world_size})"
                          if loaded.world_size != self.topo.world_size else ""))

    def checkpoint(self, at: int) -> Path:
        online = self.online
        # With the prefetch thread drawing ahead, the state to save is the one after the last batch taken.
        taken = self.prefetcher.state_dict() if self.prefetcher is not None else None
        state = {**self.data.state_dict(sampler_state=taken), **(online.state_dict() if online else {})}
        self.last_ckpt = save_checkpoint(self.run_dir, at, self.cfg, self.net, self.target, self.optimizer, state, self.dist,
                                         write_rank_files=online.save_store if online else None)
        return self.last_ckpt

    def evaluate(self, name: str, writer: SummaryWriter | None, progress: bool, baselines: bool = False) -> dict[str, Any]:
        return run_evaluation(self.cfg, self.net, self.dist.device, self.run_dir / "eval" / name, writer, self.step, progress,
                              self.data.eval_sampler, baselines=baselines, learns_values=self.algorithm.learns_values)

    def start_drawing(self) -> None:
        """Batches from here on come from the prefetch thread (``train.prefetch``), or are drawn in the loop."""
        if self.online is None and self.cfg.train.prefetch > 0:
            self.prefetcher = Prefetcher(self.sampler.sample, self.sampler.state_dict, self.dist.device, self.cfg.train.prefetch)

    def next_batch(self, clock: PhaseClock):
        """The next training batch on the device, before augmentation."""
        if self.prefetcher is not None:
            with clock.phase("sample"):  # waiting for the prefetch thread (sampling and the copy)
                return self.prefetcher.next()
        with clock.phase("sample"):
            batch = self.online.sample() if self.online is not None else self.sampler.sample()
        with clock.phase("to_device"):
            return batch.to_torch(self.dist.device)

    def close(self) -> None:
        """Stop the background readers (the batch prefetch thread, a stream's block threads); their
        positions stay, so a checkpoint written afterwards is exact."""
        if self.prefetcher is not None:
            self.prefetcher.close()
        self.data.close()

    def log(self, writer: SummaryWriter | None, bar, metrics: dict[str, torch.Tensor], phases: dict[str, float]) -> None:
        cfg, step = self.cfg, self.step
        if self.holdout is not None:
            metrics.update(holdout_metrics(self.model, self.target, self.holdout.sample().to_torch(self.dist.device), self.algorithm))
        names = [k for k, v in metrics.items() if v.ndim == 0]
        values = self.dist.reduce(torch.stack([metrics[k].detach().float() for k in names]), "mean").tolist()
        per_game = self.dist.reduce(metrics["q/data_per_game"].detach().float(), "mean").tolist()  # host sync
        if writer is not None:
            for key, value in zip(names, values):
                writer.add_scalar(key, value, step)
            for game, value in zip(cfg.games, per_game):
                writer.add_scalar(f"q_data_per_game/{game}", value, step)
            # Milliseconds per update of each phase since the last log; updates/s over sampling and
            # the update alone (the periodic work excluded).
            for name, seconds in phases.items():
                writer.add_scalar(f"perf/{name}_ms", 1000 * seconds / cfg.train.log_every, step)
            busy = sum(phases.get(k, 0.0) for k in ("sample", "to_device", "forward", "backward", "optimizer"))
            writer.add_scalar("perf/updates_per_s", cfg.train.log_every / max(busy, 1e-9), step)
            writer.add_scalar("train/lr", self.optimizer.param_groups[-1]["lr"], step)  # the heads' rate
            for key, value in (self.online.metrics() if self.online is not None else {}).items():
                writer.add_scalar(key, value, step)
        scalars = dict(zip(names, values))
        bar.set_postfix(loss=f"{scalars['loss/total']:.3f}", q=f"{scalars.get('q/data', float('nan')):.2f}")


def _train(run: _Run, progress: bool, clock: PhaseClock) -> TrainResult:
    cfg, dist, train, device = run.cfg, run.dist, run.cfg.train, run.dist.device
    # purge_step drops events a killed run logged after its last checkpoint
    writer = SummaryWriter(str(run.run_dir / "tb"), purge_step=run.step + 1 if run.step > 0 else None) if dist.is_main else None
    if writer is not None and run.step == 0:
        writer.add_text("config", "```\n" + cfg.to_json() + "\n```")
        writer.add_scalar("model/parameters", count_parameters(run.net), 0)
    if run.online is not None:
        run.online.start_actor(run.net, device, run.topo)
    bar = tqdm(total=train.steps, initial=run.step, desc=f"pretrain {cfg.name}", unit="upd",
               disable=not (progress and dist.is_main), dynamic_ncols=True)
    # The first step whose loss was not finite, noted on the device and read only at the logging
    # and checkpoint steps: the other steps never wait for the device.
    first_bad = torch.zeros(2, dtype=torch.float64, device=device)  # [step, the loss there]
    run.model.train()
    run.start_drawing()
    clock.start()
    scheduled = train.lr_schedule != "constant" or train.lr_warmup_steps > 0
    enter_loop()  # from here a signal finishes the update and checkpoints
    try:
        while run.step < train.steps:
            if run.online is not None:  # play, then learn: env steps, then one update
                with clock.phase("act"):
                    run.online.act(run.step, train.steps)
            if scheduled:
                set_lr(run.optimizer, run.base_lrs, lr_factor(run.step, train))
            for _ in range(cfg.dist.grad_accum):  # one optimizer update per grad_accum micro-batches
                batch = augment_batch(run.next_batch(clock), train.augment, train.augment_pad, cfg.seed, run.step)
                with dist.accumulate(run.model):
                    metrics = train_step(run.model, run.target, run.optimizer, batch, run.algorithm, train.grad_clip, dist, clock)
            run.step += 1
            step = run.step
            loss = metrics["loss/total"].detach().double()
            first_bad = torch.where((first_bad[0] == 0) & ~torch.isfinite(loss), torch.stack([loss.new_tensor(step), loss]), first_bad)
            if step % train.target_update_period == 0:
                with clock.phase("target_sync"):
                    sync_target(run.net, run.target)
            at_log, at_checkpoint = step % train.log_every == 0, step % train.checkpoint_every == 0  # the last: by _finish
            if at_log or at_checkpoint or step == train.steps:
                _stop_if_not_finite(run, first_bad)
            bar.update(1)
            if at_log:
                with clock.phase("log"):
                    run.log(writer, bar, metrics, clock.take())
            if at_checkpoint:
                with clock.phase("checkpoint"):
                    run.checkpoint(step)
            if cfg.eval.episodes > 0 and train.eval_every > 0 and step % train.eval_every == 0 and step < train.steps:
                with clock.phase("evaluate"):
                    if dist.is_main:
                        run.evaluate(f"step_{step:08d}", writer, progress)
                    dist.barrier()
            clock.update_done()
            stopped_by = stop_requested(dist, sync=at_log)  # with several processes, agreed at the logging steps
            if stopped_by is not None:
                if run.last_ckpt is None or run.last_ckpt.name != f"{step:08d}":
                    _stop_if_not_finite(run, first_bad)
                    run.checkpoint(step)
                for closing in (bar, run.online, writer):
                    if closing is not None:
                        closing.close()
                raise TrainingInterrupted(stopped_by, step, run.last_ckpt)
    finally:
        run.close()
    return _finish(run, writer, bar, progress)


def _stop_if_not_finite(run: _Run, first_bad: torch.Tensor) -> None:
    """Raise :class:`NonFiniteLossError` naming the first step with a non-finite loss, if any (on
    any process: every process agrees)."""
    seen = run.dist.gather(first_bad.reshape(1, 2)).tolist()  # host sync, all ranks agree
    bad = sorted((int(step), loss) for step, loss in seen if step > 0)
    if bad:
        last = run.last_ckpt if run.last_ckpt is not None else "none (no checkpoint was written yet)"
        raise NonFiniteLossError(f"loss became {bad[0][1]} at step {bad[0][0]}; the last good checkpoint is {last}")


def _finish(run: _Run, writer: SummaryWriter | None, bar, progress: bool) -> TrainResult:
    """After the loop: the final checkpoint, the final evaluation, the curves."""
    bar.close()
    if run.online is not None:
        run.online.close()
    if run.last_ckpt is None or run.last_ckpt.name != f"{run.step:08d}":
        run.checkpoint(run.step)
    leave_loop()  # the final checkpoint is whole: a signal now stops at once
    eval_results = None
    if run.cfg.eval.episodes > 0 and run.dist.is_main:
        eval_results = run.evaluate("final", writer, progress, baselines=run.cfg.eval.baselines)
        (run.run_dir / "eval.json").write_text(json.dumps(eval_results, indent=1))
    if writer is not None:
        writer.close()
        plot_curves(run.run_dir)
    return TrainResult(run_dir=run.run_dir, step=run.step, checkpoint=run.last_ckpt, eval_results=eval_results)

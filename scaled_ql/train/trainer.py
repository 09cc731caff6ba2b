"""The one training loop: load -> while: sample, update, log, checkpoint, evaluate -> save.

Pretraining uses it as is; fine-tuning (later) changes the data source and the loss weights,
not the loop. Distribution wraps the loop at its edge and is not in this file yet.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from scaled_ql.config import ConfigError, ExperimentConfig, load_config_json
from scaled_ql.data.augment import augment_batch
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore
from scaled_ql.models import MultiGameQNetwork, build_model, count_parameters
from scaled_ql.train.checkpoint import (check_compatible, check_same_dataset, dataset_fingerprint, find_resumable_checkpoint,
                                       latest_checkpoint, load_checkpoint, load_optimizer, save_checkpoint)
from scaled_ql.train.interrupt import TrainingInterrupted, enter_loop, leave_loop, stop_on_signals, stop_requested
from scaled_ql.train.parallel import make_accelerator, prepare, shutdown
from scaled_ql.train.step import holdout_metrics, sync_target, train_step, unwrap


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the message names the step and the last good checkpoint."""


def make_policy(model: MultiGameQNetwork, device: torch.device):
    """Greedy policy callable for the evaluator: (uint8 obs [N,K,H,W], game id) -> actions [N]."""

    @torch.no_grad()
    def policy(obs: np.ndarray, game_id: int) -> np.ndarray:
        was_training = model.training
        model.eval()
        x = torch.from_numpy(obs).to(device)
        game = torch.full((x.shape[0],), game_id, dtype=torch.long, device=device)
        actions = model.greedy_actions(x, game).cpu().numpy()
        model.train(was_training)
        return actions

    return policy


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
        from scaled_ql.eval.run import load_model

        pretrained, source = load_model(cfg.finetune.init)
        try:
            report = model.init_from(pretrained)
        except ValueError as err:
            raise ConfigError(f"config key 'finetune.init' ('{source}'): {err}") from None
        from_base = "".join(f", {v} from {b}'s head" for v, b in report["variant_heads"].items())
        tqdm.write(f"fine-tuning from {source}: heads reused for {report['reused_heads']}{from_base}, new for {report['new_heads']}")
    sync_target(model, target)
    target.requires_grad_(False)
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


def _prepare_run_dir(cfg: ExperimentConfig, resume: bool, accelerator) -> Path:
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
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(cfg.to_json())
    accelerator.wait_for_everyone()
    return run_dir


def pretrain(cfg: ExperimentConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``cfg`` from its dataset; resume from the run's newest checkpoint with ``resume``.

    Runs as one process or as many (``accelerate launch`` / ``torchrun``): distribution is
    applied at the edge by :mod:`scaled_ql.train.parallel`, the loop below is the same.
    """
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    accelerator, cfg, topo = make_accelerator(cfg)
    try:
        with stop_on_signals():  # SIGTERM / SIGINT / SIGUSR1: finish the update, checkpoint, stop
            return _train(cfg, accelerator, topo, resume, progress)
    finally:
        shutdown(accelerator)


def _train(cfg: ExperimentConfig, accelerator, topo, resume: bool, progress: bool) -> TrainResult:
    device = accelerator.device
    main = accelerator.is_main_process
    torch.manual_seed(cfg.seed)

    # Everything that can fail on bad input fails here, before any long work.
    store = ReplayStore(cfg.data.path, cfg.games, ignore_extra_games=cfg.data.ignore_extra_games)
    expected = (cfg.env.frame_size, cfg.env.frame_size)
    if tuple(store.frame_shape) != expected:
        raise ConfigError(
            f"dataset '{cfg.data.path}' holds frames of shape {tuple(store.frame_shape)}, but config key "
            f"'env.frame_size' expects {expected}"
        )

    sampler = Sampler.from_config(store, cfg.data, topo.per_device_batch, frame_stack=cfg.env.frame_stack,
                                  seed=cfg.seed, rank=topo.rank, world_size=topo.world_size, split="train")
    holdout = None
    if cfg.data.holdout_fraction > 0:  # its own stream: drawing from it never changes the training batches
        holdout = Sampler.from_config(store, cfg.data, topo.per_device_batch, frame_stack=cfg.env.frame_stack,
                                      seed=cfg.seed + 1, rank=topo.rank, world_size=topo.world_size, split="holdout")
    draw, online = sampler.sample, None
    if cfg.online.enabled:  # the mix draws exactly the configured offline share of every batch
        online = _OnlinePart(cfg, sampler, topo)
        draw = online.mix.sample
    run_dir = _prepare_run_dir(cfg, resume, accelerator)
    model, target, optimizer = build_training_state(cfg, device)

    step, last_ckpt, loaded = 0, None, None
    found, notes = find_resumable_checkpoint(run_dir) if resume else (None, [])
    for note in notes if main else []:
        tqdm.write(note)
    dataset = dataset_fingerprint(store.metadata)
    if found is not None:
        loaded = load_checkpoint(found, cfg, model, target, rank=topo.rank)
        check_same_dataset(found, loaded.meta, dataset)
        step, last_ckpt = loaded.step, found
    model, optimizer = prepare(accelerator, model, optimizer)
    net = unwrap(model)
    if loaded is not None:
        load_optimizer(found, loaded, optimizer, topo.rank, topo.world_size)
        # The index stream is global (every rank holds the same state), so a run saved by N
        # processes resumes on M with the same global batches.
        sampler.load_state_dict(loaded.meta["ranks"][0]["sampler"])
        if holdout is not None:
            holdout.load_state_dict(loaded.meta["ranks"][0]["holdout_sampler"])
        if online is not None:
            online.load(found, loaded, topo)
        if main:
            tqdm.write(f"resumed {run_dir} from {found} at step {step}"
                       + (f" (saved by {loaded.world_size} processes, resumed by {topo.world_size})"
                          if loaded.world_size != topo.world_size else ""))

    # purge_step drops events a killed run logged after its last checkpoint
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=step + 1 if step > 0 else None) if main else None
    if writer is not None and step == 0:
        writer.add_text("config", "```\n" + cfg.to_json() + "\n```")
        writer.add_scalar("model/parameters", count_parameters(net), 0)

    if online is not None:
        online.start_actor(cfg, net, device, topo)

    def checkpoint(at: int) -> Path:
        state = {"sampler": sampler.state_dict(), "dataset": dataset, **({"holdout_sampler": holdout.state_dict()} if holdout else {}),
                 **(online.state_dict() if online else {})}
        return save_checkpoint(run_dir, at, cfg, net, target, optimizer, state, accelerator,
                               write_rank_files=online.save_store if online else None)

    check_every = 1 if device.type == "cpu" else cfg.train.log_every  # loss checks sync the host
    bar = tqdm(total=cfg.train.steps, initial=step, desc=f"pretrain {cfg.name}", unit="upd",
               disable=not (progress and main), dynamic_ncols=True)
    sample_s = update_s = 0.0
    eval_results = None
    model.train()
    enter_loop()  # from here a signal finishes the update and checkpoints
    while step < cfg.train.steps:
        if online is not None:  # play, then learn: env steps, then one update
            online.act(step, cfg.train.steps)
        for _ in range(cfg.dist.grad_accum):  # one optimizer update per grad_accum micro-batches
            t0 = time.perf_counter()
            batch = augment_batch(draw().to_torch(device), cfg.train.augment, cfg.train.augment_pad, cfg.seed, step)
            t1 = time.perf_counter()
            with accelerator.accumulate(model):
                metrics = train_step(model, target, optimizer, batch, cfg.loss, cfg.train.grad_clip, accelerator)
            sample_s += t1 - t0
            update_s += time.perf_counter() - t1
        step += 1
        if step % cfg.train.target_update_period == 0:
            sync_target(net, target)
        if step % check_every == 0 or step % cfg.train.checkpoint_every == 0:
            loss = float(accelerator.reduce(metrics["loss/total"].detach().float(), "sum"))  # host sync, all ranks agree
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss became {loss} at step {step}; the last good checkpoint is "
                    f"{last_ckpt if last_ckpt is not None else 'none (no checkpoint was written yet)'}"
                )
        bar.update(1)

        if step % cfg.train.log_every == 0:
            if holdout is not None:
                metrics.update(holdout_metrics(model, target, holdout.sample().to_torch(device), cfg.loss))
            names = [k for k, v in metrics.items() if v.ndim == 0]
            values = accelerator.reduce(torch.stack([metrics[k].detach().float() for k in names]), "mean").tolist()
            per_game = accelerator.reduce(metrics["q/data_per_game"].detach().float(), "mean").tolist()  # host sync
            if writer is not None:
                for key, value in zip(names, values):
                    writer.add_scalar(key, value, step)
                for game, value in zip(cfg.games, per_game):
                    writer.add_scalar(f"q_data_per_game/{game}", value, step)
                writer.add_scalar("perf/sample_ms", 1000 * sample_s / cfg.train.log_every, step)
                writer.add_scalar("perf/update_ms", 1000 * update_s / cfg.train.log_every, step)
                writer.add_scalar("perf/updates_per_s", cfg.train.log_every / max(sample_s + update_s, 1e-9), step)
                if online is not None:
                    for key, value in online.metrics().items():
                        writer.add_scalar(key, value, step)
            scalars = dict(zip(names, values))
            bar.set_postfix(loss=f"{scalars['loss/total']:.3f}", q=f"{scalars.get('q/data', float('nan')):.2f}")
            sample_s = update_s = 0.0

        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
            last_ckpt = checkpoint(step)
        if cfg.eval.episodes > 0 and cfg.train.eval_every > 0 and step % cfg.train.eval_every == 0 and step < cfg.train.steps:
            if main:
                run_evaluation(cfg, net, device, run_dir / "eval" / f"step_{step:08d}", writer, step, progress, sampler)
            accelerator.wait_for_everyone()
        stopped_by = stop_requested(accelerator, sync=step % check_every == 0)
        if stopped_by is not None:
            if last_ckpt is None or last_ckpt.name != f"{step:08d}":
                last_ckpt = checkpoint(step)
            for closing in (bar, online, writer):
                if closing is not None:
                    closing.close()
            raise TrainingInterrupted(stopped_by, step, last_ckpt)
    bar.close()
    if online is not None:
        online.close()

    if last_ckpt is None or last_ckpt.name != f"{step:08d}":
        last_ckpt = checkpoint(step)
    leave_loop()  # the final checkpoint is whole: a signal now stops at once
    if cfg.eval.episodes > 0 and main:
        eval_results = run_evaluation(cfg, net, device, run_dir / "eval" / "final", writer, step, progress, sampler,
                                      baselines=cfg.eval.baselines)
        (run_dir / "eval.json").write_text(json.dumps(eval_results, indent=1))
    if writer is not None:
        writer.close()
        _plot_curves(run_dir)
    return TrainResult(run_dir=run_dir, step=step, checkpoint=last_ckpt, eval_results=eval_results)


def _plot_curves(run_dir: Path) -> None:
    """``curves.png``: evaluation returns (what the policy gets) beside the Q-values the network
    believes (data and start states), so over-estimation and unlearning show at a glance."""
    from scaled_ql.eval.compare import compare_runs

    try:
        compare_runs([run_dir], run_dir / "curves.png",
                     ("eval_return/*", "eval_q_start/*", "eval_discounted_return/*", "q/data", "q/pi", "online/return",
                      "holdout/td"))
    except ValueError:  # nothing logged yet (a run shorter than one log period)
        pass


class _OnlinePart:
    """Online fine-tuning inside the one loop: an actor playing ALE with the online network, an
    online replay per process, and the offline/online mix the batches come from."""

    def __init__(self, cfg: ExperimentConfig, offline: Sampler, topo) -> None:
        from scaled_ql.data.online import OfflineOnlineMix, OnlineStore

        oc, data = cfg.online, cfg.data
        self.store = OnlineStore(cfg.games, oc.capacity_rows, (cfg.env.frame_size, cfg.env.frame_size),
                                 gamma=data.gamma, reward_clip=data.reward_clip)
        # Each process plays and samples its own replay (its own stream).
        online = Sampler(self.store, topo.per_device_batch, n_step=data.n_step, gamma=data.gamma,
                         reward_clip=data.reward_clip, frame_stack=cfg.env.frame_stack, seed=cfg.seed + 2 + topo.rank)
        self.mix = OfflineOnlineMix(offline, online, oc.offline_fraction)
        self.cfg, self.actor, self.rank = cfg, None, topo.rank
        self.returns: list[float] = []
        self.last = None
        self._actor_state: dict[str, Any] | None = None

    def start_actor(self, cfg: ExperimentConfig, net, device, topo) -> None:
        from scaled_ql.envs.actor import Actor, EpsilonSchedule

        oc = cfg.online
        self.actor = Actor(self.store, make_policy(net, device), cfg.env, games=cfg.games, num_envs=oc.num_envs,
                           epsilon=EpsilonSchedule(oc.epsilon_start, oc.epsilon_end, oc.epsilon_decay_steps),
                           seed=cfg.seed + 7919 * (topo.rank + 1), max_episode_steps=oc.max_episode_steps)
        if self._actor_state is not None:
            self.actor.load_state_dict(self._actor_state)

    def act(self, step: int, total_steps: int) -> None:
        if self.cfg.online.anneal_offline_to is not None:
            self.mix.anneal(step, total_steps, self.cfg.online.anneal_offline_to)
        self.last = self.actor.step(self.cfg.online.env_steps_per_update)
        self.returns += self.last.episode_returns

    def metrics(self) -> dict[str, float]:
        out = {"online/offline_fraction": self.mix.offline_fraction, "online/replay_rows": float(len(self.store))}
        if self.last is not None:
            out |= {k.replace("actor/", "online/"): v for k, v in self.last.metrics().items() if "mean" not in k}
        if self.actor is not None:  # running totals over the run (the report's counts are this update's only)
            out |= {"online/env_steps": float(self.actor.env_steps), "online/episodes": float(self.actor.episodes_finished)}
        if self.returns:  # episodes that ended since the last log
            out["online/return"] = float(np.mean(self.returns))
            self.returns = []
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"mix": self.mix.state_dict(), "actor": self.actor.state_dict() if self.actor else None}

    def save_store(self, state_dir: Path) -> None:
        self.store.save(state_dir / f"online_rank{self.rank}")

    def load(self, found: Path, loaded, topo) -> None:
        if loaded.world_size != topo.world_size:
            raise ConfigError(f"checkpoint '{found}' holds the online replays of {loaded.world_size} processes; "
                              f"this run has {topo.world_size}: resume online fine-tuning on as many processes")
        self.store.load(found / "state" / f"online_rank{topo.rank}")
        mine = loaded.meta["ranks"][topo.rank]
        self.mix.load_state_dict(mine["mix"])
        self._actor_state = mine["actor"]

    def close(self) -> None:
        if self.actor is not None:
            self.actor.close()


@torch.no_grad()
def start_state_values(model: MultiGameQNetwork, sampler: Sampler, device: torch.device, per_game: int = 64) -> dict[str, float]:
    """Mean max_a Q(s0, a) (V(s0) for a network with a state-value head, as IQL's) over (up to)
    ``per_game`` first states of the data's episodes of each game: how well the network thinks it
    does from the start, to set beside the returns it gets."""
    store, out = sampler.store, {}
    firsts = np.flatnonzero((store.step == 0) & ~store.is_last_row)
    was_training = model.training
    model.eval()
    for g, game in enumerate(model.games):
        rows = firsts[store.game_id[firsts] == g][:per_game]
        if rows.size:
            batch = sampler.batch_at(rows).to_torch(device)
            pred = model(batch.obs, batch.game)
            out[game] = float((pred.v if pred.v is not None else pred.q.max(-1).values).mean())
    model.train(was_training)
    return out


def run_evaluation(
    cfg: ExperimentConfig,
    model: MultiGameQNetwork,
    device: torch.device,
    out_dir: Path,
    writer: SummaryWriter | None,
    step: int,
    progress: bool,
    sampler: Sampler | None = None,
    baselines: bool = False,
) -> dict[str, Any]:
    from scaled_ql.eval.evaluate import add_baselines, evaluate, format_learning_table, format_score_table

    results = evaluate(make_policy(model, device), cfg.games, cfg.env, cfg.eval, seed=cfg.seed + 1_000_003, out_dir=out_dir,
                       progress=progress, discount=(cfg.data.gamma, cfg.data.reward_clip))
    if sampler is not None and cfg.loss.algorithm != "bc":  # what it believes, beside what it gets (BC has no values)
        for game, value in start_state_values(model, sampler, device).items():
            results["games"][game]["q_start"] = value
            if writer is not None:
                writer.add_scalar(f"eval_q_start/{game}", value, step)
        (out_dir / "eval.json").write_text(json.dumps(results, indent=1))
    if writer is not None:
        for game, res in results["games"].items():
            writer.add_scalar(f"eval_return/{game}", res["mean"], step)
            if "discounted_mean" in res:  # same units as eval_q_start: discounted clipped return
                writer.add_scalar(f"eval_discounted_return/{game}", res["discounted_mean"], step)
            if res.get("human_normalized") is not None:
                writer.add_scalar(f"eval_hns/{game}", res["human_normalized"], step)
        agg = results.get("aggregate", {})
        if isinstance(agg.get("iqm"), dict) and agg["iqm"].get("value") is not None:
            writer.add_scalar("eval_hns/iqm", agg["iqm"]["value"], step)
    tqdm.write(format_score_table(results))
    if baselines:  # the random policy under the same protocol and the data's own return, beside the learned policy
        data = {}
        if sampler is not None:  # the data's whole episodes (not those its collection budget cut short)
            caps = [int(m.collection.get("max_episode_steps") or 0) for m in sampler.store.metadata]
            cap = caps[0] if len(set(caps)) == 1 else 0
            data = {g: float(r.mean()) for g, r in sampler.store.episode_returns(cap).items() if r.size}
        add_baselines(results, cfg.games, cfg.env, cfg.eval, cfg.seed + 2_000_003, data)
        (out_dir / "eval.json").write_text(json.dumps(results, indent=1))
        tqdm.write("\nwhat it learned (returns per episode; Q(s0) and what it gets are discounted sums of clipped rewards):\n"
                   + format_learning_table(results))
    return results

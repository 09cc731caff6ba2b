"""``scaled-ql bench learning``: does the learned policy beat the data it learned from?

A suite (:data:`SUITES`) fixes everything in advance: the games, behaviour policies of known,
mediocre quality (the RAM-reading controllers of ``data_prep.scripted`` mixed with random
actions), the methods over the same data and budget (behaviour cloning, DQN-style offline
Q-learning without a regularizer, CQL, CQL + DR3, IQL), the seeds, multi-game against
single-game runs, and fine-tuning a network pretrained on the other games against training from
scratch on a small dataset of a held-out game. Probes (:class:`Probe`) then change one setting at
a time to test what limits those results, on a seed the tables do not use and then on theirs.

The suite is a list of jobs with ids such as ``data/main``, ``multi/cql_dr3/seed1`` or
``finetune/scratch/seed2`` or ``probe/Breakout-bc-5x/seed0``. Each finished job leaves one small JSON file in the results folder
(its evaluation, its learning curves, wall time, the commit); a job whose file exists is not run
again, so the suite is resumable and runs in pieces (``--only 'multi/*'``). Training runs and
datasets live in the work folder; a run interrupted midway resumes from its last checkpoint.
``docs/RESULTS.md`` and its plots are written from the results folder alone (``--report-only``
rewrites them without running anything).
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.learning_peer import train_d3rlpy_cql
from data_prep.rollout import collect_dataset
from data_prep.scripted import evaluate_scripted
from scaled_ql.config import ExperimentConfig, config_from_dict, load_config
from scaled_ql.data.schema import METADATA_FILE, read_metadata
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore
from scaled_ql.eval.compare import read_scalars
from scaled_ql.losses.algorithms import ALGORITHMS, Algorithm
from scaled_ql.models.loading import latest_checkpoint, load_model
from scaled_ql.train.finetune import finetune_config
from scaled_ql.train.trainer import pretrain

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    overrides: tuple[str, ...]

    @property
    def algorithm(self) -> type[Algorithm]:
        """The algorithm its overrides choose (``loss.algorithm``, q_learning when they do not say)."""
        return ALGORITHMS[algorithm_of(self.overrides)]

    @property
    def values(self) -> bool:
        """Whether it learns values (Q or V) to set beside its returns ("what it thinks it gets")."""
        return self.algorithm.learns_values


def algorithm_of(overrides: tuple[str, ...]) -> str:
    """The ``loss.algorithm`` that ``key=value`` overrides choose (the last one wins; q_learning)."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("loss.algorithm=")]
    return chosen[-1] if chosen else "q_learning"


def with_heads(overrides: tuple[str, ...]) -> tuple[str, ...]:
    """``overrides`` and the ``model.*`` settings their algorithm needs (its heads), so a method is
    named by its loss settings alone."""
    return (*overrides, *ALGORITHMS[algorithm_of(overrides)].model_overrides())


@dataclass(frozen=True)
class Probe:
    """A run beyond the suite's fixed settings, to test what limits the results: one game alone
    (the single-game runs' per-game batch) with ``overrides`` on top. ``seeds[0]`` is the seed the
    setting was tried on, one the tables do not use; the further seeds (the tables' own) check it
    on seeds it was not chosen on. Reported in its own section, never mixed into the tables."""

    name: str
    label: str
    game: str
    method: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    group: str = ""
    """Probes of one group (the levers tried against one common base run) are reported together in
    one table of their own, the first of the group being the base."""


@dataclass(frozen=True)
class Transfer:
    """Scaled QL's fine-tuning protocol at CPU scale: a network pretrained on ``pretrain_games``
    (from the suite's main dataset) fine-tuned to each target, a held-out variant of a training
    game and a held-out game, from a small dataset of it, offline and online (each mode's
    overrides), against the same network trained from scratch on the same data and budget."""

    pretrain_games: tuple[str, ...]
    pretrain: tuple[str, ...]
    """Overrides of the pretraining run (its budget: long enough to read the screen)."""
    targets: tuple[tuple[str, str], ...]
    """(label, game or variant) pairs, e.g. ("held-out variant", "Breakout-m0d1")."""
    target_data: tuple[str, ...]
    """``prep.*`` overrides of each target's small dataset (its scripted behaviour, size, seed)."""
    modes: tuple[tuple[str, str, tuple[str, ...]], ...]
    """(slug, label, overrides): how the fine-tuning runs, e.g. offline, online Cal-QL, online CQL."""
    finetune: tuple[str, ...]
    """Overrides of every fine-tuning and scratch run (budget, evaluation schedule)."""
    method: str = "cql_dr3"
    seeds: tuple[int, ...] = (1, 2, 3)


def slug(game: str) -> str:
    return game.replace("-", "_")


@dataclass(frozen=True)
class Suite:
    """Everything a benchmark run fixes in advance. Overrides are ``key=value`` config strings
    applied on top of ``base`` (a YAML file in ``configs/``)."""

    name: str
    base: str
    games: tuple[str, ...]
    common: tuple[str, ...]
    """Overrides of every run and dataset (model, training budget, evaluation, preprocessing)."""
    data: tuple[str, ...]
    """Overrides of the main dataset (``prep.*``)."""
    methods: tuple[Method, ...]
    seeds: tuple[int, ...]
    single_game: str
    single_methods: tuple[str, ...]
    finetune_game: str
    finetune_data: tuple[str, ...]
    pretrain_method: str
    finetune: tuple[str, ...]
    """Overrides of the fine-tuning and from-scratch runs (budget, batch)."""
    behaviour_episodes: int = 10
    notes: str = ""
    probes: tuple[Probe, ...] = ()
    """Run after every seed of the tables; each probe's first seed is the one it was tried on."""
    mixed_data: tuple[str, ...] = ()
    """Overrides of the mixed-quality dataset (``prep.policy=mixed``: a share of the environments
    play the scripted controller, the rest a poor one), on the suite's games; empty: no mixed
    regime."""
    mixed_methods: tuple[str, ...] = ()
    """The methods trained on the mixed-quality dataset (multi-game, the tables' seeds)."""
    mixed_common: tuple[str, ...] = ()
    """Overrides of the mixed-regime runs on top of ``common`` (their budget)."""
    transfer: Transfer | None = None
    """The pretraining-helps-a-new-game experiment; None: not part of the suite."""
    peer: tuple[str, ...] = ()
    """Overrides of the reference-implementation comparison (d3rlpy's DiscreteCQL against ours on
    ``single_game``, same data, network, batch, optimizer and updates); empty: no peer rows."""
    peer_seeds: tuple[int, ...] = ()


_METHODS = (
    Method("bc", "BC", ("loss.algorithm=bc",)),
    Method("dqn", "DQN (no regularizer)", ("loss.cql_alpha=0", "loss.dr3_coef=0")),
    Method("cql", "CQL", ("loss.cql_alpha=1.0", "loss.dr3_coef=0")),
    Method("cql_dr3", "CQL + DR3", ("loss.cql_alpha=1.0", "loss.dr3_coef=0.03")),
    Method("iql", "IQL", ("loss.algorithm=iql", "loss.dr3_coef=0", "loss.iql_expectile=0.7", "loss.iql_beta=3.0")),
)

METHODS_BY_NAME = {m.name: m for m in _METHODS}
"""Every method the suites may name, by name (a suite's own ``methods`` may be fewer)."""

PEER_METHOD = METHODS_BY_NAME["cql"]
"""The method of the reference-implementation comparison: CQL (d3rlpy has no DR3)."""

# The levers for learning faster per CPU hour: each changes one setting of CQL + DR3 on Breakout
# alone at 20,000 updates (evaluated every 4,000), against the same budget and schedule with
# nothing changed. Why each was tried and what it did: docs/results/cpu-small/NOTES.md.
_LEVER_BUDGET = ("train.steps=20000", "train.eval_every=4000", "train.checkpoint_every=4000")
LEVER_PROBES = tuple(
    Probe(f"Breakout-cql_dr3-20k{suffix}", f"CQL + DR3, Breakout alone, 20k updates{label}", "Breakout", "cql_dr3",
          (*_LEVER_BUDGET, *overrides), seeds, group="levers")
    for suffix, label, overrides, seeds in (
        ("", "", (), (0,)),
        ("-shift", ", random-shift augmentation", ("train.augment=shift",), (0,)),
        ("-lr3e-4", ", learning rate 3e-4", ("train.lr=3e-4",), (0, 1, 2, 3)),  # chosen on seed 0, checked on 1-3
        ("-target250", ", target update every 250", ("train.target_update_period=250",), (0,)),
        ("-nstep10", ", 10-step returns", ("data.n_step=10",), (0,)),
        # Batch 64 at the base's wall time (the measured cost per update: NOTES.md).
        ("-batch64", ", batch 64 at equal wall time", ("train.batch_size=64", "train.steps=7200", "train.eval_every=1440",
                                                       "train.checkpoint_every=1440"), (0,)),
        ("-adameps1e-8", ", Adam epsilon 1e-8", ("train.adam_eps=1e-8",), (0,)),
        ("-lr3e-4-adameps1e-8", ", learning rate 3e-4 and Adam epsilon 1e-8", ("train.lr=3e-4", "train.adam_eps=1e-8"), (0,)),
    )
)

SUITES: dict[str, Suite] = {
    "cpu-small": Suite(
        name="cpu-small",
        base="learning_base.yaml",
        games=("Pong", "Breakout", "Freeway"),
        common=("train.batch_size=48", "train.steps=8000", "train.lr=1e-4", "train.target_update_period=1000",
                "train.eval_every=2000", "train.checkpoint_every=2000", "train.log_every=100", "train.threads=2",
                "eval.episodes=10", "eval.num_envs=10", "eval.max_episode_steps=2000",
                "data.n_step=3", "data.gamma=0.99", "model.backbone=nature", "model.value=scalar"),
        data=("prep.policy=scripted", "prep.epsilon=0.5", "prep.steps_per_game=50000", "prep.num_envs=8",
              "prep.max_episode_steps=2000"),
        methods=_METHODS,
        seeds=(1, 2, 3),
        single_game="Breakout",
        single_methods=("cql_dr3", "bc"),
        finetune_game="Pong",
        finetune_data=("prep.policy=scripted", "prep.epsilon=0.5", "prep.steps_per_game=10000", "prep.num_envs=8",
                       "prep.max_episode_steps=2000", "seed=100"),
        pretrain_method="cql_dr3",
        finetune=("train.batch_size=16", "train.steps=3000", "train.eval_every=1000", "train.checkpoint_every=1000"),
        notes="Settings fixed before the first run (no tuning): the tiny demo's network and optimizer, CQL's "
              "alpha = 1.0, DR3 0.03 (Dopamine's offline DR3 agent), IQL's expectile 0.7 and beta 3 (the IQL "
              "paper's locomotion values).",
        # The mixed-quality regime: a quarter of the environments (2 of 8) scripted and three quarters
        # poor, both with 10% random actions; BC against CQL + DR3 at the levers' budget and learning rate.
        mixed_data=("prep.policy=mixed", "prep.epsilon=0.1", "prep.good_fraction=0.25", "prep.steps_per_game=50000",
                    "prep.num_envs=8", "prep.max_episode_steps=2000"),
        mixed_methods=("bc", "cql_dr3"),
        mixed_common=("train.lr=3e-4", *_LEVER_BUDGET),
        # The transfer experiment (Scaled QL's protocol at CPU scale): pretrain on Breakout + Freeway, then
        # fine-tune to a held-out variant (the small paddle) and a held-out game, offline, online with
        # Cal-QL and online with plain CQL, against scratch.
        transfer=Transfer(
            pretrain_games=("Breakout", "Freeway"),
            pretrain=("train.steps=40000", "train.eval_every=8000", "train.checkpoint_every=8000"),
            targets=(("held-out variant", "Breakout-m0d1"), ("held-out game", "Pong")),
            target_data=("prep.policy=scripted", "prep.epsilon=0.5", "prep.steps_per_game=10000", "prep.num_envs=8",
                         "prep.max_episode_steps=2000", "seed=100"),
            modes=(("offline", "offline", ()),
                   ("online-calql", "online, Cal-QL", ("online.enabled=true", "loss.calibrated=true")),
                   ("online-cql", "online, CQL", ("online.enabled=true",))),
            finetune=("train.steps=5000", "train.eval_every=1000", "train.checkpoint_every=1000"),
        ),
        peer=("data.n_step=1", *_LEVER_BUDGET),
        peer_seeds=(1, 2, 3),
        probes=tuple(Probe(f"Breakout-{m}-5x", f"{label}, Breakout alone, 5x the updates", "Breakout", m,
                           ("train.steps=40000", "train.eval_every=8000", "train.checkpoint_every=8000"), (0, 1, 2, 3))
                     for m, label in (("bc", "BC"), ("cql_dr3", "CQL + DR3"))) + LEVER_PROBES,
    ),
    "smoke": Suite(  # the test suite's: every job kind on a budget of seconds
        name="smoke",
        base="learning_base.yaml",
        games=("Breakout", "Freeway"),
        common=("train.batch_size=4", "train.steps=4", "train.eval_every=2", "train.checkpoint_every=2",
                "train.log_every=1", "train.target_update_period=2", "train.threads=1", "eval.episodes=2",
                "eval.num_envs=2", "eval.max_episode_steps=20", "eval.bootstrap_samples=50", "model.feature_dim=16"),
        data=("prep.policy=scripted", "prep.epsilon=0.5", "prep.steps_per_game=120", "prep.num_envs=2",
              "prep.max_episode_steps=40"),
        methods=(_METHODS[0], _METHODS[3]),
        seeds=(1, 2),
        single_game="Breakout",
        single_methods=("cql_dr3",),
        finetune_game="Freeway",
        finetune_data=("prep.policy=scripted", "prep.epsilon=0.5", "prep.steps_per_game=60", "prep.num_envs=2",
                       "prep.max_episode_steps=40", "seed=100"),
        pretrain_method="cql_dr3",
        finetune=("train.batch_size=2", "train.steps=4"),
        behaviour_episodes=2,
        probes=(Probe("Breakout-cql_dr3-2x", "CQL + DR3, Breakout alone, 2x the updates", "Breakout", "cql_dr3", ("train.steps=8",), (0, 1)),),
        peer=("data.n_step=1",),
        peer_seeds=(1,),
        mixed_data=("prep.policy=mixed", "prep.epsilon=0.1", "prep.good_fraction=0.5", "prep.steps_per_game=120",
                    "prep.num_envs=2", "prep.max_episode_steps=40"),
        mixed_methods=("bc", "cql_dr3"),
        transfer=Transfer(
            pretrain_games=("Breakout",), pretrain=("train.steps=4",),
            targets=(("held-out variant", "Breakout-m0d1"), ("held-out game", "Freeway")),
            target_data=("prep.policy=scripted", "prep.epsilon=0.5", "prep.steps_per_game=60", "prep.num_envs=2",
                         "prep.max_episode_steps=40", "seed=100"),
            modes=(("offline", "offline", ()), ("online-calql", "online, Cal-QL", ("online.enabled=true", "loss.calibrated=true"))),
            finetune=("train.steps=4", "train.eval_every=2"), seeds=(1, 2)),
    ),
}


@dataclass
class Job:
    id: str
    kind: str
    run: Callable[[], dict[str, Any]]
    needs: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)


class LearningBenchmark:
    """The jobs of one suite, their results folder and the report."""

    def __init__(self, suite: str | Suite, work: str | Path, results: str | Path, seeds: tuple[int, ...] | None = None,
                 progress: bool = False) -> None:
        if isinstance(suite, str):
            if suite not in SUITES:
                raise ValueError(f"bench learning --suite: unknown suite '{suite}'; valid: {', '.join(SUITES)}")
            suite = SUITES[suite]
        self.suite = suite
        self.seeds = tuple(seeds) if seeds else suite.seeds
        self.work, self.results = Path(work), Path(results)
        self.progress = progress
        self.commit = git_commit()  # the code this process runs (HEAD may move while it works)
        self.methods = {m.name: m for m in suite.methods}
        self.jobs = self._jobs()

    # ------------------------------------------------------------------------------ jobs

    def config(self, *overrides: str) -> ExperimentConfig:
        games = f"games=[{', '.join(self.suite.games)}]"
        return load_config(CONFIGS / self.suite.base, list(with_heads((games, *self.suite.common, f"runs_dir={self.work / 'runs'}",
                                                                        *overrides))))

    def _jobs(self) -> list[Job]:
        s = self.suite
        games = list(s.games)
        others = [g for g in games if g != s.finetune_game]
        main, small = self.work / "data" / "main", self.work / "data" / f"finetune-{s.finetune_game}"
        jobs = [
            Job("data/main", "data", lambda: self._data(games, main, s.data)),
            Job(f"data/finetune-{s.finetune_game}", "data", lambda: self._data([s.finetune_game], small, s.finetune_data)),
        ]
        pre = self.methods[s.pretrain_method]
        pretrain_id = f"pretrain/{'-'.join(others)}"
        jobs.append(Job(pretrain_id, "pretrain", self._train_fn(
            f"pretrain-{'-'.join(others)}", others, main, pre, self.seeds[0],
            ("data.ignore_extra_games=true", f"train.batch_size={self._per_game_batch() * len(others)}")),
            ("data/main",), {"method": pre.name, "seed": self.seeds[0], "games": others}))
        # Seed by seed, so a partial run already compares every method.
        for seed in self.seeds:
            for method in s.methods:
                jobs.append(Job(f"multi/{method.name}/seed{seed}", "multi", self._train_fn(
                    f"multi-{method.name}-seed{seed}", games, main, method, seed), ("data/main",),
                    {"method": method.name, "seed": seed, "games": games}))
            for name in s.single_methods:
                jobs.append(Job(f"single/{s.single_game}/{name}/seed{seed}", "single", self._train_fn(
                    f"single-{s.single_game}-{name}-seed{seed}", [s.single_game], main, self.methods[name], seed,
                    ("data.ignore_extra_games=true", f"train.batch_size={self._per_game_batch()}")),
                    ("data/main",), {"method": name, "seed": seed, "games": [s.single_game]}))
            for start in ("pretrained", "scratch"):
                jobs.append(Job(f"finetune/{start}/seed{seed}", "finetune", self._finetune_fn(start, seed, small, others),
                                (f"data/finetune-{s.finetune_game}",) + ((pretrain_id,) if start == "pretrained" else ()),
                                {"method": pre.name, "seed": seed, "start": start, "games": [s.finetune_game]}))
        if s.mixed_data:
            mixed = self.work / "data" / "mixed"
            jobs.append(Job("data/mixed", "data", lambda: self._data(games, mixed, s.mixed_data)))
            for seed in self.seeds:
                for name in s.mixed_methods:
                    method = self.methods[name]
                    jobs.append(Job(f"mixed/{name}/seed{seed}", "mixed", self._train_fn(
                        f"mixed-{name}-seed{seed}", games, mixed, method, seed, s.mixed_common), ("data/mixed",),
                        {"method": name, "seed": seed, "games": games}))
        if s.transfer is not None:
            jobs += self._transfer_jobs(s.transfer, main)
        if s.peer:
            for seed in s.peer_seeds:
                for impl in ("d3rlpy", "ours"):
                    jobs.append(Job(f"peer/{impl}/seed{seed}", "peer", self._peer_fn(impl, seed, main), ("data/main",),
                                    {"method": "cql", "seed": seed, "games": [s.single_game], "implementation": impl}))
        # Seed by seed as above: the i-th seed of every probe before any probe's (i+1)-th (a stable sort).
        for _, p, seed in sorted(((i, p, seed) for p in s.probes for i, seed in enumerate(p.seeds)), key=lambda t: t[0]):
            jobs.append(Job(f"probe/{p.name}/seed{seed}", "probe", self._train_fn(
                f"probe-{p.name}-seed{seed}", [p.game], main, self.methods[p.method], seed,
                ("data.ignore_extra_games=true", f"train.batch_size={self._per_game_batch()}", *p.overrides)),
                ("data/main",), {"method": p.method, "seed": seed, "games": [p.game], "probe": p.name, "label": p.label}))
        return jobs

    def _per_game_batch(self) -> int:
        return self.config().train.batch_size // len(self.suite.games)

    def _data(self, games: list[str], out: Path, overrides: tuple[str, ...]) -> dict[str, Any]:
        cfg = self.config(f"games=[{', '.join(games)}]", *overrides)
        if not (out / METADATA_FILE).is_file():
            collect_dataset(cfg, out, progress=self.progress, overwrite=out.exists())
        meta = read_metadata(out)

        def play(game: str, kind: str = "scripted") -> dict[str, Any]:
            return evaluate_scripted(game, cfg.prep.epsilon, cfg.env, cfg.eval, episodes=self.suite.behaviour_episodes,
                                     seed=cfg.seed + 7, discount=(cfg.data.gamma, cfg.data.reward_clip), kind=kind)

        record: dict[str, Any] = {"path": str(out), "games": meta.games, "collection": meta.collection}
        if cfg.prep.policy == "mixed":  # each part of the behaviour measured alone, under the evaluation protocol
            record["behaviour_parts"] = {g: {kind: play(g, kind) for kind in ("scripted", "poor")} for g in games}
        else:
            record["behaviour"] = {g: play(g) for g in games}
        return record

    def _train_fn(self, name: str, games: list[str], data: Path, method: Method, seed: int,
                  extra: tuple[str, ...] = ()) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            cfg = self.config(f"games=[{', '.join(games)}]", f"data.path={data}", f"name={name}", f"seed={seed}",
                              *method.overrides, *extra)
            return self._train(cfg)

        return run

    def _transfer_jobs(self, t: Transfer, main: Path) -> list[Job]:
        method = METHODS_BY_NAME[t.method]
        pre_name = f"transfer-pretrain-{'-'.join(t.pretrain_games)}"
        jobs = [Job("transfer/pretrain", "pretrain", self._train_fn(
            pre_name, list(t.pretrain_games), main, method, t.seeds[0],
            ("data.ignore_extra_games=true", f"train.batch_size={self._per_game_batch() * len(t.pretrain_games)}", *t.pretrain)),
            ("data/main",), {"method": method.name, "seed": t.seeds[0], "games": list(t.pretrain_games), "transfer": True})]
        for label, game in t.targets:
            data = self.work / "data" / f"transfer-{slug(game)}"
            jobs.append(Job(f"data/transfer-{slug(game)}", "data",
                            lambda game=game, data=data: self._data([game], data, t.target_data)))
        for seed in t.seeds:
            for label, game in t.targets:
                data = self.work / "data" / f"transfer-{slug(game)}"
                for mode, _, overrides in t.modes:
                    for start in ("pretrained", "scratch"):
                        name = f"transfer-{slug(game)}-{mode}-{start}-seed{seed}"
                        common = (f"name={name}", f"seed={seed}", f"runs_dir={self.work / 'runs'}", *method.overrides,
                                  f"train.batch_size={self._per_game_batch()}", *t.finetune, *overrides)

                        def run(game=game, data=data, start=start, common=common) -> dict[str, Any]:
                            if start == "pretrained":
                                cfg = finetune_config(self.work / "runs" / pre_name, [game], data, overrides=with_heads(common))
                            else:
                                cfg = self.config(f"games=[{game}]", f"data.path={data}", *common)
                            return self._train(cfg)

                        jobs.append(Job(f"transfer/{slug(game)}/{mode}/{start}/seed{seed}", "transfer", run,
                                        (f"data/transfer-{slug(game)}",) + (("transfer/pretrain",) if start == "pretrained" else ()),
                                        {"method": method.name, "seed": seed, "start": start, "games": [game],
                                         "target": label, "mode": mode}))
        return jobs

    def _peer_fn(self, impl: str, seed: int, data: Path) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            s = self.suite
            cfg = self.config(f"games=[{s.single_game}]", f"data.path={data}", f"name=peer-{impl}-seed{seed}", f"seed={seed}",
                              "data.ignore_extra_games=true", f"train.batch_size={self._per_game_batch()}",
                              *PEER_METHOD.overrides, *s.peer)
            if impl == "ours":
                return self._train(cfg)
            return train_d3rlpy_cql(cfg, cfg.run_dir)

        return run

    def _finetune_fn(self, start: str, seed: int, data: Path, others: list[str]) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            s = self.suite
            method = self.methods[s.pretrain_method]
            common = (f"seed={seed}", *method.overrides, *s.finetune)
            if start == "pretrained":
                # The pretrained run's own config is the base (its model, optimizer, evaluation).
                init = self.work / "runs" / f"pretrain-{'-'.join(others)}"
                cfg = finetune_config(init, [s.finetune_game], data, overrides=with_heads((
                    f"name=finetune-pretrained-seed{seed}", f"runs_dir={self.work / 'runs'}", *common)))
            else:
                cfg = self.config(f"games=[{s.finetune_game}]", f"data.path={data}", f"name=finetune-scratch-seed{seed}", *common)
            return self._train(cfg)

        return run

    def _train(self, cfg: ExperimentConfig) -> dict[str, Any]:
        resume = latest_checkpoint(cfg.run_dir) is not None
        if not resume and cfg.run_dir.exists():  # killed before its first checkpoint: start clean (no stale events)
            shutil.rmtree(cfg.run_dir)
        result = pretrain(cfg, resume=resume, progress=self.progress)
        if result.eval_results is None:  # resumed after the last step: the final evaluation is on disk
            result.eval_results = json.loads((result.run_dir / "eval" / "final" / "eval.json").read_text())
        scalars = read_scalars(result.run_dir)
        keep = ("eval_return/", "eval_q_start/", "eval_discounted_return/", "q/data", "q/pi", "loss/td")
        curves = {tag: _thin(points) for tag, points in scalars.items() if tag.startswith(keep)}
        final = {g: {k: r.get(k) for k in ("mean", "std", "episodes", "returns", "human_normalized", "q_start",
                                           "discounted_mean", "truncated_episodes")}
                 for g, r in result.eval_results["games"].items()}
        speed = [v for _, v in scalars.get("perf/updates_per_s", [])]  # training only, between evaluations
        return {"run_dir": str(result.run_dir), "updates": result.step, "final": final, "curves": curves,
                "updates_per_s": round(float(np.median(speed)), 2) if speed else None,
                "policy": greedy_action_summary(result.checkpoint, cfg), "config": json.loads(cfg.to_json())}

    # ------------------------------------------------------------------------------ running

    def select(self, only: tuple[str, ...] = ()) -> list[Job]:
        """The jobs matching any of ``only`` (shell patterns on job ids; all when empty) and
        the jobs they need, in suite order."""
        by_id = {j.id: j for j in self.jobs}
        chosen = {j.id for j in self.jobs if not only or any(fnmatch.fnmatchcase(j.id, p) for p in only)}
        if only and not chosen:
            raise ValueError(f"bench learning --only {' '.join(only)}: matches no job; jobs: {', '.join(by_id)}")
        stack = list(chosen)
        while stack:
            for need in by_id[stack.pop()].needs:
                if need not in chosen:
                    chosen.add(need)
                    stack.append(need)
        return [j for j in self.jobs if j.id in chosen]

    def result_path(self, job_id: str) -> Path:
        return self.results / (job_id.replace("/", "__") + ".json")

    def run(self, only: tuple[str, ...] = (), log: Callable[[str], None] = print) -> list[str]:
        """Run the selected jobs that have no result yet; returns the ids that ran."""
        self.results.mkdir(parents=True, exist_ok=True)
        ran = []
        selected = self.select(only)
        pending = {need for j in selected if not self.result_path(j.id).is_file() for need in j.needs}
        for job in selected:
            path = self.result_path(job.id)
            if path.is_file():
                if job.kind == "data" and job.id in pending:
                    self._remake_data(job, path, log)
                self._complete(path, log)
                continue
            log(f"[bench learning] {job.id} ...")
            start = time.time()
            out = job.run()
            wall = time.time() - start
            record = {"id": job.id, "kind": job.kind, **job.info, **out, "wall_s": round(wall, 1),
                      "commit": self.commit, "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                      "machine": machine()}
            _write_json(path, record)
            log(f"[bench learning] {job.id} done in {wall:.0f} s")
            ran.append(job.id)
        return ran

    def _remake_data(self, job: Job, path: Path, log: Callable[[str], None]) -> None:
        """A dataset whose job has a result but whose folder is gone (a fresh clone holds the
        results, not the data) is made again, from the same settings and seed, for the jobs that
        still need it; its result file is kept."""
        folder = Path(json.loads(path.read_text())["path"])
        if (folder / METADATA_FILE).is_file():
            return
        log(f"[bench learning] {job.id}: dataset {folder} is missing and pending jobs need it; making it again "
            f"(same settings and seed; the recorded result {path} is kept)")
        job.run()

    def _complete(self, path: Path, log: Callable[[str], None]) -> None:
        """Add what a finished training job's record lacks because it ran before the benchmark
        measured it: the greedy-policy summary, computed now from the run's final checkpoint
        (``policy_added`` says when and at which commit)."""
        record = json.loads(path.read_text())
        if "policy" in record or "run_dir" not in record:
            return
        ckpt = latest_checkpoint(Path(record["run_dir"]))
        if ckpt is None or not ckpt.name.endswith(f"{record['updates']:08d}"):
            log(f"[bench learning] {record['id']}: no policy summary and no final checkpoint in {record['run_dir']} to add it from")
            return
        record["policy"] = greedy_action_summary(ckpt, config_from_dict(record["config"]))
        record["policy_added"] = {"from": str(ckpt), "commit": self.commit,
                                  "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        _write_json(path, record)
        log(f"[bench learning] {record['id']}: added the policy summary from {ckpt}")

    def load_results(self) -> dict[str, dict[str, Any]]:
        out = {}
        for job in self.jobs:
            path = self.result_path(job.id)
            if path.is_file():
                out[job.id] = json.loads(path.read_text())
        return out


# ---------------------------------------------------------------------------------- helpers


def greedy_action_summary(checkpoint: str | Path, cfg: ExperimentConfig, states_per_game: int = 256) -> dict[str, Any]:
    """What the trained greedy policy does on the data's own states: per game, how often it picks
    each action (``counts``, index = the game's action), the share of its most frequent action
    (``top_share``: near 1 means it ignores the state) and how often it picks the data's action
    (``agreement``), on ``states_per_game`` states drawn from the training data (seed 0)."""
    model, _ = load_model(checkpoint)
    model.eval()
    store = ReplayStore(cfg.data.path, cfg.games, ignore_extra_games=cfg.data.ignore_extra_games)
    sampler = Sampler(store, states_per_game * len(cfg.games), n_step=cfg.data.n_step, gamma=cfg.data.gamma, seed=0)
    batch = sampler.sample().to_torch("cpu")
    with torch.no_grad():
        actions = model.greedy_actions(batch.obs, batch.game).numpy()
    out = {}
    for g, game in enumerate(cfg.games):
        mine = actions[batch.game.numpy() == g]
        counts = np.bincount(mine, minlength=model.action_counts[g])
        out[game] = {"counts": counts.tolist(), "top_share": float(counts.max() / counts.sum()),
                     "agreement": float((mine == batch.action.numpy()[batch.game.numpy() == g]).mean())}
    return out


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` whole or not at all (a killed job leaves no half file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def _thin(points: list[tuple[int, float]], keep: int = 60) -> list[list[float]]:
    """At most ``keep`` points, evenly spaced, always the last."""
    if len(points) > keep:
        idx = np.unique(np.linspace(0, len(points) - 1, keep).round().astype(int))
        points = [points[i] for i in idx]
    return [[int(s), float(v)] for s, v in points]


def git_commit() -> str:
    """The checked-out commit, with ``+dirty`` when tracked files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{platform.machine()}, {os.cpu_count()} CPUs{gpu}, torch {torch.__version__}"

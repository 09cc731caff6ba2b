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
``docs/RESULTS.md``, its plots and ``docs/RESULTS.json`` (every table's numbers, unformatted, for
programs and tests) are written from the results folder alone (``--report-only`` rewrites them
without running anything).
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
from benchmarks.learning_suites import METHODS_BY_NAME, PEER_METHOD, SUITES, Method, Suite, Transfer, slug, with_heads
from data_prep.rollout import collect_dataset
from data_prep.scripted import evaluate_scripted
from scaled_ql.config import ExperimentConfig, config_from_dict, load_config
from scaled_ql.data.schema import METADATA_FILE, read_metadata
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore
from scaled_ql.eval.compare import read_scalars
from scaled_ql.eval.run import evaluate_checkpoint
from scaled_ql.games import get_game
from scaled_ql.models.loading import latest_checkpoint, load_model
from scaled_ql.train.finetune import finetune_config
from scaled_ql.train.trainer import pretrain

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


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
            jobs += self._table_jobs(seed, main)
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
            for variant, _, name, extra, seeds in s.mixed_variants:
                for seed in seeds:
                    jobs.append(Job(f"mixed-{variant}/{name}/seed{seed}", "mixed", self._train_fn(
                        f"mixed-{variant}-{name}-seed{seed}", games, mixed, self.methods[name], seed, (*s.mixed_common, *extra)),
                        ("data/mixed",), {"method": name, "seed": seed, "games": games, "variant": variant}))
        for budget, _, extra in s.table_budgets:
            for seed in self.seeds:
                jobs += self._table_jobs(seed, main, budget, extra)
        if s.transfer is not None:
            jobs += self._transfer_jobs(s.transfer, main)
        if s.peer:
            for slug, _, extra in (("", "", ()), *s.peer_variants):
                for seed in s.peer_seeds:
                    for impl in ("d3rlpy", "ours"):
                        kind = f"peer-{slug}" if slug else "peer"
                        jobs.append(Job(f"{kind}/{impl}/seed{seed}", "peer", self._peer_fn(impl, seed, main, slug, extra), ("data/main",),
                                        {"method": "cql", "seed": seed, "games": [s.single_game], "implementation": impl,
                                         "variant": slug}))
        # Seed by seed as above: the i-th seed of every probe before any probe's (i+1)-th (a stable sort).
        for _, p, seed in sorted(((i, p, seed) for p in s.probes for i, seed in enumerate(p.seeds)), key=lambda t: t[0]):
            jobs.append(Job(f"probe/{p.name}/seed{seed}", "probe", self._train_fn(
                f"probe-{p.name}-seed{seed}", [p.game], main, self.methods[p.method], seed,
                ("data.ignore_extra_games=true", f"train.batch_size={self._per_game_batch()}", *p.overrides)),
                ("data/main",), {"method": p.method, "seed": seed, "games": [p.game], "probe": p.name, "label": p.label}))
        return jobs

    def _table_jobs(self, seed: int, main: Path, budget: str = "", extra: tuple[str, ...] = ()) -> list[Job]:
        """The main tables' runs of one seed (every method on every game, and the single-game runs), at
        the suite's budget or, named by ``budget``, with ``extra`` on top of it."""
        s, games = self.suite, list(self.suite.games)
        tag, info = (f"-{budget}", {"budget": budget}) if budget else ("", {})
        jobs = [Job(f"multi{tag}/{m.name}/seed{seed}", "multi", self._train_fn(f"multi{tag}-{m.name}-seed{seed}", games, main, m, seed, extra),
                    ("data/main",), {"method": m.name, "seed": seed, "games": games, **info}) for m in s.methods]
        jobs += [Job(f"single{tag}/{s.single_game}/{name}/seed{seed}", "single", self._train_fn(
                     f"single{tag}-{s.single_game}-{name}-seed{seed}", [s.single_game], main, self.methods[name], seed,
                     ("data.ignore_extra_games=true", f"train.batch_size={self._per_game_batch()}", *extra)),
                     ("data/main",), {"method": name, "seed": seed, "games": [s.single_game], **info}) for name in s.single_methods]
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
            base = get_game(game).base
            if base in t.pretrain_games:  # a variant of a pretraining game: the pretrained network plays it before fine-tuning
                jobs.append(Job(f"transfer/{slug(game)}/zero-shot", "zero-shot",
                                lambda game=game: self._zero_shot(self.work / "runs" / pre_name, game),
                                ("transfer/pretrain",), {"games": [game], "target": label, "head": base}))
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

    def _zero_shot(self, run_dir: Path, game: str) -> dict[str, Any]:
        """``game`` played by the pretrained network as it is (its game's head), under the runs' protocol."""
        out = self.work / "runs" / f"transfer-zero-shot-{slug(game)}"
        res = evaluate_checkpoint(run_dir, games=[game], out_dir=out, progress=self.progress)["games"][game]
        return {"final": {game: {k: res.get(k) for k in ("mean", "std", "episodes", "returns", "human_normalized",
                                                         "discounted_mean", "truncated_episodes", "head")}},
                "checkpoint": str(latest_checkpoint(run_dir))}

    def _peer_fn(self, impl: str, seed: int, data: Path, variant: str = "",
                 extra: tuple[str, ...] = ()) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            s = self.suite
            name = f"peer-{variant}-{impl}-seed{seed}" if variant else f"peer-{impl}-seed{seed}"
            cfg = self.config(f"games=[{s.single_game}]", f"data.path={data}", f"name={name}", f"seed={seed}",
                              "data.ignore_extra_games=true", f"train.batch_size={self._per_game_batch()}",
                              *PEER_METHOD.overrides, *s.peer, *extra)
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
    (``agreement``), on ``states_per_game`` states drawn from the training data (seed 0); beside them
    each action's mean Q (``q_mean``) and the median action gap, best minus second-best Q
    (``action_gap``): a greedy policy whose gap is within the values' error flips with small drifts."""
    model, _ = load_model(checkpoint)
    model.eval()
    store = ReplayStore(cfg.data.path, cfg.games, ignore_extra_games=cfg.data.ignore_extra_games)
    sampler = Sampler(store, states_per_game * len(cfg.games), n_step=cfg.data.n_step, gamma=cfg.data.gamma, seed=0)
    batch = sampler.sample().to_torch("cpu")
    with torch.no_grad():
        out_q = model(batch.obs, batch.game)
        actions = model.action_scores(out_q, model.model_cfg.act_with).argmax(-1).numpy()
    out = {}
    for g, game in enumerate(cfg.games):
        here = batch.game.numpy() == g
        mine, q = actions[here], out_q.q[here][:, : model.action_counts[g]].numpy()
        counts = np.bincount(mine, minlength=model.action_counts[g])
        top2 = np.sort(q, axis=1)[:, -2:]
        out[game] = {"counts": counts.tolist(), "top_share": float(counts.max() / counts.sum()),
                     "agreement": float((mine == batch.action.numpy()[here]).mean()),
                     "q_mean": q.mean(0).tolist(), "action_gap": float(np.median(top2[:, 1] - top2[:, 0]))}
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

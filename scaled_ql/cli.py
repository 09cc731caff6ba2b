"""``scaled-ql``: parse the command line and dispatch. No logic lives here.

    scaled-ql prep      --config configs/tiny.yaml [key=value ...]   make a dataset by playing ALE
    scaled-ql pretrain  --config configs/tiny.yaml [--resume] [key=value ...]
    scaled-ql evaluate  --checkpoint runs/tiny [--episodes N]
    scaled-ql bench     train|sampler --config configs/tiny.yaml
    scaled-ql info      --config configs/tiny.yaml
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

OVERRIDES_HELP = (
    "config overrides as key.sub=value (YAML values), e.g. train.steps=200 data.path=data/mine; "
    "an unknown key or wrong type stops with the key named"
)


OVERRIDE = re.compile(r"[A-Za-z_]\w*(\.\w+)*=")
"""A ``key.sub=value`` override; never taken as the value of an option with several values."""
MULTI_VALUE = ("runs", "checkpoints", "input", "hub_config", "game", "games", "only", "seeds", "tags")


def _int_or_override(text: str) -> int | str:
    if OVERRIDE.match(text):
        return text  # moved to the overrides by _split_overrides
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None


def _split_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options with several values (``--input a b``) take every word up to the next option, so
    ``key=value`` overrides written after them land in their list: move them to the overrides."""
    moved = []
    for name in MULTI_VALUE:
        values = getattr(args, name, None)
        if not isinstance(values, list):
            continue
        mine = [v for v in values if isinstance(v, str) and OVERRIDE.match(v)]
        if mine:
            kept = [v for v in values if v not in mine]
            if not kept:
                parser.error(f"--{name.replace('_', '-')}: expected at least one value before the key=value overrides {mine}")
            setattr(args, name, kept)
            moved += mine
    if moved:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(moved)} (this command takes no key=value overrides)")
        args.overrides = [*args.overrides, *moved]


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, default=None, help="experiment YAML file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaled-ql", description="Offline multi-game Q-learning on Atari (CQL + DR3).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prep", help="make a dataset: play ALE, or convert DQN-Replay / RL Unplugged files",
                       usage="scaled-ql prep [ale|dqn-replay|rlu|hub] --config FILE [options] [key=value ...]",
                       description="SOURCE (first word, default ale): `ale` rolls out the behaviour policy of the "
                       "config's `prep` section (uniform random, or epsilon-greedy from a checkpoint) in every game of "
                       "`games`; `dqn-replay` converts Dopamine replay logs under --root (<Game>/<run>/replay_logs/); "
                       "`rlu` converts RL Unplugged Atari TFRecord shards given by --input; `hub` converts a Hugging Face "
                       "Hub Atari dataset in the JAT format (--repo-id, --hub-config). Every source writes one "
                       "row per step (single 84x84 frame, action, reward, terminal, truncated, episode id, game) as "
                       "Arrow files with a dataset card.")
    _add_config(p)
    p.add_argument("--out", type=Path, default=None, help="dataset folder to write (default: the config's data.path)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--root", type=Path, default=None, help="dqn-replay: folder holding <Game>/<run>/replay_logs/")
    p.add_argument("--runs", type=_int_or_override, nargs="+", default=[1], help="dqn-replay: run numbers to convert (default: 1)")
    p.add_argument("--checkpoints", type=_int_or_override, nargs="+", default=None, help="dqn-replay: checkpoint numbers (default: all)")
    p.add_argument("--first-fraction", type=float, default=None,
                   help="dqn-replay: keep the first fraction of each run's checkpoints (Scaled QL's sub-optimal data: 0.2)")
    p.add_argument("--sample-fraction", type=float, default=None,
                   help="dqn-replay: keep this fraction of each checkpoint's transitions, as whole episodes (CQL: 0.01, 0.1)")
    p.add_argument("--input", nargs="+", default=None, help="rlu: TFRecord files, folders or globs")
    p.add_argument("--repo-id", default=None,
                   help="hub: a Hub dataset repo id (e.g. jat-project/jat-dataset) or a local copy of one")
    p.add_argument("--hub-config", nargs="+", default=None,
                   help="hub: dataset configs to convert (e.g. atari-pong); default: those of the config's games")
    p.add_argument("--max-episodes", type=int, default=None, help="hub: at most this many episodes per config")
    p.add_argument("--skip-bad", action="store_true", help="dqn-replay/rlu: skip unreadable inputs and list them at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("pretrain", help="train the multi-game Q-network offline (CQL + DR3)",
                       description="Train on the dataset at data.path; checkpoints, TensorBoard logs and the final "
                       "evaluation go to <runs_dir>/<name>.")
    _add_config(p)
    p.add_argument("--resume", action="store_true", help="continue the run from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("finetune", help="fine-tune a pretrained checkpoint to one or more games (offline)",
                       description="Start from a pretrained checkpoint (run/checkpoint/model folder or Hub repo id): its "
                       "backbone, and its head for every game it already knows; other games get a fresh head. Then train "
                       "with the same loop and losses on --data. Without --config the checkpoint's own training config "
                       "is the base, so the architecture matches; the rest comes from key=value overrides.")
    _add_config(p)
    p.add_argument("--init", required=True, help="pretrained checkpoint: a run, checkpoint or model folder, or a Hub repo id")
    p.add_argument("--game", nargs="+", required=True, help="the game(s) to fine-tune on, e.g. Alien")
    p.add_argument("--data", type=Path, required=True, help="dataset folder of those games (scaled-ql prep)")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the heads")
    p.add_argument("--backbone-lr-scale", type=float, default=None, help="backbone learning rate = train.lr x this")
    p.add_argument("--resume", action="store_true", help="continue the run from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("evaluate", help="play a checkpoint in ALE and report per-game and aggregate scores",
                       description="Run epsilon-greedy episodes (epsilon 0.001) of every game the checkpoint knows; write "
                       "eval.json (returns, mean, std, human-normalized score; mean/median/IQM with 95%% stratified-"
                       "bootstrap CIs) and eval.png.")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="a run folder, a checkpoint folder, its model/ folder, or a Hub model repo id (owner/name; "
                   "only a path that does not exist here is looked up on the Hub)")
    p.add_argument("--episodes", type=int, default=None, help="episodes per game (default: the checkpoint's eval.episodes)")
    p.add_argument("--games", nargs="+", default=None, help="evaluate only these games (default: all the checkpoint's games)")
    p.add_argument("--max-episode-steps", type=int, default=None, help="cut episodes after this many agent steps (CPU budget)")
    p.add_argument("--num-envs", type=int, default=None, help="parallel ALE environments per game")
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: the checkpoint's seed)")
    p.add_argument("--out", type=Path, default=None, help="folder for eval.json and eval.png (default: <checkpoint>/eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("bench", help="measure a hot path and print JSON (not a test)",
                       description="`train`: update steps/s of the CQL+DR3 step on the config's model and batch size; "
                       "`sampler`: stacked n-step transitions/s from a memory-mapped dataset; `model`: parameters, "
                       "forward+backward time per sample and FLOPs per update of every backbone; `distributed`: "
                       "update throughput of 1 process x 1 thread against 2 processes x 1 thread (scaling efficiency); "
                       "`learning`: the offline-RL learning benchmark (scripted behaviour data, BC / DQN / CQL / CQL+DR3 / "
                       "IQL, multi- vs single-game, fine-tuning vs scratch), resumable, writing docs/RESULTS.md.")
    p.add_argument("what", choices=["train", "sampler", "model", "distributed", "parquet", "memory", "learning"], help="which benchmark")
    _add_config(p)
    p.add_argument("--seconds", type=float, default=10.0, help="measuring time (after warm-up)")
    p.add_argument("--data", type=Path, default=None, help="sampler: a dataset folder (default: a synthetic one)")
    p.add_argument("--suite", default="cpu-small", help="learning: the suite (cpu-small, smoke)")
    p.add_argument("--only", nargs="+", default=(), metavar="PATTERN",
                   help="learning: run only the jobs whose ids match these shell patterns (and what they need), "
                   "e.g. 'multi/cql*' 'data/*'")
    p.add_argument("--seeds", type=_int_or_override, nargs="+", default=None, help="learning: seeds (default: the suite's)")
    p.add_argument("--work", type=Path, default=None, help="learning: datasets and runs (default runs/bench-learning/SUITE)")
    p.add_argument("--results", type=Path, default=None, help="learning: one JSON per finished job (default docs/results/SUITE)")
    p.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"), help="learning: the report")
    p.add_argument("--report-only", action="store_true", help="learning: rewrite the report from the results, run nothing")
    p.add_argument("--list", action="store_true", help="learning: list the jobs and whether each has a result")

    p = sub.add_parser("data", help="inspect, convert and publish datasets",
                       description="`info`: games, episodes, transitions, behaviour returns, size, provenance (no checksums); `verify`: "
                       "every file's sha256, finite rewards, actions in each game's set, episode structure; `show`: one "
                       "transition as training builds it; `export-parquet` / `import-parquet`: Arrow <-> Parquet shards with "
                       "a dataset card and checksums; `push`: upload Parquet shards to a Hub dataset repo in one commit.")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = dsub.add_parser("info", help="summarize an Arrow or Parquet dataset folder")
    q.add_argument("path", type=Path)
    q.add_argument("--json", action="store_true", help="print JSON instead of the table")
    q = dsub.add_parser("verify", help="check every data file's sha256 and every row's values (reads every byte)")
    q.add_argument("path", type=Path)
    q = dsub.add_parser("show", help="one transition (stacked obs, action, n-step return, discount, next obs)")
    q.add_argument("path", type=Path)
    q.add_argument("--game", required=True)
    q.add_argument("--index", type=int, required=True, help="i-th transition of the game in row order (negative: from the end)")
    q.add_argument("--n-step", type=int, default=3)
    q.add_argument("--gamma", type=float, default=0.99)
    q.add_argument("--reward-clip", type=float, default=1.0)
    q.add_argument("--png", type=Path, default=None, help="also write obs (top) and next_obs (bottom) as a PNG")
    q = dsub.add_parser("export-parquet", help="Arrow dataset folder -> Parquet shards + card + checksums")
    q.add_argument("path", type=Path)
    q.add_argument("out", type=Path)
    q.add_argument("--rows-per-shard", type=int, default=100_000)
    q.add_argument("--compression-level", type=int, default=None)
    q.add_argument("--overwrite", action="store_true")
    q = dsub.add_parser("import-parquet", help="Parquet shards -> memory-mapped Arrow dataset folder for training")
    q.add_argument("path", type=Path)
    q.add_argument("out", type=Path)
    q.add_argument("--games", nargs="+", default=None)
    q.add_argument("--overwrite", action="store_true")
    q = dsub.add_parser("push", help="upload Parquet shards (an Arrow folder is exported first) to a Hub dataset repo")
    q.add_argument("path", type=Path)
    q.add_argument("--repo-id", required=True)
    q.add_argument("--private", action="store_true")
    q.add_argument("--dry-run", action="store_true")
    q.add_argument("--work-dir", type=Path, default=None, help="where to export an Arrow folder (default: a temporary folder)")

    p = sub.add_parser("compare", help="learning curves of several runs on one plot",
                       description="Read the TensorBoard logs of each run folder and draw, per tag, one line per run "
                       "(default tags: eval_return/*, eval_q_start/*, q/data, q/pi, loss/td, holdout/td, online/return) into one PNG, plus the series as JSON.")
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with tb/)")
    p.add_argument("--out", type=Path, default=Path("compare.png"), help="PNG to write (default: compare.png)")
    p.add_argument("--tags", nargs="+", default=None, help="tags to draw; a trailing * matches a prefix")

    p = sub.add_parser("push", help="publish a checkpoint (weights, config, card, evaluation, TensorBoard logs) to the Hub",
                       description="Build an upload folder from a checkpoint: model.safetensors, config.json, "
                       "train_config.json, a model card (README.md) with a model-index of per-game results, eval.json, "
                       "eval.png and the run's TensorBoard logs; then create the Hub repo and upload it in one commit.")
    p.add_argument("--checkpoint", required=True, type=Path, help="a run folder, a checkpoint folder or its model/ folder")
    p.add_argument("--repo-id", required=True, help="Hub repo id, e.g. your-name/scaled-ql-atari")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--dry-run", action="store_true", help="build the folder and list it; upload nothing")
    p.add_argument("--eval", type=Path, default=None, help="eval.json to report (default: the run's evaluation of that checkpoint)")
    p.add_argument("--out", type=Path, default=None, help="where to build the upload folder (default: a temporary folder)")

    p = sub.add_parser("info", help="print the resolved config and the model's parameter count")
    _add_config(p)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as a namespace; every ``key=value`` word ends up in ``overrides``."""
    parser = build_parser()
    # Overrides may follow options or other positionals (`bench train --config X a.b=1`).
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    _split_overrides(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = argv
    from scaled_ql.config import ConfigError

    from scaled_ql.train.interrupt import EXIT_INTERRUPTED, TrainingInterrupted

    try:
        return _dispatch(args)
    except TrainingInterrupted as stop:
        print(f"scaled-ql {args.command}: {stop} (exit status {EXIT_INTERRUPTED})", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt as stop:
        print(f"scaled-ql {args.command}: {stop.args[0] if stop.args else 'interrupted'}", file=sys.stderr)
        return 130
    except (ConfigError, FileNotFoundError, FileExistsError, KeyError, IndexError, ValueError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"scaled-ql {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only folder, a full disk, a file where a folder should be: the path and the cause
        where = f"'{err.filename}': " if err.filename else ""
        print(f"scaled-ql {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


def _bench_learning(args: argparse.Namespace) -> None:
    from scaled_ql.learning_bench import LearningBenchmark
    from scaled_ql.learning_report import write_report

    if args.overrides:
        raise ValueError(f"bench learning: a suite fixes its settings; found overrides {args.overrides} (use --suite, --seeds, --only)")
    work = args.work or Path("runs/bench-learning") / args.suite
    results = args.results or Path("docs/results") / args.suite
    bench = LearningBenchmark(args.suite, work, results, seeds=tuple(args.seeds) if args.seeds else None,
                              progress=False)
    if args.list:
        for job in bench.jobs:
            print(f"{'done' if bench.result_path(job.id).is_file() else '    '}  {job.id}")
        return
    if not args.report_only:
        bench.run(tuple(args.only))
    print(f"wrote {write_report(bench, args.out)}")


def _dispatch(args: argparse.Namespace) -> int:
    from scaled_ql.config import load_config

    if args.command == "evaluate":
        from scaled_ql.eval.run import evaluate_checkpoint

        evaluate_checkpoint(
            args.checkpoint, episodes=args.episodes, games=args.games, max_episode_steps=args.max_episode_steps,
            num_envs=args.num_envs, seed=args.seed, out_dir=args.out, progress=not args.no_progress,
        )
        return 0

    if args.command == "data":
        _data(args)
        return 0

    if args.command == "compare":
        from scaled_ql.eval.compare import DEFAULT_TAGS, compare_runs

        drawn = compare_runs(args.runs, args.out, tuple(args.tags) if args.tags else DEFAULT_TAGS)
        print(f"wrote {args.out} ({len(drawn)} panels: {', '.join(drawn)})")
        return 0

    if args.command == "push":
        from scaled_ql.hub.push import push_checkpoint

        report = push_checkpoint(args.checkpoint, args.repo_id, private=args.private, dry_run=args.dry_run,
                                 eval_json=args.eval, out_dir=args.out)
        print(json.dumps(report, indent=1))
        return 0

    if args.command == "finetune":
        from scaled_ql.train.finetune import finetune_config
        from scaled_ql.train.trainer import pretrain

        cfg = finetune_config(args.init, args.game, args.data, args.config, args.overrides,
                              freeze_backbone=args.freeze_backbone, backbone_lr_scale=args.backbone_lr_scale)
        result = pretrain(cfg, resume=args.resume, progress=not args.no_progress)
        print(f"run folder: {result.run_dir}  (step {result.step}, checkpoint {result.checkpoint})")
        return 0

    sources = ("ale", "dqn-replay", "rlu", "hub")
    source = "ale"
    if args.command == "prep" and args.overrides and args.overrides[0] in sources:
        source, args.overrides = args.overrides[0], args.overrides[1:]
    cfg = load_config(args.config, args.overrides, training=args.command != "prep")
    if args.command == "prep" and source != "ale":
        _convert(source, cfg, args)
    elif args.command == "prep":
        from data_prep.rollout import collect_dataset

        from scaled_ql.data.format import check_output_folder

        out = args.out or Path(cfg.data.path)
        check_output_folder(out, args.overwrite)  # before loading a policy; the old folder stays until the new one is whole
        policy = None
        if cfg.prep.policy == "epsilon_greedy":
            from scaled_ql.models.policy import checkpoint_policy

            if not cfg.prep.checkpoint:
                raise ValueError("config key 'prep.checkpoint': expected a checkpoint for prep.policy=epsilon_greedy, found ''")
            policy = checkpoint_policy(cfg.prep.checkpoint, cfg.games, cfg.env)
        collect_dataset(cfg, out, policy=policy, progress=not args.no_progress, overwrite=args.overwrite, command=" ".join(["scaled-ql", *(sys.argv[1:] if args.argv is None else args.argv)]))
        print(f"dataset written to {out}")
    elif args.command == "pretrain":
        from scaled_ql.config import resume_config
        from scaled_ql.train.trainer import pretrain

        if args.resume:  # the run's own saved config; only what a resume may change is taken from the command line
            cfg, changes = resume_config(cfg, args.overrides)
            if (cfg.run_dir / "config.json").is_file():
                print(f"resuming run '{cfg.run_dir}' with its saved config.json"
                      + (f"; changed: {'; '.join(changes)}" if changes else " (nothing changed)"))
        result = pretrain(cfg, resume=args.resume, progress=not args.no_progress)
        print(f"run folder: {result.run_dir}  (step {result.step}, checkpoint {result.checkpoint})")
    elif args.command == "bench":
        from scaled_ql import bench

        if args.what == "learning":
            _bench_learning(args)
            return 0
        if args.what == "train":
            report = bench.bench_train(cfg, seconds=args.seconds)
        elif args.what == "model":
            report = bench.bench_model(cfg, batch_size=cfg.train.batch_size)
        elif args.what == "parquet":
            from scaled_ql.data.parquet import bench_parquet

            report = bench_parquet(args.data)  # None: synthetic noise frames (compression ratio meaningless)
        elif args.what == "memory":
            from scaled_ql.data.inspect import measure_sampling_rss

            if args.data is None:
                raise ValueError("bench memory: --data is required (a large Arrow dataset folder)")
            report = measure_sampling_rss(args.data, batch_size=cfg.train.batch_size, n_step=cfg.data.n_step,
                                          cold_seconds=args.seconds, warm_seconds=args.seconds)
        elif args.what == "distributed":
            report = bench.bench_distributed(args.config, args.overrides, seconds=args.seconds)
        else:
            report = bench.bench_sampler(
                path=str(args.data) if args.data else None, batch_size=cfg.train.batch_size, seconds=args.seconds,
                games=cfg.games, n_step=cfg.data.n_step,
            )
        if report is not None:  # under several processes only the main one reports
            print(json.dumps(report, indent=1))
    elif args.command == "info":
        from scaled_ql.losses.algorithms import check_algorithm
        from scaled_ql.models import build_model, count_parameters

        check_algorithm(cfg)
        model = build_model(cfg)
        print(cfg.to_json())
        print(json.dumps({"parameters": count_parameters(model), "games": len(cfg.games),
                          "action_counts": dict(zip(cfg.games, model.action_counts))}, indent=1))
    return 0


def _data(args: argparse.Namespace) -> None:
    """``scaled-ql data info|show|export-parquet|import-parquet|push``."""
    from scaled_ql.data import inspect as di
    from scaled_ql.data import parquet as dp

    c = args.data_command
    if c == "info":
        info = di.dataset_info(args.path)
        print(json.dumps(info, indent=1) if args.json else di.format_dataset_info(info))
    elif c == "verify":
        report = di.verify_dataset(args.path)
        print(f"dataset {report['path']} verified: {report['data_files']} {report['format']} files, {report['rows']} rows; "
              "checksums, values (finite rewards, actions in each game's set) and episodes ok")
    elif c == "show":
        t = di.transition(args.path, args.game, args.index, n_step=args.n_step, gamma=args.gamma, reward_clip=args.reward_clip)
        print(di.format_transition(t))
        if args.png:
            print(f"frames written to {di.save_transition_image(t, args.png)}")
    elif c == "export-parquet":
        print(json.dumps(dp.export_parquet(args.path, args.out, rows_per_shard=args.rows_per_shard,
                                           compression_level=args.compression_level, overwrite=args.overwrite), indent=1))
    elif c == "import-parquet":
        meta = dp.import_parquet(args.path, args.out, games=args.games, overwrite=args.overwrite)
        print(f"dataset written to {args.out} ({meta.num_rows} rows, games {list(meta.games)})")
    else:
        print(json.dumps(dp.push_dataset(args.path, args.repo_id, private=args.private, dry_run=args.dry_run,
                                         work_dir=args.work_dir), indent=1))


def _convert(source: str, cfg, args: argparse.Namespace) -> None:
    """``scaled-ql prep dqn-replay|rlu|hub``: convert data in a published format into a dataset."""
    out = args.out or Path(cfg.data.path)
    command = " ".join(["scaled-ql", *(sys.argv[1:] if args.argv is None else args.argv)])
    if source == "dqn-replay":
        from data_prep.dqn_replay import convert_dqn_replay

        if args.root is None:
            raise ValueError("prep dqn-replay: --root is required (the folder holding <Game>/<run>/replay_logs/)")
        convert_dqn_replay(args.root, out, cfg.games, runs=tuple(args.runs), checkpoints=args.checkpoints,
                           first_fraction=args.first_fraction, sample_fraction=args.sample_fraction, seed=cfg.seed,
                           skip_bad=args.skip_bad, overwrite=args.overwrite, command=command,
                           progress=not args.no_progress)
    elif source == "hub":
        from data_prep.hub_datasets import convert_hub_dataset

        if not args.repo_id:
            raise ValueError("prep hub: --repo-id is required (a Hub dataset repo id or a local copy)")
        convert_hub_dataset(args.repo_id, out, None if args.hub_config else cfg.games, config_names=args.hub_config,
                            max_episodes=args.max_episodes, skip_bad=args.skip_bad, overwrite=args.overwrite, command=command,
                           progress=not args.no_progress)
    else:
        from data_prep.rl_unplugged import convert_rl_unplugged

        if not args.input:
            raise ValueError("prep rlu: --input is required (TFRecord files, folders or globs)")
        convert_rl_unplugged(args.input, out, games=cfg.games, skip_bad=args.skip_bad, overwrite=args.overwrite, command=command,
                           progress=not args.no_progress)
    print(f"dataset written to {out}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

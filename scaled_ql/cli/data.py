"""``scaled-ql data info|verify|show|export-parquet|import-parquet|push``: inspect, convert and publish datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scaled_ql.data import inspection, parquet
from scaled_ql.hub.datasets import push_dataset


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    return p


def run(args: argparse.Namespace) -> int:
    c = args.data_command
    if c == "info":
        info = inspection.dataset_info(args.path)
        print(json.dumps(info, indent=1) if args.json else inspection.format_dataset_info(info))
    elif c == "verify":
        report = inspection.verify_dataset(args.path)
        print(f"dataset {report['path']} verified: {report['data_files']} {report['format']} files, {report['rows']} rows; "
              "checksums, values (finite rewards, actions in each game's set) and episodes ok")
    elif c == "show":
        t = inspection.transition(args.path, args.game, args.index, n_step=args.n_step, gamma=args.gamma,
                                  reward_clip=args.reward_clip)
        print(inspection.format_transition(t))
        if args.png:
            print(f"frames written to {inspection.save_transition_image(t, args.png)}")
    elif c == "export-parquet":
        print(json.dumps(parquet.export_parquet(args.path, args.out, rows_per_shard=args.rows_per_shard,
                                                compression_level=args.compression_level, overwrite=args.overwrite), indent=1))
    elif c == "import-parquet":
        meta = parquet.import_parquet(args.path, args.out, games=args.games, overwrite=args.overwrite)
        print(f"dataset written to {args.out} ({meta.num_rows} rows, games {list(meta.games)})")
    else:
        print(json.dumps(push_dataset(args.path, args.repo_id, private=args.private, dry_run=args.dry_run,
                                      work_dir=args.work_dir), indent=1))
    return 0


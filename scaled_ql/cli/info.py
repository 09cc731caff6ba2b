"""``scaled-ql info``: the resolved config and the model's parameter count."""

from __future__ import annotations

import argparse
import json

from scaled_ql.config import load_config
from scaled_ql.losses.algorithms import check_algorithm
from scaled_ql.models import build_model, count_parameters

from scaled_ql.cli.common import add_config


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="print the resolved config and the model's parameter count")
    add_config(p)
    return p


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    check_algorithm(cfg)
    model = build_model(cfg)
    print(cfg.to_json())
    print(json.dumps({"parameters": count_parameters(model), "games": len(cfg.games),
                      "action_counts": dict(zip(cfg.games, model.action_counts))}, indent=1))
    return 0


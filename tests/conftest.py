"""Shared fixtures: a real (tiny) ALE dataset made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaled_ql.config import ExperimentConfig, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def debug_config(tmp: Path, *overrides: str) -> ExperimentConfig:
    """The debug config with its run folder under ``tmp``."""
    return load_config(CONFIGS / "debug.yaml", [f"runs_dir={tmp / 'runs'}", *overrides])


@pytest.fixture(scope="session")
def debug_dataset(tmp_path_factory) -> Path:
    """Pong + Breakout, 400 random-policy steps each, played in real ALE."""
    from data_prep.rollout import collect_dataset

    out = tmp_path_factory.mktemp("data") / "debug"
    cfg = load_config(CONFIGS / "debug.yaml", [f"data.path={out}"])
    collect_dataset(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def debug_run(tmp_path_factory, debug_dataset) -> Path:
    """A finished 20-step debug run (checkpoints, TensorBoard logs, final evaluation)."""
    from scaled_ql.train.trainer import pretrain

    tmp = tmp_path_factory.mktemp("debug_run")
    return pretrain(debug_config(tmp, f"data.path={debug_dataset}"), progress=False).run_dir


def pytest_collection_modifyitems(items) -> None:
    """A test that uses the session's ALE dataset or run plays ALE: it is in the ``ale`` tier."""
    for item in items:
        if {"debug_dataset", "debug_run"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ale)

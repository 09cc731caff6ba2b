"""Every CLI command, run in-process on the debug config: the smoke tests of the user's path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scaled_ql.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEBUG = str(ROOT / "configs" / "debug.yaml")


def test_console_script_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "scaled_ql.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("prep", "pretrain", "evaluate", "bench", "info"):
        assert command in out
    for command in ("prep", "pretrain", "evaluate", "bench", "info"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0


def test_prep_pretrain_evaluate_end_to_end(tmp_path, capsys):
    data = tmp_path / "data"
    common = [f"data.path={data}", f"runs_dir={tmp_path / 'runs'}"]
    assert main(["prep", "--config", DEBUG, *common]) == 0
    assert (data / "README.md").is_file()
    assert main(["prep", "--config", DEBUG, *common]) == 2  # refuses to overwrite silently
    assert "--overwrite" in capsys.readouterr().err

    assert main(["pretrain", "--config", DEBUG, "--no-progress", *common, "eval.episodes=0"]) == 0
    run = tmp_path / "runs" / "debug"
    out_dir = tmp_path / "evaluation"
    assert main(["evaluate", "--checkpoint", str(run), "--episodes", "1", "--max-episode-steps", "30",
                 "--games", "Breakout", "--out", str(out_dir), "--no-progress"]) == 0
    results = json.loads((out_dir / "eval.json").read_text())
    assert list(results["games"]) == ["Breakout"] and len(results["games"]["Breakout"]["returns"]) == 1
    assert (out_dir / "eval.png").stat().st_size > 1000
    assert "Breakout" in capsys.readouterr().out

    assert main(["evaluate", "--checkpoint", str(run), "--games", "Seaquest", "--episodes", "1"]) == 2
    assert "Seaquest" in capsys.readouterr().err

    # A checkpoint whose config this version cannot build is refused with the key named.
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(run / "checkpoints" / "00000020" / "model", broken)
    config = json.loads((broken / "config.json").read_text())
    config["model"]["backbone"] = "resnet9000"
    (broken / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", "--checkpoint", str(broken), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "broken" in err and "model.backbone" in err and "resnet9000" in err

    # Epsilon-greedy data from the checkpoint just trained, games in another order than its heads.
    greedy_data = tmp_path / "greedy"
    assert main(["prep", "--config", DEBUG, f"data.path={greedy_data}", "games=[Breakout, Pong]",
                 "prep.policy=epsilon_greedy", "prep.epsilon=0.05", f"prep.checkpoint={run}"]) == 0
    card = (greedy_data / "README.md").read_text()
    assert "0.05" in card and "prep.policy=epsilon_greedy" in card
    assert main(["prep", "--config", DEBUG, f"data.path={tmp_path / 'x'}", "games=[Seaquest]",
                 "prep.policy=epsilon_greedy", f"prep.checkpoint={run}"]) == 2
    assert "no head for ['Seaquest']" in capsys.readouterr().err


def test_errors_name_the_culprit(tmp_path, capsys):
    assert main(["info", "--config", DEBUG, "train.setps=3"]) == 2
    assert "train.setps" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["pretrain", "--config", DEBUG, f"data.path={tmp_path / 'nodata'}", f"runs_dir={tmp_path}"]) == 2
    assert "nodata" in capsys.readouterr().err


def test_info_prints_parameter_count(capsys):
    assert main(["info", "--config", DEBUG]) == 0
    out = capsys.readouterr().out
    assert '"parameters"' in out and '"Pong": 6' in out


def test_bench_commands_print_json(capsys):
    assert main(["bench", "train", "--config", DEBUG, "--seconds", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["updates_per_s"] > 0
    assert main(["bench", "sampler", "--config", DEBUG, "--seconds", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["transitions_per_s"] > 0


def test_bench_outside_a_checkout_says_where_the_benchmarks_are(tmp_path, capsys, monkeypatch):
    from scaled_ql.cli import bench

    monkeypatch.setattr(bench, "CHECKOUT", tmp_path)  # an installed wheel: no benchmarks/ beside the package
    assert main(["bench", "train", "--config", DEBUG]) == 2
    err = capsys.readouterr().err
    assert "scaled-ql bench: error:" in err and "benchmarks/" in err and str(tmp_path) in err and "clone the repository" in err


def test_prep_converts_dqn_replay_and_trains_on_it(tmp_path, capsys):
    """`scaled-ql prep dqn-replay` on files in the exact Dopamine format, then `pretrain` unchanged."""
    from tests.test_dqn_replay import RUN1, play

    root = tmp_path / "dqn"
    for game in ("Pong", "Breakout"):
        play(root / game / "1" / "replay_logs", RUN1)
    data = tmp_path / "converted"
    common = [f"data.path={data}", f"runs_dir={tmp_path / 'runs'}"]
    assert main(["prep", "dqn-replay", "--config", DEBUG, "--root", str(root), "--first-fraction", "0.5", *common]) == 0
    card = (data / "README.md").read_text()
    assert "clipped to [-1, 1]" in card and "first-fraction 0.5" in card
    assert main(["pretrain", "--config", DEBUG, "--no-progress", *common, "eval.episodes=0", "train.steps=4"]) == 0
    assert main(["prep", "dqn-replay", "--config", DEBUG, f"data.path={tmp_path / 'x'}"]) == 2
    assert "--root is required" in capsys.readouterr().err


def test_data_commands_on_a_dataset(tmp_path, capsys):
    from tests.fixtures import write_synthetic_dataset

    path = write_synthetic_dataset(tmp_path / "ds").path
    assert main(["data", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Pong" in out and "Breakout" in out
    assert main(["data", "show", str(path), "--game", "Pong", "--index", "5", "--png", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 100
    assert main(["data", "export-parquet", str(path), str(tmp_path / "pq")]) == 0
    assert main(["data", "import-parquet", str(tmp_path / "pq"), str(tmp_path / "back")]) == 0
    assert main(["data", "push", str(tmp_path / "pq"), "--repo-id", "a/b", "--dry-run"]) == 0
    capsys.readouterr()
    assert main(["data", "show", str(path), "--game", "Pong", "--index", "99"]) == 2
    assert "99" in capsys.readouterr().err

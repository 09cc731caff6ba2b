"""pretrain from Parquet shards: the same config as from Arrow, exact resume (in process, after
kill -9 from the command line, with 2 processes), disjoint shards per process, evaluation."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures import write_synthetic_dataset
from safetensors.torch import load_file

from scaled_ql.cli import main
from scaled_ql.data.parquet import export_parquet
from scaled_ql.train.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints
from scaled_ql.train.trainer import pretrain
from tests.conftest import debug_config

ROOT = Path(__file__).resolve().parent.parent
STATE_FILES = ("model/model.safetensors", "state/target.safetensors", "state/optimizer.safetensors")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streaming_train")
    data = write_synthetic_dataset(tmp / "arrow")
    export_parquet(data.path, tmp / "pq", rows_per_shard=2, row_group_rows=3)  # a shard per episode: 3 per game
    data.parquet = tmp / "pq"
    return data


def _assert_same_state(a: Path, b: Path) -> None:
    for name in STATE_FILES:
        x, y = load_file(a / name), load_file(b / name)
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), f"{name}: {key}"


def _trainer_json(ckpt: Path) -> dict:
    return json.loads((ckpt / "state" / "trainer.json").read_text())


def test_pretrain_from_parquet_resumes_bitwise_with_holdout_and_calql(tmp_path, synthetic):
    common = [f"data.path={synthetic.parquet}", "eval.episodes=0", "data.stream_buffer_rows=7", "data.holdout_fraction=0.4",
              "loss.calibrated=true", "train.log_every=5"]
    full = pretrain(debug_config(tmp_path / "a", *common), progress=False)
    pretrain(debug_config(tmp_path / "b", *common, "train.steps=10"), progress=False)
    resumed = pretrain(debug_config(tmp_path / "b", *common), resume=True, progress=False)
    assert resumed.step == 20
    _assert_same_state(full.checkpoint, resumed.checkpoint)
    rank = _trainer_json(resumed.checkpoint)["ranks"][0]
    assert rank["dataset"]["source"] == {"kind": "parquet", "location": str(synthetic.parquet), "skipped_shards": []}
    assert rank["sampler"]["kind"] == "streaming" and rank["holdout_sampler"]["split"] == "holdout"
    # The same config from the Arrow folder: another kind of source, the same rows (same fingerprint).
    arrow = pretrain(debug_config(tmp_path / "c", *common[1:], f"data.path={synthetic.path}"), progress=False)
    arrow_rank = _trainer_json(arrow.checkpoint)["ranks"][0]
    assert arrow_rank["dataset"]["source"]["kind"] == "arrow" and arrow_rank["dataset"]["sha256"] == rank["dataset"]["sha256"]


def test_a_run_resumed_from_another_kind_of_source_is_refused(tmp_path, synthetic):
    folder = tmp_path / "data"
    shutil.copytree(synthetic.path, folder)
    common = [f"data.path={folder}", "eval.episodes=0"]
    pretrain(debug_config(tmp_path, *common, "train.steps=10"), progress=False)
    shutil.rmtree(folder)
    shutil.copytree(synthetic.parquet, folder)  # the folder converted to Parquet in place: the same rows
    with pytest.raises(CheckpointError, match=r"trained from a arrow source and data.path .* is a parquet source"):
        pretrain(debug_config(tmp_path, *common), resume=True, progress=False)


def test_hub_repo_extra_games_and_online_with_a_stream_name_the_culprit(tmp_path, synthetic, capsys, monkeypatch):
    from huggingface_hub import constants

    from scaled_ql.config import ConfigError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the Hub path up to the request, which offline mode refuses
    assert main(["pretrain", "--config", "configs/debug.yaml", "--no-progress", f"runs_dir={tmp_path}",
                 "data.path=nobody/no-such-dataset", "data.read_retries=1", "data.retry_wait_s=0"]) == 2
    err = capsys.readouterr().err
    assert "'nobody/no-such-dataset' is not a local folder, so it was read as a Hub dataset repo id" in err
    assert "'hf://datasets/nobody/no-such-dataset/scaled_ql_parquet.json'" in err and "reading failed 2 time(s)" in err
    with pytest.raises(ConfigError, match=r"online.enabled.*streamed Parquet"):
        pretrain(debug_config(tmp_path, f"data.path={synthetic.parquet}", "online.enabled=true"), progress=False)
    assert main(["pretrain", "--config", "configs/debug.yaml", "--no-progress", f"runs_dir={tmp_path}",
                 f"data.path={synthetic.parquet}", "games=[Pong]"]) == 2
    assert "holds games ['Breakout'] that are not in config key 'games'" in capsys.readouterr().err


@pytest.mark.slow
def test_export_then_pretrain_cli_killed_resumes_bitwise_and_evaluates(tmp_path, debug_dataset):
    """From the commands a user types: export-parquet, pretrain on the folder, kill -9, --resume."""
    assert main(["data", "export-parquet", str(debug_dataset), str(tmp_path / "pq"), "--rows-per-shard", "150"]) == 0
    common = [f"data.path={tmp_path / 'pq'}", "train.steps=40", "train.checkpoint_every=5", "data.stream_buffer_rows=100"]
    full = pretrain(debug_config(tmp_path / "a", *common, "eval.episodes=0"), progress=False)

    cmd = [sys.executable, "-m", "scaled_ql.cli", "pretrain", "--config", "configs/debug.yaml", "--no-progress",
           f"runs_dir={tmp_path / 'b' / 'runs'}", *common, "eval.episodes=1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = tmp_path / "b" / "runs" / "debug"
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(run)) < 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = latest_checkpoint(run)
    assert killed_at is not None and int(killed_at.name) < 40, proc.stderr.read().decode()[-2000:]

    resumed = subprocess.run([*cmd, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "data: parquet source" in resumed.stdout + resumed.stderr
    _assert_same_state(full.checkpoint, latest_checkpoint(run))
    evaluation = json.loads((run / "eval.json").read_text())
    assert set(evaluation["games"]) == {"Pong", "Breakout"} and len(evaluation["games"]["Pong"]["returns"]) == 1


@pytest.mark.slow
def test_two_processes_read_disjoint_shards_and_resume_exactly(tmp_path, synthetic):
    def launch(*extra: str) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "scaled_ql.cli", "pretrain",
               "--config", "configs/debug.yaml", "--no-progress", f"runs_dir={tmp_path / 'runs'}", f"data.path={synthetic.parquet}",
               "eval.episodes=0", "data.stream_buffer_rows=7", *extra]
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    launch()
    run = tmp_path / "runs" / "debug"
    final = latest_checkpoint(run)
    ranks = _trainer_json(final)["ranks"]
    for game in ("Pong", "Breakout"):
        shards = [set(next(s["shards"] for s in r["sampler"]["streams"] if s["game"] == game)) for r in ranks]
        assert len(shards) == 2 and not shards[0] & shards[1]
        assert shards[0] | shards[1] == {f"data/{game}/train-0000{i}-of-00003.parquet" for i in range(3)}
    kept = tmp_path / "final"
    shutil.copytree(final, kept)
    shutil.rmtree(final)
    launch("--resume")  # from step 10, both ranks from their own cursors
    _assert_same_state(kept, latest_checkpoint(run))
    with pytest.raises(CheckpointError, match=r"saved by 2 process\(es\), this run has 1.*Resume with 2 processes"):
        pretrain(debug_config(tmp_path, f"data.path={synthetic.parquet}", "eval.episodes=0", "data.stream_buffer_rows=7"),
                 resume=True, progress=False)

"""Faults a hostile but fair user meets (issue 14): each ends in a named error or correct
behaviour, and no data is lost. Real components only (ALE, datasets, safetensors)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaled_ql.cli import main
from scaled_ql.data.schema import METADATA_FILE
from scaled_ql.data.writer import write_dataset
from tests.fixtures import DEFAULT_EPISODES, episode_chunk, write_synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent
DEBUG = str(ROOT / "configs" / "debug.yaml")


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------------------------
# Data loss and unsafe deletes


def test_prep_overwrite_never_deletes_a_folder_that_is_not_a_dataset(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("three years of work")
    assert main(["prep", "--config", DEBUG, f"data.path={mine}", "--overwrite", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and str(mine) in err and METADATA_FILE in err
    assert (mine / "thesis.tex").read_text() == "three years of work"

    monkeypatch.chdir(mine)  # `--out .` is the folder the user stands in
    assert main(["prep", "--config", DEBUG, "--out", ".", "--overwrite", "--no-progress"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


def test_prep_overwrite_keeps_the_old_dataset_until_the_new_one_is_whole(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "data")
    before = {p.name: p.read_bytes() for p in data.path.iterdir()}
    # The new dataset cannot be made (its policy's checkpoint does not exist): the old one stays.
    assert main(["prep", "--config", DEBUG, f"data.path={data.path}", "--overwrite", "--no-progress",
                 "prep.policy=epsilon_greedy", f"prep.checkpoint={tmp_path / 'no-such-run'}"]) == 2
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in data.path.iterdir()} == before

    # An error in the middle of writing (a bad chunk after a good one) leaves it too, and no temporaries.
    bad = episode_chunk(1, DEFAULT_EPISODES[1])
    bad["step"][1] = 5
    with pytest.raises(ValueError, match="has step 5"):
        write_dataset(data.path, [episode_chunk(0, DEFAULT_EPISODES[0]), bad], overwrite=True)
    assert {p.name: p.read_bytes() for p in data.path.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["data"]

    # A whole new dataset replaces it.
    meta = write_dataset(data.path, [episode_chunk(0, DEFAULT_EPISODES[0])], overwrite=True)
    assert meta.num_rows == len(DEFAULT_EPISODES[0].rewards) + 1
    assert json.loads((data.path / METADATA_FILE).read_text())["rows"] == meta.num_rows
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_a_killed_prep_leaves_its_old_dataset_and_the_next_prep_removes_its_temporary(tmp_path):
    import time

    out = tmp_path / "data"
    write_synthetic_dataset(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    cmd = [sys.executable, "-m", "scaled_ql.cli", "prep", "--config", DEBUG, "--no-progress", f"data.path={out}", "--overwrite"]
    proc = subprocess.Popen([*cmd, "prep.steps_per_game=100000"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not any(p.name.startswith(".data.") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(1.0)  # writing rows
    proc.kill()
    proc.wait()
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]
    assert len(stale) == 1 and {p.name: p.read_bytes() for p in out.iterdir()} == before
    done = subprocess.run([*cmd, "prep.steps_per_game=40"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"removed '{stale[0]}'" in done.stderr and "process is gone" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert json.loads((out / METADATA_FILE).read_text())["collection"]["steps_per_game"] == 40


def test_output_path_that_is_a_file_is_named(tmp_path, capsys):
    file = tmp_path / "data"
    file.write_text("not a folder")
    assert main(["prep", "--config", DEBUG, f"data.path={file}", "--overwrite", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(file) in err and "a file (not a folder)" in err
    assert file.read_text() == "not a folder"


def test_stale_temporaries_of_a_killed_writer_are_removed_with_a_message(tmp_path, capsys):
    out = tmp_path / "data"
    stale = tmp_path / ".data.k1ll3d00"
    stale.mkdir()
    (stale / "rows.arrow").write_bytes(b"\0" * 4096)
    (stale / "scaled_ql_writer.json").write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename}))
    old_style = tmp_path / ".data.0ldst7le"  # left by a writer from before owner files
    (old_style / "dataset").mkdir(parents=True)
    running = tmp_path / ".data.run41ng0"  # a writer of the same output still running
    running.mkdir()
    (running / "scaled_ql_writer.json").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    unrelated = tmp_path / ".data.notes"
    unrelated.mkdir()
    (unrelated / "todo.txt").write_text("keep")

    write_synthetic_dataset(out)
    err = capsys.readouterr().err
    assert not stale.exists() and not old_style.exists()
    assert str(stale) in err and "process is gone" in err
    assert running.is_dir() and (unrelated / "todo.txt").is_file()


# ----------------------------------------------------------------------------------------------
# Bad values in data


@pytest.mark.parametrize("column, value, shown", [("reward", np.nan, "reward nan"), ("reward", np.inf, "reward inf"),
                                                  ("action", 17, "action 17")])
def test_write_dataset_rejects_bad_values_naming_row_game_and_value(tmp_path, column, value, shown):
    chunk = episode_chunk(0, DEFAULT_EPISODES[0])  # Pong: 6 actions
    chunk[column][2] = value
    with pytest.raises(ValueError, match=rf"writing '.*bad', chunk 0: row 2 \(game Pong\) has {shown}"):
        write_dataset(tmp_path / "bad", [chunk])
    assert not (tmp_path / "bad").exists()


def _tamper(folder: Path, column: str, row: int, value) -> Path:
    """Rewrite one value of the dataset's first Arrow file and its checksum, as a writer without
    the checks would have: the file is consistent, the value is bad."""
    import pyarrow as pa

    from scaled_ql.data.schema import open_arrow_file, sha256_file

    meta = json.loads((folder / METADATA_FILE).read_text())
    file = folder / meta["files"][0]["name"]
    _, table = open_arrow_file(file)
    values = table.column(column).to_numpy().copy()
    values[row] = value
    table = table.set_column(table.schema.get_field_index(column), table.schema.field(column), pa.array(values))
    with pa.OSFile(str(file) + ".new", "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(str(file) + ".new", file)
    meta["files"][0] |= {"bytes": file.stat().st_size, "sha256": sha256_file(file)}
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    return file


@pytest.mark.parametrize("column, value, shown", [("reward", np.float32(np.nan), "reward nan"),
                                                  ("reward", np.float32(-np.inf), "reward -inf"),
                                                  ("action", 17, "action 17")])
def test_store_and_data_verify_reject_bad_values_naming_file_row_game_and_value(tmp_path, capsys, column, value, shown):
    from scaled_ql.data.store import ReplayStore

    data = write_synthetic_dataset(tmp_path / "data")
    file = _tamper(data.path, column, 3, value)
    with pytest.raises(ValueError, match=rf"dataset file '{file}': row 3 \(game Pong\) has {shown}"):
        ReplayStore(data.path, data.games)
    assert main(["data", "verify", str(data.path)]) == 2
    err = capsys.readouterr().err
    assert str(file) in err and "row 3 (game Pong)" in err and shown in err


def test_data_verify_checks_checksums_that_data_info_does_not_read(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "data")
    assert main(["data", "verify", str(data.path)]) == 0
    assert "verified" in capsys.readouterr().out
    meta = json.loads((data.path / METADATA_FILE).read_text())
    file = data.path / meta["files"][0]["name"]
    raw = bytearray(file.read_bytes())
    pixel = raw.find(bytes([3]) * 2000) + 1000  # inside a frame (fixture frames are runs of step + 1)
    raw[pixel] ^= 0xFF  # a flipped bit in a frame: the file still parses
    file.write_bytes(bytes(raw))
    assert main(["data", "info", str(data.path)]) == 0
    assert "data verify" in capsys.readouterr().out  # info says it did not check
    assert main(["data", "verify", str(data.path)]) == 2
    err = capsys.readouterr().err
    assert str(file) in err and "sha256" in err and "corrupt" in err


# ----------------------------------------------------------------------------------------------
# Checkpoints from elsewhere


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A debug Q-network saved as a Hub-ready model folder (config.json + model.safetensors)."""
    from scaled_ql.models import build_model
    from tests.conftest import debug_config

    folder = tmp_path / "model"
    cfg = debug_config(tmp_path)
    build_model(cfg).save_pretrained(folder)
    (folder / "train_config.json").write_text(cfg.to_json())
    return folder


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """The Hub client offline, with an empty cache of its own: nothing touches the network."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _safetensors_to_pickle_only(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def test_pickle_only_checkpoints_are_refused_never_unpickled(model_dir, offline_hub, capsys, monkeypatch):
    import torch

    from scaled_ql.models.loading import load_model
    from scaled_ql.models import MultiGameQNetwork
    from scaled_ql.models.weights import WeightsError

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called")

    _safetensors_to_pickle_only(model_dir)
    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(RuntimeError, match=r"expected a folder holding model.safetensors .*found only pytorch_model.bin, a pickle"):
        load_model(model_dir)
    with pytest.raises(WeightsError, match=r"expected weights in model.safetensors, found only pytorch_model.bin, a pickle"):
        MultiGameQNetwork.from_pretrained(model_dir)
    assert main(["evaluate", "--checkpoint", str(model_dir), "--episodes", "1"]) == 2
    assert "pytorch_model.bin" in capsys.readouterr().err

    # The same repo in the Hub's cache (as a download would leave it): refused by name.
    repo = offline_hub / "models--someone--pickled"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name in ("config.json", "pytorch_model.bin"):
        (snapshot / name).write_bytes((model_dir / name).read_bytes())
    with pytest.raises(WeightsError, match=r"Hub repo 'someone/pickled': no model.safetensors, only a pickle file"):
        load_model("someone/pickled")


def test_mistyped_local_path_fails_at_once_and_unreachable_hub_is_named(tmp_path, offline_hub, monkeypatch, capsys):
    import time

    from scaled_ql.models.loading import load_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    for typo in ("runs/tny", "./tny", "runs/tiny/checkpoints/9", str(tmp_path / "tny")):
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=rf"checkpoint '{typo}': no such folder"):
            load_model(typo)
        assert time.monotonic() - started < 2
    assert main(["evaluate", "--checkpoint", "runs/tny"]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(Exception, match=r"could not reach the Hugging Face Hub"):
        load_model("someone/never-downloaded")


def test_non_finite_or_truncated_weights_are_refused_naming_the_file_and_tensor(model_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from scaled_ql.models.loading import load_model
    from scaled_ql.models.weights import WeightsError

    state = load_file(str(model_dir / "model.safetensors"))
    name = sorted(state)[0]
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=rf"model.safetensors': tensor '{name}' has 1 non-finite values"):
        load_model(model_dir)

    raw = (model_dir / "model.safetensors").read_bytes()
    (model_dir / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    assert main(["evaluate", "--checkpoint", str(model_dir), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert str(model_dir / "model.safetensors") in err and "corrupt or truncated" in err
    assert main(["push", "--checkpoint", str(model_dir), "--repo-id", "me/x", "--dry-run", "--out", str(tmp_path / "up")]) == 2
    err = capsys.readouterr().err
    assert str(model_dir / "model.safetensors") in err and "corrupt or truncated" in err
    assert not (tmp_path / "up").exists()


def test_config_sizes_are_checked_against_the_weights_before_building(model_dir):
    import resource

    from scaled_ql.models.loading import load_model
    from scaled_ql.models.weights import WeightsError

    config = json.loads((model_dir / "config.json").read_text())
    config["model"]["feature_dim"] = 4_000_000  # the heads alone would be tens of GB
    (model_dir / "config.json").write_text(json.dumps(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(WeightsError, match=r"tensor '.*' has shape \[.*\], but its config.json asks for \[.*4000000"):
        load_model(model_dir)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: nothing was allocated

    config["model"] |= {"feature_dim": 64, "backbone": "vit", "vit_depth": 10**6}  # would take hours to build
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"asks for 1000000 ViT layers \(model.vit_depth\), but the file holds only"):
        load_model(model_dir)


# ----------------------------------------------------------------------------------------------
# Corrupt and interrupted checkpoints


def _truncate(file: Path) -> None:
    raw = file.read_bytes()
    file.write_bytes(raw[: len(raw) // 3])


@pytest.mark.parametrize("broken", ["model/model.safetensors", "state/optimizer.safetensors"])
def test_resume_skips_a_corrupt_newest_checkpoint_and_says_so(tmp_path, debug_dataset, capsys, broken):
    from scaled_ql.train.trainer import pretrain
    from tests.conftest import debug_config

    common = [f"data.path={debug_dataset}", "eval.episodes=0"]
    first = pretrain(debug_config(tmp_path, *common), progress=False)
    assert first.checkpoint.name == "00000020"
    _truncate(first.checkpoint / broken)
    capsys.readouterr()
    resumed = pretrain(debug_config(tmp_path, *common, "train.steps=30"), resume=True, progress=False)
    out = capsys.readouterr().out
    assert f"skipped checkpoint '{first.checkpoint}': '{first.checkpoint / broken}' is corrupt or truncated" in out
    assert "from " + str(first.checkpoint.parent / "00000010") in out and "at step 10" in out
    assert resumed.step == 30

    # evaluate names the file instead of a raw SafetensorError traceback
    _truncate(resumed.checkpoint / "model" / "model.safetensors")
    assert main(["evaluate", "--checkpoint", str(resumed.run_dir), "--episodes", "1"]) == 2
    assert str(resumed.checkpoint / "model" / "model.safetensors") in capsys.readouterr().err


def test_resume_after_a_kill_during_the_first_checkpoint_says_it_starts_fresh(tmp_path, debug_dataset, monkeypatch, capsys):
    from scaled_ql.train import checkpoint as ckpt_mod
    from scaled_ql.train.trainer import pretrain
    from tests.conftest import debug_config

    cfg = debug_config(tmp_path, f"data.path={debug_dataset}", "eval.episodes=0")
    real_save_file = ckpt_mod.save_file

    def dying_save_file(tensors, path, *a, **k):
        if "optimizer" in str(path):
            raise KeyboardInterrupt("simulated kill during the first checkpoint write")
        return real_save_file(tensors, path, *a, **k)

    monkeypatch.setattr(ckpt_mod, "save_file", dying_save_file)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, progress=False)
    monkeypatch.setattr(ckpt_mod, "save_file", real_save_file)
    capsys.readouterr()
    resumed = pretrain(cfg, resume=True, progress=False)
    out = capsys.readouterr().out
    assert "the only checkpoint write" in out and ".tmp-00000010" in out and "was interrupted" in out
    assert "starting fresh from step 0" in out
    assert resumed.step == 20


def test_resume_refuses_a_dataset_regenerated_at_the_same_path(tmp_path, capsys):
    from scaled_ql.train.trainer import pretrain
    from tests.conftest import debug_config

    data = write_synthetic_dataset(tmp_path / "data")
    common = [f"data.path={data.path}", "eval.episodes=0", "train.steps=10", "data.n_step=1"]
    pretrain(debug_config(tmp_path, *common), progress=False)
    episodes = tuple(e for e in DEFAULT_EPISODES if e.rewards != (7.0,))  # the same games, other data
    write_dataset(data.path, (episode_chunk(i, e) for i, e in enumerate(episodes)), overwrite=True)
    assert main(["pretrain", "--config", DEBUG, "--resume", "--no-progress", f"runs_dir={tmp_path / 'runs'}", *common,
                 "train.steps=20"]) == 2
    err = capsys.readouterr().err
    assert "was trained on dataset" in err and "data.path now holds" in err and str(data.path) in err
    assert err.count("fingerprint") == 2


# ----------------------------------------------------------------------------------------------
# Operating errors: one line naming the path and the cause, no leftovers


def _one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_runs_dir_that_is_a_file_is_one_line(tmp_path, debug_dataset, capsys):
    runs = tmp_path / "runs"
    runs.write_text("a file where the runs folder should be")
    assert main(["pretrain", "--config", DEBUG, "--no-progress", f"runs_dir={runs}", f"data.path={debug_dataset}"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert str(runs) in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_runs_dir_is_one_line(tmp_path, debug_dataset, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    try:
        assert main(["pretrain", "--config", DEBUG, "--no-progress", f"runs_dir={runs}", f"data.path={debug_dataset}"]) == 2
    finally:
        runs.chmod(0o755)
    line = _one_line_error(capsys.readouterr().err)
    assert str(runs) in line and "Permission denied" in line


def _cli_with_file_size_limit(*args: str) -> subprocess.CompletedProcess:
    """``scaled-ql *args`` in a process that may not write files over 100 kB (RLIMIT_FSIZE: a write
    past it fails as on a full disk)."""
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "from scaled_ql.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_tmp(tmp_path, debug_dataset):
    """A real write failure: the process may not write files over 100 kB (RLIMIT_FSIZE, as a full
    disk fails a write), so the first checkpoint's weights cannot be written."""
    runs = tmp_path / "runs"
    proc = _cli_with_file_size_limit("pretrain", "--config", DEBUG, "--no-progress", f"runs_dir={runs}",
                                     f"data.path={debug_dataset}", "eval.episodes=0")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_line_error(proc.stderr)
    assert "could not write checkpoint" in line and str(runs / "debug" / "checkpoints" / "00000010") in line
    assert "File too large" in line
    assert [p.name for p in (runs / "debug" / "checkpoints").iterdir()] == []


def test_full_disk_during_prep_is_one_line_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "data"
    proc = _cli_with_file_size_limit("prep", "--config", DEBUG, "--no-progress", f"data.path={out}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_line_error(proc.stderr)
    assert "File too large" in line and str(out) in line, line
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# SIGTERM / SIGINT: finish the update, checkpoint, one line, a distinct exit status


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=lambda s: s.name)
def test_signal_writes_a_checkpoint_and_exits_with_its_own_status(tmp_path, debug_dataset, signum):
    import time

    from scaled_ql.train.checkpoint import checkpoint_problem, latest_checkpoint
    from scaled_ql.train.interrupt import EXIT_INTERRUPTED
    from scaled_ql.train.trainer import pretrain
    from tests.conftest import debug_config

    common = [f"data.path={debug_dataset}", "eval.episodes=0", "train.checkpoint_every=1000000"]
    run = tmp_path / "runs" / "debug"
    proc = subprocess.Popen([sys.executable, "-m", "scaled_ql.cli", "pretrain", "--config", DEBUG, "--no-progress",
                             f"runs_dir={tmp_path / 'runs'}", *common, "train.steps=1000000"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "tb").is_dir() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the loop
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert "Traceback" not in err
    notice, line = [line for line in err.strip().splitlines() if line.strip()]
    assert f"{signum.name}: finishing the current update, then writing a checkpoint" in notice
    saved = latest_checkpoint(run)
    assert saved is not None and checkpoint_problem(saved) is None
    step = int(saved.name)
    assert f"stopped by {signum.name} at step {step}" in line and str(saved) in line and "--resume" in line

    resumed = pretrain(debug_config(tmp_path, *common, f"train.steps={step + 3}"), resume=True, progress=False)
    assert resumed.step == step + 3


def test_a_signal_during_the_final_evaluation_stops_at_once(tmp_path, debug_dataset):
    import time

    from scaled_ql.train.checkpoint import checkpoint_problem

    run = tmp_path / "runs" / "debug"
    proc = subprocess.Popen([sys.executable, "-m", "scaled_ql.cli", "pretrain", "--config", DEBUG, "--no-progress",
                             f"runs_dir={tmp_path / 'runs'}", f"data.path={debug_dataset}", "train.steps=10",
                             "eval.episodes=200", "eval.max_episode_steps=100000"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    final = run / "checkpoints" / "00000010"
    deadline = time.time() + 120
    while time.time() < deadline and not final.is_dir() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # in the final evaluation (200 episodes: minutes)
    started = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.time() - started < 20 and proc.returncode == 130, err[-3000:]
    line = _one_line_error(err)
    assert "stopped by SIGTERM outside the update loop" in line
    assert checkpoint_problem(final) is None


def test_slurm_script_asks_for_the_warning_signal_and_requeues(tmp_path):
    """A fake srun that, like accelerate's workers, checkpoints and exits on SIGTERM; the batch
    script gets SLURM's warning signal (USR1), forwards it as SIGTERM and requeues the job."""
    import stat
    import time

    text = (ROOT / "launch" / "slurm.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@" in text and "#SBATCH --requeue" in text
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    tools = {
        "scontrol": f'if [[ $1 == show ]]; then printf "gpu-01\\n"; else echo "scontrol $*" >> {log}; fi\n',
        "srun": f'trap \'echo "srun got TERM" >> {log}; exit 75\' TERM\necho started >> {log}\n'
                'for i in $(seq 600); do sleep 0.1; done\n',
    }
    for name, body in tools.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body)
        (bin_dir / name).chmod(0o755 | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "ACCELERATE_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", SLURM_NNODES="1", SLURM_JOB_NODELIST="gpu-01", SLURM_JOB_ID="4242")
    proc = subprocess.Popen(["bash", "launch/slurm.sbatch"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and not (log.is_file() and "started" in log.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=60)
    calls = log.read_text()
    assert "srun got TERM" in calls and "scontrol requeue 4242" in calls, (calls, out, err)
    assert "requeue" in out + err


# ----------------------------------------------------------------------------------------------
# A new user's first hour


def test_readme_resume_command_takes_the_runs_own_config(tmp_path, debug_dataset, capsys):
    runs = f"runs_dir={tmp_path / 'runs'}"
    assert main(["pretrain", "--config", DEBUG, "--no-progress", runs, "name=mine", f"data.path={debug_dataset}",
                 "train.steps=10", "eval.episodes=0"]) == 0
    capsys.readouterr()
    # As the README writes it: the config file's data.path (data/debug) and train.steps (20) are not the run's.
    assert main(["pretrain", "--config", DEBUG, "--no-progress", runs, "name=mine", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "with its saved config.json (nothing changed)" in out and "(step 10," in out
    assert main(["pretrain", "--config", DEBUG, "--no-progress", runs, "name=mine", "--resume", "train.steps=15"]) == 0
    out = capsys.readouterr().out
    assert "changed: train.steps: 10 -> 15" in out and "(step 15," in out
    assert main(["pretrain", "--config", DEBUG, "--no-progress", runs, "name=mine", "--resume", "train.steps=20", "seed=3"]) == 2
    err = capsys.readouterr().err
    assert "'seed' cannot change when resuming" in err and "0" in err and "3" in err


def test_prep_is_not_blocked_by_a_training_setting(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["prep", "--config", DEBUG, "--no-progress", f"data.path={out}", "train.batch_size=7",
                 "prep.steps_per_game=40"]) == 0
    assert (out / METADATA_FILE).is_file()
    assert main(["pretrain", "--config", DEBUG, "--no-progress", f"data.path={out}", "train.batch_size=7",
                 f"runs_dir={tmp_path / 'runs'}"]) == 2
    assert "train.batch_size" in capsys.readouterr().err


def test_config_surprises_are_errors_or_do_what_they_say(tmp_path):
    from scaled_ql.config import ConfigError, load_config

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here yet\n")
    with pytest.raises(ConfigError, match=r"config file '.*empty.yaml' is empty"):
        load_config(empty)
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  steps: 10\n  batch_size: 8\n  steps: 2000\n")
    with pytest.raises(ConfigError, match=r"twice.yaml': key 'steps' appears twice in one section \(lines 2 and 4\)"):
        load_config(twice)
    # A mapping override sets the keys it names and keeps the section's others (it used to reset them).
    cfg = load_config(DEBUG, ["train={steps: 5}"])
    assert cfg.train.steps == 5 and cfg.train.batch_size == 8 and cfg.train.checkpoint_every == 10


def test_options_with_several_values_do_not_swallow_overrides(capsys):
    from scaled_ql.cli import parse_args

    args = parse_args(["prep", "rlu", "--config", DEBUG, "--input", "a.tfrecord", "b*", "data.path=data/x", "seed=3"])
    assert args.input == ["a.tfrecord", "b*"] and args.overrides == ["rlu", "data.path=data/x", "seed=3"]
    args = parse_args(["prep", "dqn-replay", "--runs", "1", "2", "train.steps=5", "--checkpoints", "3", "name=y"])
    assert args.runs == [1, 2] and args.checkpoints == [3] and args.overrides == ["dqn-replay", "train.steps=5", "name=y"]
    args = parse_args(["finetune", "--init", "runs/a", "--data", "d", "--game", "Alien", "Pong", "train.steps=7"])
    assert args.game == ["Alien", "Pong"] and args.overrides == ["train.steps=7"]
    with pytest.raises(SystemExit):
        parse_args(["evaluate", "--checkpoint", "runs/a", "--games", "Pong", "train.steps=5"])
    assert "takes no key=value overrides" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["prep", "--runs", "x"])
    assert "invalid int value: 'x'" in capsys.readouterr().err


def test_evaluate_help_mentions_hub_repo_ids_and_launch_readme_shows_deepspeed_on_cpu(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "Hub model repo id (owner/name" in " ".join(capsys.readouterr().out.split())
    text = (ROOT / "launch" / "README.md").read_text()
    assert "torchrun --standalone --nproc_per_node 2 -m scaled_ql.cli pretrain" in text and "dist.backend=deepspeed" in text


def test_online_counts_in_tensorboard_are_running_totals(tmp_path, debug_dataset):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from scaled_ql.train.trainer import pretrain
    from tests.conftest import debug_config

    cfg = debug_config(tmp_path, f"data.path={debug_dataset}", "online.enabled=true", "online.num_envs=2",
                       "online.env_steps_per_update=4", "online.max_episode_steps=10", "online.capacity_rows=2000",
                       "eval.episodes=0", "train.log_every=5")
    result = pretrain(cfg, progress=False)
    events = EventAccumulator(str(result.run_dir / "tb"))
    events.Reload()
    env_steps = [e.value for e in events.Scalars("online/env_steps")]
    episodes = [e.value for e in events.Scalars("online/episodes")]
    per_update = 4 * 2 * len(cfg.games)  # vector steps x environments x games
    assert env_steps == [per_update * s for s in (5, 10, 15, 20)]
    assert episodes == sorted(episodes) and episodes[-1] > episodes[0] > 0  # 10-step episodes keep ending
    actor = json.loads((result.checkpoint / "state" / "trainer.json").read_text())["ranks"][0]["actor"]
    assert episodes[-1] == actor["episodes_finished"]


def test_capped_evaluations_are_marked_and_never_published_as_the_games_score(model_dir, tmp_path, capsys):
    from huggingface_hub import ModelCard

    from scaled_ql.hub.card import eval_results

    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(model_dir), "--episodes", "2", "--games", "Pong",
                 "--max-episode-steps", "20", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "eval.json").read_text())
    pong = results["games"]["Pong"]
    assert pong["capped"] and pong["capped_episodes"] == 2  # Pong never ends in 20 steps
    assert results["aggregate"]["capped_games"] == ["Pong"]
    assert "*" in printed and "capped: episodes cut at 20 agent steps (Pong 2 of 2)" in printed
    assert eval_results(results) == []  # no model-index entry for a capped score

    folder = tmp_path / "upload"
    assert main(["push", "--checkpoint", str(model_dir), "--repo-id", "me/capped", "--dry-run", "--eval",
                 str(out / "eval.json"), "--out", str(folder)]) == 0
    card = ModelCard.load(folder / "README.md")
    assert "Pong (capped)" in card.text and "not full-game scores" in card.text
    assert not card.data.eval_results


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_checkpoint(tmp_path):
    """Two processes (torchrun, gloo on CPU): SIGTERM reaches rank 1 only; both ranks agree,
    write one checkpoint together and stop; the run resumes from it."""
    import time

    from scaled_ql.train.checkpoint import checkpoint_problem, latest_checkpoint

    data = write_synthetic_dataset(tmp_path / "data").path
    common = [f"data.path={data}", "eval.episodes=0", "train.batch_size=8", "train.checkpoint_every=1000000",
              "train.threads=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "scaled_ql.cli",
           "pretrain", "--config", DEBUG, "--no-progress", f"runs_dir={tmp_path / 'runs'}", *common]
    run = tmp_path / "runs" / "debug"
    proc = subprocess.Popen([*cmd, "train.steps=1000000"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (run / "tb").is_dir() and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(2.0)
    workers = []
    for _ in range(50):
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        workers = [int(pid) for pid in children]
        if len(workers) == 2:
            break
        time.sleep(0.1)
    ranks = {}
    for pid in workers:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = next(int(v.split(b"=", 1)[1]) for v in environ if v.startswith(b"RANK="))
        ranks[rank] = pid
    os.kill(ranks[1], signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert "stopped by SIGTERM at step" in err, err[-4000:]
    saved = latest_checkpoint(run)
    assert saved is not None and checkpoint_problem(saved) is None, err[-4000:]
    meta = json.loads((saved / "state" / "trainer.json").read_text())
    assert meta["world_size"] == 2 and len(meta["ranks"]) == 2 and meta["step"] == int(saved.name)
    step = int(saved.name)
    resumed = subprocess.run([*cmd, f"train.steps={step + 2}", "--resume"], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert latest_checkpoint(run).name == f"{step + 2:08d}"


def test_streamed_episodes_with_bad_values_are_refused_naming_row_and_game():
    import pyarrow as pa

    from scaled_ql.data.writer import chunk_to_table
    from scaled_ql.data.shards import iter_whole_episodes

    table = chunk_to_table(episode_chunk(0, DEFAULT_EPISODES[0]))
    rewards = table.column("reward").to_numpy().copy()
    rewards[4] = np.inf
    bad = table.set_column(table.schema.get_field_index("reward"), "reward", pa.array(rewards))
    with pytest.raises(ValueError, match=r"streamed Pong, rows 0 to 6: row 4 \(game Pong\) has reward inf"):
        list(iter_whole_episodes(bad.to_batches(max_chunksize=3), "streamed Pong"))
    actions = table.column("action").to_numpy().copy()
    actions[1] = 40
    bad = table.set_column(table.schema.get_field_index("action"), "action", pa.array(actions))
    with pytest.raises(ValueError, match=r"row 1 \(game Pong\) has action 40"):
        list(iter_whole_episodes(bad.to_batches(), "streamed Pong"))


def test_data_info_names_a_corrupt_file_and_data_verify_reads_parquet(tmp_path, capsys):
    from scaled_ql.data.parquet import export_parquet

    data = write_synthetic_dataset(tmp_path / "data")
    export_parquet(data.path, tmp_path / "parquet")
    assert main(["data", "verify", str(tmp_path / "parquet")]) == 0
    assert "parquet files" in capsys.readouterr().out

    meta = json.loads((data.path / METADATA_FILE).read_text())
    file = data.path / meta["files"][0]["name"]
    raw = bytearray(file.read_bytes())
    raw[-200] ^= 0xFF  # lands in the game names: not UTF-8 any more
    file.write_bytes(bytes(raw))
    assert main(["data", "info", str(data.path)]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert str(file) in err and "corrupt" in err


# ----------------------------------------------------------------------------------------------
# Context rows: an episode joined in progress (DQN-Replay's oldest episode per checkpoint)


def _joined_chunk(context: int = 3, steps: int = 4) -> dict:
    """An episode whose first ``context`` rows (steps -3..-1) are context, then ``steps`` transitions."""
    chunk = episode_chunk(2, DEFAULT_EPISODES[2])  # Pong, T = 8: 9 rows
    rows = context + steps + 1
    chunk = {k: np.asarray(v)[:rows].copy() for k, v in chunk.items()}
    chunk["step"] = np.arange(-context, rows - context, dtype=np.int32)
    chunk["terminal"][:] = False
    chunk["truncated"] = np.arange(rows) == rows - 1
    chunk["action"][-1], chunk["reward"][-1] = 0, 0.0
    return chunk


def test_context_rows_are_stored_counted_apart_and_never_sampled(tmp_path):
    from scaled_ql.data.inspection import dataset_info
    from scaled_ql.data.parquet import export_parquet, import_parquet
    from scaled_ql.data.sampler import Sampler
    from scaled_ql.data.store import ReplayStore
    from tests.fixtures import decode_stack

    meta = write_dataset(tmp_path / "data", [_joined_chunk(), episode_chunk(3, DEFAULT_EPISODES[3])])
    assert meta.games["Pong"] == {**meta.games["Pong"], "rows": 8, "episodes": 1, "steps": 4, "context_rows": 3}
    assert "context rows of an episode joined in progress" in (tmp_path / "data" / "README.md").read_text()
    store = ReplayStore(tmp_path / "data", ["Pong", "Breakout"])
    assert store.valid_starts(0).tolist() == [3, 4, 5, 6]  # not the context rows 0-2, not the last row 7
    batch = Sampler(store, 2, n_step=1, seed=0).batch_at(store.valid_starts(0))
    assert decode_stack(batch.obs[0]) == [(2, 0), (2, 1), (2, 2), (2, 3)]  # real frames, no zero padding
    info = dataset_info(tmp_path / "data")
    assert info["games"]["Pong"]["transitions"] == 4 and info["games"]["Pong"]["context_rows"] == 3
    export_parquet(tmp_path / "data", tmp_path / "parquet")
    back = import_parquet(tmp_path / "parquet", tmp_path / "back")
    assert back.games["Pong"]["context_rows"] == 3 and back.games["Pong"]["steps"] == 4

    with pytest.raises(ValueError, match=r"ends an episode with step 0: after its context rows an episode needs"):
        write_dataset(tmp_path / "bad", [_joined_chunk(3, 0)])
    chunk = _joined_chunk()
    chunk["step"] = chunk["step"] + 5  # starts at step 2: neither 0 nor a context row
    with pytest.raises(ValueError, match=r"row 0 .*has step 2, expected 0"):
        write_dataset(tmp_path / "bad", [chunk])


def test_resume_compares_overrides_as_the_config_reads_them(tmp_path):
    from scaled_ql.config import ConfigError, load_config, resume_config

    cfg = load_config(DEBUG, [f"runs_dir={tmp_path}", "train.lr=0.001"])
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.json").write_text(cfg.to_json())
    resumed, changes = resume_config(cfg, ["train.lr=1e-3", "train.steps=40"])  # YAML reads '1e-3' as a string
    assert changes == ["train.steps: 20 -> 40"] and resumed.train.lr == 0.001 and resumed.train.steps == 40
    with pytest.raises(ConfigError, match=r"'train.lr' cannot change when resuming"):
        resume_config(cfg, ["train.lr=2e-3"])

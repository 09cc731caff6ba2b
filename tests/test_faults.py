"""Faults a hostile but fair user meets (issue 14): each ends in a named error or correct
behaviour, and no data is lost. Real components only (ALE, datasets, safetensors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaled_ql.cli import main
from scaled_ql.data.format import METADATA_FILE, write_dataset
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

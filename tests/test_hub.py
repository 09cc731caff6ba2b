"""Publishing: the upload folder, the card's Hub metadata, and a save -> load round trip."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard

from scaled_ql.cli import main
from scaled_ql.models.loading import load_model
from scaled_ql.hub.card import eval_results
from scaled_ql.hub.push import push_checkpoint


def test_dry_run_folder_card_and_round_trip(tmp_path, debug_run):
    out = tmp_path / "upload"
    report = push_checkpoint(debug_run, "someone/scaled-ql-debug", dry_run=True, out_dir=out)
    files = set(report["files"])
    assert {"model.safetensors", "config.json", "train_config.json", "README.md", "eval.json", "eval.png"} <= files
    assert any(f.startswith("tb/events.out.tfevents") for f in files)

    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "scaled_ql"
    assert {"reinforcement-learning", "offline-rl", "atari"} <= set(data["tags"])
    evaluation = json.loads((out / "eval.json").read_text())
    # The debug run's evaluation cuts episodes at 60 steps: such scores never reach the model-index.
    assert all(evaluation["games"][g]["capped"] for g in ("Pong", "Breakout")) and not card.data.eval_results
    assert "Pong (capped)" in card.text
    # An uncapped evaluation is published per game (the same results, as if played to the end).
    for res in evaluation["games"].values():
        res["capped"] = False
    results = {(r.dataset_type, r.metric_type): r.metric_value for r in eval_results(evaluation)}
    for game in ("Pong", "Breakout"):
        res = evaluation["games"][game]
        assert results[(f"ALE/{game}-v5", "mean_reward")] == f"{res['mean']:.2f} +/- {res['std']:.2f}"
        assert results[(f"ALE/{game}-v5", "human_normalized_score")] == pytest.approx(res["human_normalized"], abs=1e-4)
    assert '"cql_alpha"' in card.text and "MultiGameQNetwork.from_pretrained" in card.text

    original, _ = load_model(debug_run)
    published, _ = load_model(out)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    game = torch.tensor([0, 1, 0])
    assert torch.equal(original(obs, game).q, published(obs, game).q)


def test_push_creates_repo_and_uploads_in_one_commit(tmp_path, debug_run):
    calls = []

    class RecordingApi:  # stands in for the network boundary only
        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs))
            return "https://huggingface.co/someone/x"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return "commit-url"

    report = push_checkpoint(debug_run, "someone/x", private=True, out_dir=tmp_path / "up", api=RecordingApi())
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    assert calls[0][1]["private"] is True and calls[0][1]["exist_ok"] is True
    assert calls[1][1]["folder_path"] == str(tmp_path / "up") and calls[1][1]["repo_id"] == "someone/x"
    assert report["commit"] == "commit-url"


def test_push_cli_dry_run_and_errors(tmp_path, debug_run, capsys):
    assert main(["push", "--checkpoint", str(debug_run), "--repo-id", "a/b", "--dry-run", "--out", str(tmp_path / "o")]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    assert main(["push", "--checkpoint", str(tmp_path / "nothing"), "--repo-id", "a/b", "--dry-run"]) == 2
    assert "nothing" in capsys.readouterr().err
    assert main(["push", "--checkpoint", str(debug_run), "--repo-id", "a/b", "--dry-run", "--out", str(tmp_path / "o")]) == 2
    assert "not empty" in capsys.readouterr().err

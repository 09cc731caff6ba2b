"""Offline fine-tuning from a pretrained checkpoint: new and reused heads, a frozen or slower
backbone, held-out TD error, and the errors a user meets."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scaled_ql.cli import main
from scaled_ql.config import ConfigError, load_config
from scaled_ql.models.loading import load_model
from scaled_ql.train.finetune import finetune_config
from scaled_ql.train.trainer import build_training_state
from tests.conftest import CONFIGS


@pytest.fixture(scope="module")
def boxing_data(tmp_path_factory):
    """A held-out game the debug run never saw, played in real ALE."""
    from data_prep.rollout import collect_dataset

    out = tmp_path_factory.mktemp("boxing") / "data"
    cfg = load_config(CONFIGS / "debug.yaml", ["games=[Boxing]", "prep.steps_per_game=600", "prep.max_episode_steps=40"])
    collect_dataset(cfg, out, progress=False)
    return out


def test_new_game_with_frozen_backbone_and_holdout_td(tmp_path, debug_run, boxing_data):
    runs = tmp_path / "runs"
    assert main(["finetune", "--init", str(debug_run), "--game", "Boxing", "--data", str(boxing_data),
                 "--freeze-backbone", "--no-progress", f"runs_dir={runs}", "train.steps=10", "eval.episodes=0",
                 "data.holdout_fraction=0.3", "train.log_every=5"]) == 0
    run = runs / "finetune-Boxing"
    pretrained = load_file(next((debug_run / "checkpoints").glob("00000020")) / "model" / "model.safetensors")
    tuned = load_file(run / "checkpoints" / "00000010" / "model" / "model.safetensors")
    backbone = [k for k in pretrained if k.startswith("backbone.")]
    assert backbone and all(torch.equal(pretrained[k], tuned[k]) for k in backbone)  # frozen
    model, _ = load_model(run)
    assert model.games == ["Boxing"]
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert {"holdout/td", "holdout/total", "loss/td"} <= set(events.Tags()["scalars"])


def test_known_game_reuses_its_head_and_backbone_lr_is_scaled(tmp_path, debug_run, debug_dataset):
    cfg = finetune_config(str(debug_run), ["Breakout"], debug_dataset, overrides=[f"runs_dir={tmp_path}"],
                          backbone_lr_scale=0.1)
    model, _, optimizer = build_training_state(cfg, torch.device("cpu"))
    pretrained, _ = load_model(debug_run)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    model.eval()
    same = model(obs, torch.zeros(3, dtype=torch.long)).q
    reference = pretrained(obs, torch.full((3,), pretrained.games.index("Breakout"))).q[:, : same.shape[1]]
    torch.testing.assert_close(same, reference)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([cfg.train.lr * 0.1, cfg.train.lr])


def test_architecture_mismatch_names_the_key(tmp_path, debug_run, debug_dataset, capsys):
    assert main(["finetune", "--init", str(debug_run), "--game", "Pong", "--data", str(debug_dataset),
                 "--config", str(CONFIGS / "debug.yaml"), f"runs_dir={tmp_path}", "model.feature_dim=32",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "finetune.init" in err and "model.feature_dim: pretrained 64, this config 32" in err
    with pytest.raises(ConfigError, match="holdout_fraction"):
        finetune_config(str(debug_run), ["Pong"], debug_dataset, overrides=["data.holdout_fraction=1.5"])


def test_compare_draws_runs_side_by_side(tmp_path, debug_run, capsys):
    import json

    other = tmp_path / "scratch"
    assert main(["pretrain", "--config", str(CONFIGS / "debug.yaml"), "--no-progress", f"runs_dir={tmp_path}",
                 "name=scratch", f"data.path={load_config_json_path(debug_run)}", "eval.episodes=0"]) == 0
    out = tmp_path / "cmp.png"
    assert main(["compare", str(debug_run), str(other), "--out", str(out)]) == 0
    assert out.stat().st_size > 5000
    drawn = json.loads(out.with_suffix(".json").read_text())
    assert set(drawn["q/data"]) == {"debug", "scratch"} and "eval_return/Pong" in drawn
    assert main(["compare", str(tmp_path / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err


def load_config_json_path(run) -> str:
    import json

    return json.loads((run / "config.json").read_text())["data"]["path"]

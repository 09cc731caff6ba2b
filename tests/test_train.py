"""The training loop: a smoke run, exact resume (also after kill -9), atomic checkpoints,
the NaN guard and clear errors on bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scaled_ql.config import ConfigError, TrainConfig
from scaled_ql.train import trainer as trainer_mod
from scaled_ql.train.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints
from scaled_ql.train.step import lr_factor
from scaled_ql.train.trainer import NonFiniteLossError, pretrain
from tests.conftest import debug_config


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(ckpt / "model" / "model.safetensors")


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_smoke_run_leaves_checkpoints_tensorboard_and_eval(tmp_path, debug_dataset):
    cfg = debug_config(tmp_path, f"data.path={debug_dataset}", "train.eval_every=10")
    result = pretrain(cfg, progress=False)
    run = result.run_dir
    assert (run / "eval" / "step_00000010" / "eval.json").is_file()  # periodic evaluation
    assert result.step == cfg.train.steps
    assert [p.name for p in list_checkpoints(run)] == ["00000010", "00000020"]
    ckpt = latest_checkpoint(run)
    for name in ("model/config.json", "model/model.safetensors", "model/train_config.json",
                 "state/target.safetensors", "state/optimizer.safetensors", "state/rng.safetensors", "state/trainer.json"):
        assert (ckpt / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == cfg.train.steps
    assert list((run / "tb").glob("events.out.tfevents.*"))
    evaluation = json.loads((run / "eval" / "final" / "eval.json").read_text())
    assert set(evaluation["games"]) == {"Pong", "Breakout"}
    assert (run / "eval" / "final" / "eval.png").stat().st_size > 1000
    assert set(evaluation["games"]["Pong"]) >= {"returns", "mean", "q_start"}  # what it gets, what it believes
    assert (run / "curves.png").stat().st_size > 5000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("loss/td", "loss/cql", "loss/dr3", "q/data", "q/pi", "q_data_per_game/Pong", "q_data_per_game/Breakout",
                "eval_return/Pong", "eval_q_start/Pong", "perf/updates_per_s"):
        assert tag in tags, tag
    assert [e.step for e in events.Scalars("loss/td")] == [5, 10, 15, 20]
    trainer_state = json.loads((ckpt / "state" / "trainer.json").read_text())
    assert trainer_state["step"] == 20 and trainer_state["world_size"] == 1 and "sampler" in trainer_state["ranks"][0]


# A scheduled learning rate with its decay horizon fixed (lr_decay_steps), so the run stopped at 10
# updates and resumed to 20 follows the same schedule as the uninterrupted one.
_COSINE = ("train.lr_schedule=cosine", "train.lr_warmup_steps=4", "train.lr_decay_steps=20", "train.lr_final_ratio=0.2")


@pytest.mark.parametrize("extra", [("train.augment=none",), ("train.augment=shift",), _COSINE], ids=["plain", "shift", "cosine-lr"])
def test_resume_is_bitwise_exact(tmp_path, debug_dataset, extra):
    common = [f"data.path={debug_dataset}", "eval.episodes=0", *extra]
    full = pretrain(debug_config(tmp_path / "a", *common), progress=False)
    pretrain(debug_config(tmp_path / "b", *common, "train.steps=10"), progress=False)
    resumed = pretrain(debug_config(tmp_path / "b", *common), resume=True, progress=False)
    assert resumed.step == 20
    _assert_same(_weights(full.checkpoint), _weights(resumed.checkpoint))
    _assert_same(load_file(full.checkpoint / "state" / "target.safetensors"),
                 load_file(resumed.checkpoint / "state" / "target.safetensors"))
    _assert_same(load_file(full.checkpoint / "state" / "optimizer.safetensors"),
                 load_file(resumed.checkpoint / "state" / "optimizer.safetensors"))


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted(tmp_path, debug_dataset):
    common = [f"data.path={debug_dataset}", "eval.episodes=0", "train.steps=60", "train.checkpoint_every=5"]
    full = pretrain(debug_config(tmp_path / "a", *common), progress=False)

    cmd = [sys.executable, "-m", "scaled_ql.cli", "pretrain", "--config", "configs/debug.yaml", "--no-progress",
           f"runs_dir={tmp_path / 'b' / 'runs'}", *common]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = tmp_path / "b" / "runs" / "debug"
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(run)) < 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = latest_checkpoint(run)
    assert killed_at is not None and int(killed_at.name) < 60, proc.stderr.read().decode()[-2000:]

    resumed = pretrain(debug_config(tmp_path / "b", *common), resume=True, progress=False)
    _assert_same(_weights(full.checkpoint), _weights(resumed.checkpoint))


def test_kill_during_save_keeps_previous_checkpoint(tmp_path, debug_dataset, monkeypatch):
    cfg = debug_config(tmp_path, f"data.path={debug_dataset}", "eval.episodes=0")
    from scaled_ql.train import checkpoint as ckpt_mod

    real_save_file = ckpt_mod.save_file
    calls = {"n": 0}

    def dying_save_file(tensors, path, *a, **k):
        calls["n"] += 1
        if "optimizer" in str(path) and calls["n"] > 4:  # the second checkpoint dies mid-write
            raise KeyboardInterrupt("simulated kill during checkpoint write")
        return real_save_file(tensors, path, *a, **k)

    monkeypatch.setattr(ckpt_mod, "save_file", dying_save_file)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, progress=False)
    run = cfg.run_dir
    assert any(p.name.startswith(".tmp-") for p in (run / "checkpoints").iterdir())
    assert [p.name for p in list_checkpoints(run)] == ["00000010"]  # the partial one is ignored
    monkeypatch.setattr(ckpt_mod, "save_file", real_save_file)
    resumed = pretrain(cfg, resume=True, progress=False)
    assert resumed.step == 20
    assert not any(p.name.startswith(".tmp-") for p in (run / "checkpoints").iterdir())  # cleaned by the next save


def test_nan_loss_stops_with_step_and_last_good_checkpoint(tmp_path, debug_dataset, monkeypatch):
    cfg = debug_config(tmp_path, f"data.path={debug_dataset}", "eval.episodes=0", "train.checkpoint_every=5")
    real_step = trainer_mod.train_step
    count = {"n": 0}

    def poisoned_step(*args, **kwargs):
        metrics = real_step(*args, **kwargs)
        count["n"] += 1
        if count["n"] == 7:
            metrics["loss/total"] = torch.tensor(float("nan"))
        return metrics

    monkeypatch.setattr(trainer_mod, "train_step", poisoned_step)
    with pytest.raises(NonFiniteLossError, match=r"nan at step 7.*checkpoints/00000005"):
        pretrain(cfg, progress=False)
    assert [p.name for p in list_checkpoints(cfg.run_dir)] == ["00000005"]
    _weights(latest_checkpoint(cfg.run_dir))  # loadable


def test_resume_with_incompatible_config_names_the_key(tmp_path, debug_dataset):
    pretrain(debug_config(tmp_path, f"data.path={debug_dataset}", "eval.episodes=0", "train.steps=10"), progress=False)
    with pytest.raises(CheckpointError, match=r"model.feature_dim: checkpoint has 64, config has 32"):
        pretrain(debug_config(tmp_path, f"data.path={debug_dataset}", "eval.episodes=0", "model.feature_dim=32"),
                 resume=True, progress=False)


def test_existing_run_without_resume_is_refused(tmp_path, debug_dataset):
    cfg = debug_config(tmp_path, f"data.path={debug_dataset}", "eval.episodes=0", "train.steps=10")
    pretrain(cfg, progress=False)
    with pytest.raises(ConfigError, match="already holds checkpoints.*--resume"):
        pretrain(cfg, progress=False)


def test_missing_dataset_fails_before_any_work(tmp_path):
    cfg = debug_config(tmp_path, f"data.path={tmp_path / 'nowhere'}")
    with pytest.raises(Exception, match="nowhere"):
        pretrain(cfg, progress=False)
    assert not cfg.run_dir.exists()


def test_frame_size_mismatch_names_dataset_and_key(tmp_path, debug_dataset):
    cfg = debug_config(tmp_path, f"data.path={debug_dataset}", "env.frame_size=64")
    with pytest.raises(ConfigError, match=r"frames of shape \(84, 84\).*env.frame_size"):
        pretrain(cfg, progress=False)
    assert not cfg.run_dir.exists()


def test_gradient_accumulation_draws_micro_batches_per_update(tmp_path, debug_dataset):
    cfg = debug_config(tmp_path, f"data.path={debug_dataset}", "eval.episodes=0", "train.steps=6",
                       "train.checkpoint_every=6", "dist.grad_accum=2")
    result = pretrain(cfg, progress=False)
    state = json.loads((result.checkpoint / "state" / "trainer.json").read_text())
    assert result.step == 6 and state["ranks"][0]["sampler"]["batches_drawn"] == 12
    assert state["ranks"][0]["sampler"]["batch_size"] == cfg.train.batch_size // 2


def test_shift_augmentation_changes_what_the_network_learns(tmp_path, debug_dataset):
    common = [f"data.path={debug_dataset}", "eval.episodes=0", "train.steps=5"]
    plain = pretrain(debug_config(tmp_path / "a", *common), progress=False)
    shifted = pretrain(debug_config(tmp_path / "b", *common, "train.augment=shift"), progress=False)
    a, b = _weights(plain.checkpoint), _weights(shifted.checkpoint)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_baselines_put_random_data_and_learned_side_by_side(tmp_path, debug_dataset, capsys):
    from scaled_ql.data.store import ReplayStore

    cfg = debug_config(tmp_path, f"data.path={debug_dataset}", "eval.baselines=true", "train.steps=4",
                       "eval.episodes=2", "eval.max_episode_steps=20")
    result = pretrain(cfg, progress=False)
    store = ReplayStore(debug_dataset, cfg.games)
    whole = store.episode_returns(cfg.prep.max_episode_steps)
    for game in cfg.games:
        res = result.eval_results["games"][game]
        assert res["random_mean"] is not None and res["data_mean"] == pytest.approx(float(whole[game].mean()))
        assert "q_start" in res and "discounted_mean" in res
    saved = json.loads((result.run_dir / "eval" / "final" / "eval.json").read_text())
    assert "random_mean" in saved["games"]["Pong"]
    out = capsys.readouterr()
    assert "what it learned" in out.out and "beats data" in out.out and "thinks Q(s0)" in out.out


def test_episode_returns_leave_out_episodes_the_budget_cut_short(tmp_path):
    from tests.fixtures import write_synthetic_dataset

    from scaled_ql.data.store import ReplayStore

    data = write_synthetic_dataset(tmp_path / "d")
    store = ReplayStore(data.path, data.games)
    every = store.episode_returns()
    assert every["Pong"].tolist() == [2.0, 2.0, 0.0] and every["Breakout"].tolist() == [5.0, 7.0, 3.0]
    # Terminal episodes always count; truncated ones only when they ran the full length (here 7 steps).
    assert store.episode_returns(7)["Pong"].tolist() == [2.0, 0.0] and store.episode_returns(7)["Breakout"].tolist() == [5.0, 7.0, 3.0]


@pytest.mark.slow
def test_compiled_training_keeps_the_checkpoint_and_the_numbers(tmp_path, debug_dataset):
    """``train.compile=true`` compiles the networks in place: the same parameter names in the
    checkpoint (loadable by the uncompiled network) and the same updates within float tolerance."""
    common = (f"data.path={debug_dataset}", "eval.episodes=0", "train.steps=6", "train.checkpoint_every=6")
    runs = [pretrain(debug_config(tmp_path / name, *common, f"train.compile={flag}"), progress=False)
            for name, flag in (("eager", "false"), ("compiled", "true"))]
    eager, compiled = (_weights(latest_checkpoint(r.run_dir)) for r in runs)
    assert eager.keys() == compiled.keys() and not any("_orig_mod" in k for k in compiled)
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-3, atol=1e-4, msg=key)


def test_learning_rate_schedules_warm_up_then_decay_to_their_final_rate():
    cosine = TrainConfig(steps=100, lr_schedule="cosine", lr_warmup_steps=10, lr_final_ratio=0.1)
    assert [lr_factor(k, cosine) for k in (0, 4, 9)] == [0.1, 0.5, 1.0]  # linear warm-up, full rate at its end
    assert lr_factor(10, cosine) == 1.0 and lr_factor(55, cosine) == pytest.approx(0.55)  # half-way: the mean
    assert lr_factor(100, cosine) == pytest.approx(0.1) and lr_factor(500, cosine) == pytest.approx(0.1)  # held after
    linear = TrainConfig(steps=100, lr_schedule="linear", lr_decay_steps=50, lr_final_ratio=0.0)
    assert [lr_factor(k, linear) for k in (0, 25, 50, 99)] == [1.0, 0.5, 0.0, 0.0]
    assert all(lr_factor(k, TrainConfig(steps=100)) == 1.0 for k in range(100))
    with pytest.raises(ConfigError, match="train.lr_schedule.*'constant', 'linear' or 'cosine'.*'step'"):
        TrainConfig(lr_schedule="step")


def test_scheduled_learning_rate_is_logged_and_changes_the_updates(tmp_path, debug_dataset):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scheduled = pretrain(debug_config(tmp_path / "a", f"data.path={debug_dataset}", "eval.episodes=0", *_COSINE), progress=False)
    events = EventAccumulator(str(scheduled.checkpoint.parent.parent / "tb")).Reload()
    lrs = {e.step: e.value for e in events.Scalars("train/lr")}  # the rate of the update just taken
    train = debug_config(tmp_path / "c", *_COSINE).train
    assert sorted(lrs) == [5, 10, 15, 20] and all(v == pytest.approx(train.lr * lr_factor(s - 1, train)) for s, v in lrs.items())
    assert train.lr * 0.2 < lrs[20] < lrs[15] < lrs[10] < lrs[5] and lrs[5] == pytest.approx(train.lr)  # warm-up over, decaying
    constant = pretrain(debug_config(tmp_path / "b", f"data.path={debug_dataset}", "eval.episodes=0"), progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(_weights(scheduled.checkpoint).values(), _weights(constant.checkpoint).values()))

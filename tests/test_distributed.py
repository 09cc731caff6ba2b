"""Real multi-process training on CPU over gloo: DDP equals one process, DeepSpeed ZeRO-1 and -2
train, checkpoint and resume exactly, a run saved by 2 processes resumes on 1, and a finished run
exits with its own status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scaled_ql.train.checkpoint import latest_checkpoint
from scaled_ql.train.trainer import pretrain
from tests.conftest import debug_config

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N ARGS`` from the repository root, one thread per process."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def launch(nproc: int, tmp: Path, *overrides: str, resume: bool = False) -> None:
    """``torchrun --standalone --nproc_per_node N -m scaled_ql.cli pretrain`` as a user runs it."""
    proc = torchrun(nproc, "-m", "scaled_ql.cli", "pretrain", "--config", "configs/debug.yaml", "--no-progress",
                    f"runs_dir={tmp / 'runs'}", *overrides, *(["--resume"] if resume else []))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "terminate called" not in proc.stderr


def scalars(run: Path, tag: str) -> list[float]:
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(latest_checkpoint(run) / "model" / "model.safetensors")


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("dr3", ["0.03", "0"])  # 0: the online network reads s' in a pass of its own, without gradient
def test_two_process_ddp_matches_one_process(tmp_path, debug_dataset, dr3):
    common = [f"data.path={debug_dataset}", "eval.episodes=0", "train.steps=8", "train.batch_size=8",
              "train.log_every=1", "train.checkpoint_every=8", "train.lr=1e-3", f"loss.dr3_coef={dr3}"]
    one = pretrain(debug_config(tmp_path / "one", *common), progress=False)
    launch(2, tmp_path / "two", *common)
    two = tmp_path / "two" / "runs" / "debug"
    assert_close(weights(one.run_dir), weights(two))
    for tag in ("loss/total", "loss/td", "loss/cql", "loss/dr3", "q/data"):
        torch.testing.assert_close(torch.tensor(scalars(two, tag)), torch.tensor(scalars(one.run_dir, tag)), rtol=1e-4, atol=1e-5)
    import json

    saved = json.loads((two / "config.json").read_text())
    assert saved["dist"]["world_size"] == 2 and saved["dist"]["mixed_precision"] == "no"


def test_saved_by_two_processes_resumes_on_one(tmp_path, debug_dataset):
    common = [f"data.path={debug_dataset}", "eval.episodes=0", "train.batch_size=8", "train.checkpoint_every=5", "train.lr=1e-3"]
    full = pretrain(debug_config(tmp_path / "full", *common, "train.steps=10"), progress=False)
    launch(2, tmp_path / "split", *common, "train.steps=5")
    resumed = pretrain(debug_config(tmp_path / "split", *common, "train.steps=10"), resume=True, progress=False)
    assert resumed.step == 10
    assert_close(weights(full.run_dir), weights(resumed.run_dir))


@pytest.mark.parametrize("stage", [1, 2])
def test_deepspeed_zero_trains_checkpoints_and_resumes(tmp_path, stage):
    from tests.fixtures import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data").path  # a fixed small dataset the network can fit
    common = [f"data.path={data}", "eval.episodes=0", "train.batch_size=8", "dist.backend=deepspeed",
              f"dist.zero_stage={stage}", "train.log_every=2", "train.checkpoint_every=10", "train.lr=1e-3",
              "loss.cql_alpha=1.0"]
    if stage == 2:  # a scheduled learning rate, set on the ZeRO optimizer's own parameter groups
        common += ["train.lr_schedule=linear", "train.lr_decay_steps=50", "train.lr_final_ratio=0.5"]
    launch(2, tmp_path, *common, "train.steps=40")
    run = tmp_path / "runs" / "debug"
    state = latest_checkpoint(run) / "state"
    assert (state / "optimizer_rank0.safetensors").is_file() and (state / "optimizer_rank1.safetensors").is_file()
    losses = scalars(run, "loss/total")
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses

    launch(2, tmp_path, *common, "train.steps=50", resume=True)
    assert latest_checkpoint(run).name == "00000050"
    assert len(scalars(run, "loss/total")) == 25  # 40 steps, then 10 more after the resume, logged every 2
    # The ZeRO partitions go through the optimizer's public state_dict / load_state_dict with the fp32
    # master weights: the resumed run is the uninterrupted one, bit for bit.
    launch(2, tmp_path / "straight", *common, "train.steps=50")
    resumed, straight = weights(run), weights(tmp_path / "straight" / "runs" / "debug")
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in resumed)
    if stage == 2:
        lrs = scalars(run, "train/lr")
        assert lrs[0] > lrs[-1] == pytest.approx(1e-3 * (1 - 0.5 * 49 / 50), rel=1e-5), lrs


def test_fsdp_on_cpu_is_refused_with_the_key_named(tmp_path, debug_dataset):
    from scaled_ql.config import ConfigError

    with pytest.raises(ConfigError, match=r"dist.backend.*fsdp.*GPUs only"):
        pretrain(debug_config(tmp_path, f"data.path={debug_dataset}", "dist.backend=fsdp", "train.device=cpu"), progress=False)


def test_deepspeed_on_cpu_without_a_launcher_says_how_to_launch(tmp_path, debug_dataset, monkeypatch):
    from scaled_ql.config import ConfigError

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match=r"dist.backend.*'deepspeed'.*WORLD_SIZE is unset.*torchrun"):
        pretrain(debug_config(tmp_path, f"data.path={debug_dataset}", "dist.backend=deepspeed", "train.device=cpu"), progress=False)
    assert "ACCELERATE_USE_DEEPSPEED" not in os.environ


_SEVERAL_RUNS = '''
import gc, os, sys
from scaled_ql.config import load_config
from scaled_ql.train.parallel import end_program
from scaled_ql.train.trainer import pretrain

for backend in ("deepspeed", "ddp"):
    pretrain(load_config("configs/debug.yaml", [*sys.argv[1:], f"name={backend}", f"dist.backend={backend}"]), progress=False)
    gc.collect()
    alive = sorted({type(o).__name__ for o in gc.get_objects() if type(o).__name__ in ("DeepSpeedEngine", "MultiGameQNetwork")})
    print(backend, "alive:", alive, "flag:", os.environ.get("ACCELERATE_USE_DEEPSPEED"), flush=True)
end_program(0)
'''


def test_runs_in_one_process_release_their_network_and_leave_the_environment(tmp_path, debug_dataset):
    """A sweep or a notebook trains several times in one process: each run frees its network and
    optimizer (DeepSpeed's engine holds itself through its hooks until destroyed), and a DeepSpeed
    run leaves no launcher flag behind for the next run's backend."""
    program = tmp_path / "several.py"
    program.write_text(_SEVERAL_RUNS)
    proc = torchrun(1, str(program), f"runs_dir={tmp_path / 'runs'}", f"data.path={debug_dataset}", "eval.episodes=0",
                    "train.steps=4", "train.batch_size=8")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "deepspeed alive: [] flag: None" in proc.stdout and "ddp alive: [] flag: None" in proc.stdout, proc.stdout


def test_launcher_and_config_disagreement_names_both(tmp_path, debug_dataset, monkeypatch):
    from scaled_ql.config import ConfigError

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match=r"ACCELERATE_USE_DEEPSPEED=true.*dist.backend.*'ddp'"):
        pretrain(debug_config(tmp_path, f"data.path={debug_dataset}"), progress=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError, match=r"dist.world_size.*is 2 but the launcher started 1"):
        pretrain(debug_config(tmp_path, f"data.path={debug_dataset}", "dist.world_size=2"), progress=False)
    with pytest.raises(ConfigError, match=r"train.batch_size.*\(6, the global batch\).*2 games"):
        pretrain(debug_config(tmp_path, f"data.path={debug_dataset}", "train.batch_size=6", "dist.grad_accum=2"), progress=False)


_PROGRAM = '''
import atexit, sys, threading, torch
from scaled_ql.cli import main

def busy():  # a thread in torch ops when the interpreter shuts down, as gloo's workers can be
    a = torch.ones(1000)
    while True:
        a + a

@atexit.register
def at_exit():
    print("exit handlers ran", flush=True)
    threading.Thread(target=busy, daemon=True).start()

as_program = sys.argv[1] == "program"
sys.argv = ["scaled-ql", *sys.argv[2:]]
sys.exit(main() if as_program else main(sys.argv[1:]))
'''


def test_a_finished_multi_process_run_exits_with_its_own_status(tmp_path, debug_dataset):
    """After a process group, gloo's worker threads outlive destroy_process_group (DDP and DeepSpeed
    hold the group), and one still freeing a collective's tensor when the interpreter shuts down
    aborts the process after the run is done (SIGABRT, the launcher reports a failure). The CLI's
    program entry leaves without that teardown. A thread in torch ops at exit stands in for such a
    worker: under a plain interpreter exit it aborts the process every time."""
    program = tmp_path / "program.py"
    program.write_text(_PROGRAM)

    def run(mode: str, name: str) -> subprocess.CompletedProcess:
        return torchrun(2, str(program), mode, "pretrain", "--config", "configs/debug.yaml", "--no-progress",
                        f"runs_dir={tmp_path / 'runs'}", f"name={name}", f"data.path={debug_dataset}", "eval.episodes=0",
                        "train.steps=4", "train.batch_size=8")

    if sys.version_info < (3, 14):  # from 3.14 CPython hangs such a thread instead of ending it (gh-87135): no abort
        plain = run("function", "plain")  # main(argv) returns to a caller; this one then exits the usual way
        assert plain.returncode != 0 and "terminate called without an active exception" in plain.stderr, plain.stderr[-3000:]
    ended = run("program", "ended")
    assert ended.returncode == 0, ended.stdout[-3000:] + ended.stderr[-3000:]
    assert "terminate called" not in ended.stderr
    assert ended.stdout.count("exit handlers ran") == 2 and ended.stdout.count("run folder:") == 2, ended.stdout
    assert latest_checkpoint(tmp_path / "runs" / "ended").name == "00000004"

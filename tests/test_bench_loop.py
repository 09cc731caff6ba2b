"""The loop, evaluation and GPU benchmarks run the real loop and report what a user reads from
them: phases that add up to the wall time, a floor from counted FLOPs, the ratio to the
environments alone, and the GPU report's figures (its small CPU version)."""

from __future__ import annotations

import json

import pytest

from benchmarks.gpu import PEAK_BF16, bench_gpu, peak_tflops
from scaled_ql.cli import main

DEBUG = "configs/debug.yaml"
pytestmark = pytest.mark.slow


def test_bench_loop_times_pretrains_loop_phase_by_phase(capsys):
    assert main(["bench", "loop", "--config", DEBUG, "--steps", "12", "--warmup", "3", "train.log_every=4",
                 "train.checkpoint_every=6"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["updates"] == 12 and report["updates_per_s"] > 0
    phases = report["ms_per_update"]
    assert {"sample", "forward", "backward", "optimizer", "log", "checkpoint", "other"} <= set(phases)
    # The phases and the rest account for the wall time of the counted updates.
    assert sum(phases.values()) * report["updates"] / 1000 == pytest.approx(report["wall_s"], rel=0.02)
    floor = report["floor"]
    assert floor["gflops_per_update"] > 0 and report["matmul"]["gflops_per_s"] > 0
    assert floor["ratio_to_floor"] == pytest.approx(report["updates_per_s"] / floor["floor_updates_per_s"], rel=0.01)
    assert report["processes"] == 1 and report["mixed_precision"] == "no" and report["accelerate_wraps_model"] is False


@pytest.mark.ale
def test_bench_eval_sets_the_agent_beside_the_environments_alone(capsys):
    assert main(["bench", "eval", "--config", DEBUG, "--seconds", "1", "eval.num_envs=2"]) == 0
    report = json.loads(capsys.readouterr().out)
    for game, row in report["games"].items():
        assert row["env_only_steps_per_s"] > 0 and row["agent_steps_per_s"] > 0, game
        assert row["ratio"] == pytest.approx(row["agent_steps_per_s"] / row["env_only_steps_per_s"], rel=0.01)


def test_bench_gpu_runs_small_on_cpu_and_reports_each_figure():
    report = bench_gpu(small=True, steps=2)
    assert report["device"] == "cpu" and report["peak_bf16_tflops"] is None  # no invented peak: no MFU on a CPU
    assert set(report["models"]) == {"nature", "resnet101-c51"}
    for name, model in report["models"].items():
        for layout in ("channels_last", "channels_first"):
            row = model[layout]
            assert row["samples_per_s"] == pytest.approx(row["updates_per_s"] * report["batch_size"], rel=0.01)
            assert row["tflops_per_update"] > 0 and row["mfu"] is None
        assert model["phases_ms_per_update"]["forward"] > 0
        assert model["torchrun_1_process"]["processes"] == 1 and model["torchrun_1_process"]["updates_per_s"] > 0
    assert report["models"]["resnet101-c51"]["value"] == "c51"


def test_device_peaks_are_matched_by_name():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == ("H100", PEAK_BF16["H100"])
    assert peak_tflops("NVIDIA H100 PCIe") == ("H100 PCIe", 756.0)
    assert peak_tflops("NVIDIA H200") == ("H200", 989.4) and peak_tflops("NVIDIA A100-SXM4-80GB")[0] == "A100"
    assert peak_tflops("Tesla T4") is None

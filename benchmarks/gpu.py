"""The GPU figures in one command (``python -m benchmarks gpu``; ``scaled-ql bench gpu``).

For the Nature CNN (scalar Q) and ResNet-101 with C51 heads, at batch 512 on a GPU, ``pretrain``'s
own loop on a synthetic memory-mapped dataset (the sampler in the loop, frames uint8 until the
device, bf16 autocast, the prefetch thread and its copy stream):

- samples/s and updates/s of the loop as it runs (no added synchronization);
- achieved TFLOP/s (the FLOPs of one real update, counted by ``torch.utils.flop_counter`` on the
  device, times updates/s) and MFU against the device's peak dense bf16 rate (:data:`PEAK_BF16`);
- the time per phase, from a second, shorter run that synchronizes the device at every phase
  boundary (:class:`scaled_ql.train.phases.PhaseClock`);
- ``channels_last`` on and off, since whether it helps the GPU's convolutions is measured, not assumed;
- the same loop launched as one process by ``torchrun`` through accelerate, to show the
  launcher's and wrapper's cost (accelerate wraps a model in DDP only with more than one process;
  the report says whether it did).

Without a GPU it runs the same code smaller on the CPU (``small``), which is how it is tested.
Nothing here invents a figure: a missing device peak leaves MFU out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.loop import bench_loop
from benchmarks.speed import write_benchmark_dataset

ROOT = Path(__file__).resolve().parent.parent

PEAK_BF16 = {"H200": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "A100": 312.0}
"""Dense bf16 tensor-core peak in TFLOP/s by device name (NVIDIA's data sheets; without sparsity).
``H100`` alone is the SXM part; the first key contained in the device's name wins."""

GAMES = ("Pong", "Breakout")

MODELS = {
    "nature": ("model.backbone=nature", "model.value=scalar"),
    "resnet101-c51": ("model.backbone=resnet101", "model.value=c51"),
}


def peak_tflops(device_name: str) -> tuple[str, float] | None:
    """(key, dense bf16 TFLOP/s) of the device, or None when it is not in :data:`PEAK_BF16`."""
    for key, peak in PEAK_BF16.items():
        if key in device_name:
            return key, peak
    return None


def bench_gpu(*, small: bool | None = None, steps: int | None = None, models: tuple[str, ...] = tuple(MODELS)) -> dict[str, Any]:
    """Run the GPU benchmark (see the module); ``small`` (default: when no GPU is present) runs it
    on the CPU with small batches and networks so its code is exercised."""
    cuda = torch.cuda.is_available()
    small = not cuda if small is None else small
    steps = steps or (5 if small else 100)
    batch = 4 if small else 512
    device_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = peak_tflops(device_name) if cuda else None
    report: dict[str, Any] = {"benchmark": "gpu", "device": device_name, "small": small, "batch_size": batch,
                              "peak_bf16_tflops": peak[1] if peak else None, "peak_source": peak[0] if peak else None,
                              "torch": torch.__version__, "models": {}}
    with tempfile.TemporaryDirectory(prefix="scaled_ql_gpu_") as tmp:
        data = write_benchmark_dataset(Path(tmp) / "data", GAMES, rows_per_game=2_000 if small else 20_000)
        common = [f"games=[{', '.join(GAMES)}]", f"train.batch_size={batch}", "train.log_every=50", "train.checkpoint_every=100000",
                  "train.device=cuda" if cuda else "train.device=cpu", *(["model.width=1", "model.feature_dim=32"] if small else [])]
        for name in models:
            overrides = [*common, *MODELS[name]]
            if small and name != "nature":
                overrides.append("model.backbone=resnet18")  # the ResNet path, at a size a CPU test affords
            runs = {}
            for channels_last in (True, False):
                o = [*overrides, f"train.channels_last={str(channels_last).lower()}"]
                run = bench_loop(None, o, data=data, steps=steps, warmup=max(2, steps // 5), sync=False, flops=True)
                runs["channels_last" if channels_last else "channels_first"] = _throughput(run, batch, peak)
            phased = bench_loop(None, [*overrides, "train.channels_last=true"], data=data, steps=max(2, steps // 2),
                                warmup=max(2, steps // 5), sync=True, flops=False)
            report["models"][name] = {
                "backbone": phased["backbone"], "value": phased["value"], **runs,
                "phases_ms_per_update": phased["ms_per_update"], "phases_device_synchronized": phased["device_synchronized"],
                "torchrun_1_process": _torchrun_one(overrides, data, steps, batch, peak),
            }
    return report


def _throughput(run: dict[str, Any], batch: int, peak: tuple[str, float] | None) -> dict[str, Any]:
    ups = run["updates_per_s"] or 0.0
    out = {"updates_per_s": ups, "samples_per_s": round(ups * batch, 1), "mixed_precision": run.get("mixed_precision")}
    flops = run.get("flops_per_update")
    if flops:
        achieved = flops * ups / 1e12
        out.update(tflops_per_update=round(flops / 1e12, 4), achieved_tflops=round(achieved, 2),
                   mfu=round(achieved / peak[1], 4) if peak else None)
    return out


def _torchrun_one(overrides: list[str], data: Path, steps: int, batch: int, peak: tuple[str, float] | None) -> dict[str, Any]:
    """The loop under ``torchrun --standalone --nproc_per_node 1``, as a cluster job launches it."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "benchmarks", "loop",
           "--data", str(data), "--steps", str(steps), "--warmup", str(max(2, steps // 5)), "--no-sync", "--no-flops",
           *overrides, "train.channels_last=true"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"bench gpu: the torchrun run failed:\n{proc.stderr[-3000:]}")
    text = proc.stdout
    run = json.loads(text[text.index("{"): text.rindex("}") + 1])
    return {**_throughput(run, batch, peak), "processes": run["processes"], "accelerate_wraps_model": run["accelerate_wraps_model"]}

"""The launch recipes in launch/: accelerate configs, DeepSpeed JSONs, torchrun and SLURM scripts.

Nothing here trains. Each accelerate config is loaded with accelerate's own loader and then
resolved, through the functions `accelerate launch` itself calls, into the environment the
trainer would see (ACCELERATE_* and the process count), which must agree with the ``dist.*``
overrides launch/README.md pairs it with. The DeepSpeed JSONs go through accelerate's
DeepSpeedPlugin and DeepSpeed's own config parser. The shell scripts run in DRY_RUN mode with
fake ``scontrol``/``srun``/``accelerate`` on PATH. One slow test starts two real CPU processes
with the 2-CPU config (a probe script, not training).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
ACCEL = LAUNCH / "accelerate"
README = (LAUNCH / "README.md").read_text()

# What each accelerate config must be, and the dist.* overrides the README pairs it with.
EXPECTED = {
    "1gpu.yaml": dict(distributed_type="NO", num_processes=1, mixed_precision="bf16", use_cpu=False,
                      dist=""),
    "2cpu_ddp.yaml": dict(distributed_type="MULTI_GPU", num_processes=2, mixed_precision="no", use_cpu=True,
                          dist=""),
    "8gpu_ddp.yaml": dict(distributed_type="MULTI_GPU", num_processes=8, mixed_precision="bf16", use_cpu=False,
                          dist=""),
    "8gpu_deepspeed_zero1.yaml": dict(distributed_type="DEEPSPEED", num_processes=8, mixed_precision="bf16",
                                      use_cpu=False, dist="dist.backend=deepspeed dist.zero_stage=1"),
    "8gpu_deepspeed_zero2.yaml": dict(distributed_type="DEEPSPEED", num_processes=8, mixed_precision="bf16",
                                      use_cpu=False, dist="dist.backend=deepspeed dist.zero_stage=2"),
    "8gpu_fsdp.yaml": dict(distributed_type="FSDP", num_processes=8, mixed_precision="bf16", use_cpu=False,
                           dist="dist.backend=fsdp"),
}


@pytest.fixture(autouse=True)
def _clean_launcher_env(monkeypatch):
    """No ACCELERATE_* / torchrun variables from the shell running the tests leak into the checks."""
    for key in list(os.environ):
        if key.startswith(("ACCELERATE_", "FSDP_")) or key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            monkeypatch.delenv(key)
    # Without --config_file, accelerate would read the machine's own default config.
    import accelerate.commands.launch as launch_module

    monkeypatch.setattr(launch_module, "default_config_file", str(ROOT / "no-such-default-config.yaml"))


def resolve_launch(argv: list[str]):
    """What ``accelerate launch <argv>`` would start, without starting it: (args, environment).

    Follows ``accelerate.commands.launch.launch_command``'s dispatch and calls the same
    functions it calls to build each launcher's environment.
    """
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import (
        prepare_deepspeed_cmd_env,
        prepare_multi_gpu_env,
        prepare_simple_launcher_cmd_env,
    )

    args = launch_command_parser().parse_args(argv)
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed and not args.cpu:
        fields = list(defaults.deepspeed_config) if defaults else []
        args.deepspeed_fields_from_accelerate_config = ",".join(fields + (["mixed_precision"] if mp_from_config else []))
        cmd, env = prepare_deepspeed_cmd_env(args)
        assert cmd is None, f"accelerate would start DeepSpeed through {cmd[0]!r}, not torchrun"
    elif (args.use_fsdp or args.multi_gpu) and not args.cpu:
        env = prepare_multi_gpu_env(args)
    else:
        _, env = prepare_simple_launcher_cmd_env(args)
        args.nproc_per_node = "1"  # the simple launcher starts one process
    return args, env


def accelerate_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_"))}


# ----------------------------------------------------------------------------------------------
# accelerate configs


def test_every_accelerate_config_is_listed():
    assert sorted(p.name for p in ACCEL.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_config_loads_with_accelerates_loader(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    config = load_config_from_file(str(ACCEL / name))  # raises on unknown top-level keys
    want = EXPECTED[name]
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type.value == want["distributed_type"]
    assert config.num_processes == want["num_processes"]
    assert config.mixed_precision == want["mixed_precision"]
    assert config.use_cpu is want["use_cpu"]
    assert config.num_machines == 1 and config.machine_rank == 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_nested_accelerate_keys_are_real_launch_options(name):
    """accelerate copies deepspeed_config / fsdp_config keys onto its launch arguments without
    checking them, so a misspelt key would be ignored silently: each must be a real option."""
    import yaml
    from accelerate.commands.launch import launch_command_parser

    options = {action.dest for action in launch_command_parser()._actions}
    raw = yaml.safe_load((ACCEL / name).read_text())
    nested = list(raw.get("deepspeed_config", {})) + list(raw.get("fsdp_config", {}))
    assert [key for key in nested if key not in options] == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launcher_environment_agrees_with_the_paired_dist_keys(name):
    """The variables the trainer checks against dist.*, as accelerate launch would set them."""
    want = EXPECTED[name]
    args, env = resolve_launch(["--config_file", str(ACCEL / name), "-m", "scaled_ql.cli", "pretrain"])
    dist = dict(kv.split("=") for kv in want["dist"].split())
    backend = dist.get("dist.backend", "ddp")

    assert int(args.nproc_per_node) == want["num_processes"]  # torchrun's WORLD_SIZE on one node
    assert env["ACCELERATE_MIXED_PRECISION"] == want["mixed_precision"]
    assert (env.get("ACCELERATE_USE_DEEPSPEED") == "true") == (backend == "deepspeed")
    assert (env.get("ACCELERATE_USE_FSDP") == "true") == (backend == "fsdp")
    if backend == "deepspeed":
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == dist["dist.zero_stage"]
    # Set by the launcher, these would override the trainer's dist.grad_accum / train.grad_clip.
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env
    assert "ACCELERATE_GRADIENT_CLIPPING" not in env


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_readme_pairs_each_config_with_its_dist_overrides(name):
    rows = [line for line in README.splitlines() if line.startswith("|") and f"launch/accelerate/{name}" in line]
    assert rows, f"launch/README.md has no table row launching {name}"
    dist = EXPECTED[name]["dist"]
    assert all((f"`{dist}`" in row) if dist else ("none" in row) for row in rows), rows


def test_paired_dist_overrides_are_valid_config_keys():
    from scaled_ql.config import load_config

    for want in EXPECTED.values():
        cfg = load_config(ROOT / "configs" / "tiny.yaml", want["dist"].split())
        assert cfg.dist.backend == dict(kv.split("=") for kv in want["dist"].split()).get("dist.backend", "ddp")


@pytest.mark.parametrize("stage", [1, 2])
def test_deepspeed_yaml_resolves_to_a_plugin_that_leaves_batch_accumulation_and_clipping_to_the_trainer(stage):
    from accelerate.utils import DeepSpeedPlugin, patch_environment

    _, env = resolve_launch(["--config_file", str(ACCEL / f"8gpu_deepspeed_zero{stage}.yaml"), "-m", "scaled_ql.cli"])
    with patch_environment(**accelerate_env(env)):
        plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage
    config = plugin.deepspeed_config
    assert config["zero_optimization"]["stage"] == stage
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert config[key] == "auto", key
    assert "optimizer" not in config and "scheduler" not in config


def test_fsdp_yaml_resolves_to_a_shard_grad_op_plugin():
    """FSDP1 with SHARD_GRAD_OP and use_orig_params: what the trainer asks accelerate for."""
    import torch
    from accelerate.utils import FullyShardedDataParallelPlugin, patch_environment

    _, env = resolve_launch(["--config_file", str(ACCEL / "8gpu_fsdp.yaml"), "-m", "scaled_ql.cli"])
    assert env["FSDP_SYNC_MODULE_STATES"] == "true"  # every rank starts from rank 0's weights
    # Building the plugin with sync_module_states needs a GPU; on CPU check everything else.
    gpu_only = {} if torch.cuda.is_available() else {"sync_module_states": False}
    with patch_environment(**accelerate_env(env)):
        plugin = FullyShardedDataParallelPlugin(**gpu_only)
    assert plugin.fsdp_version == 1
    assert plugin.sharding_strategy.name == "SHARD_GRAD_OP"
    assert plugin.use_orig_params is True
    assert plugin.cpu_offload.offload_params is False
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    assert plugin.transformer_cls_names_to_wrap is None  # the model declares its wrap unit
    plugin.set_auto_wrap_policy(torch.nn.Sequential(torch.nn.Linear(2, 2)))  # a model that declares none


# ----------------------------------------------------------------------------------------------
# DeepSpeed JSONs


@pytest.mark.parametrize("stage", [1, 2])
def test_deepspeed_json_is_filled_by_accelerate_and_accepted_by_deepspeed(stage):
    from accelerate.utils import DeepSpeedPlugin

    path = LAUNCH / "deepspeed" / f"zero{stage}.json"
    raw = json.loads(path.read_text())
    assert raw["zero_optimization"]["stage"] == stage
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert raw[key] == "auto", key
    assert raw["bf16"]["enabled"] == "auto"
    assert "optimizer" not in raw  # the trainer's own AdamW

    # Fill the "auto" values the way accelerate does at prepare() time (world size 1 here).
    plugin = DeepSpeedPlugin(hf_ds_config=str(path))
    plugin.set_mixed_precision("bf16")
    plugin.deepspeed_config_process(must_match=False, train_micro_batch_size_per_gpu=6,
                                    gradient_accumulation_steps=2, gradient_clipping=10.0, train_batch_size=12)
    filled = plugin.deepspeed_config
    assert "auto" not in json.dumps(filled)

    from deepspeed.runtime.config import DeepSpeedConfig  # rejects unknown zero_optimization keys

    ds = DeepSpeedConfig(filled)
    assert ds.zero_optimization_stage == stage
    assert ds.gradient_clipping == 10.0 and ds.gradient_accumulation_steps == 2
    assert filled["bf16"]["enabled"] is True


@pytest.mark.parametrize("stage", [1, 2])
def test_deepspeed_json_launched_from_the_command_line_as_the_readme_shows(stage):
    from accelerate.utils import DeepSpeedPlugin, patch_environment

    json_path = f"launch/deepspeed/zero{stage}.json"
    block = next(block for block in README.split("```") if "--deepspeed_config_file launch/deepspeed/zero" in block)
    command = block.split("\n", 1)[1]  # after the block's language line
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:2] == ["accelerate", "launch"]
    argv = [json_path if a.startswith("launch/deepspeed/") else a for a in argv[2:]]
    args, env = resolve_launch(argv)
    assert int(args.nproc_per_node) == 8
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16" and env["ACCELERATE_USE_DEEPSPEED"] == "true"
    with patch_environment(**accelerate_env(env)):
        plugin = DeepSpeedPlugin()  # raises if accelerate-config fields clash with the JSON
    assert plugin.zero_stage == stage


# ----------------------------------------------------------------------------------------------
# shell scripts


SCRIPTS = sorted([*LAUNCH.glob("*.sh"), *LAUNCH.glob("*.sbatch")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_script_parses(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_script_has_no_python_logic(script):
    text = script.read_text()
    assert "python -c" not in text and "python3 -c" not in text and "<<" not in text


def _fake_tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_slurm(tmp_path):
    """scontrol, srun and accelerate stand-ins: srun runs its command once per node with
    SLURM_NODEID set, and accelerate prints its arguments, one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_tool(bin_dir, "scontrol", '[[ "$1 $2" == "show hostnames" ]] || exit 1\nprintf "gpu-01\\ngpu-02\\n"\n')
    _fake_tool(bin_dir, "srun", (
        "nodes=1\n"
        "while [[ $1 == -* ]]; do\n"
        "  case $1 in --nodes) nodes=$2; shift 2;; --*=*) shift;; *) shift 2;; esac\n"
        "done\n"
        'for (( i = 0; i < nodes; i++ )); do SLURM_NODEID=$i "$@"; done\n'))
    _fake_tool(bin_dir, "accelerate", 'echo "--- accelerate"; printf "%s\\n" "$@"\n')
    script_vars = ("DRY_RUN", "CONFIG", "ACCELERATE_CONFIG", "GPUS_PER_NODE", "MAIN_PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "ACCELERATE_")) and k not in script_vars}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", SLURM_NNODES="2",
               SLURM_JOB_NODELIST="gpu-[01-02]", SLURM_JOB_ID="4242")
    return env


OVERRIDES = ["train.batch_size=656", "name=two words"]


def _node_commands(stdout: str) -> dict[int, tuple[str, list[str]]]:
    nodes = {}
    for line in stdout.splitlines():
        if line.startswith("node "):
            head, command = line.split(":", 1)
            _, rank, host = head.split()
            nodes[int(rank)] = (host, shlex.split(command))
    return nodes


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_slurm_dry_run_prints_one_launcher_per_node_with_ranks_and_first_node_rendezvous(fake_slurm):
    env = dict(fake_slurm, DRY_RUN="1", ACCELERATE_CONFIG="launch/accelerate/8gpu_deepspeed_zero2.yaml")
    out = subprocess.run(["bash", "launch/slurm.sbatch", *OVERRIDES], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    nodes = _node_commands(out)
    assert sorted(nodes) == [0, 1]
    assert [host for host, _ in nodes.values()] == ["gpu-01", "gpu-02"]
    ports = set()
    for rank, (_, argv) in nodes.items():
        assert argv[:2] == ["accelerate", "launch"]
        assert _option(argv, "--machine_rank") == str(rank)
        assert _option(argv, "--num_machines") == "2"
        assert _option(argv, "--num_processes") == "16"
        assert _option(argv, "--main_process_ip") == "gpu-01"  # the first node hosts the rendezvous
        assert _option(argv, "--config_file") == "launch/accelerate/8gpu_deepspeed_zero2.yaml"
        ports.add(_option(argv, "--main_process_port"))
        assert argv[argv.index("-m"):] == ["-m", "scaled_ql.cli", "pretrain", "--config", "configs/atari40.yaml",
                                           "--resume", *OVERRIDES]  # a requeued job continues from its checkpoint
    assert len(ports) == 1
    assert sum(line.startswith("srun:") for line in out.splitlines()) == 1


def test_slurm_dry_run_commands_are_what_accelerate_resolves_per_node(fake_slurm):
    """Each node's printed command, parsed by accelerate itself: torchrun on 8 local processes
    as node `rank` of 2, rendezvous at the first node."""
    env = dict(fake_slurm, DRY_RUN="1", ACCELERATE_CONFIG="launch/accelerate/8gpu_deepspeed_zero2.yaml")
    out = subprocess.run(["bash", "launch/slurm.sbatch"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    for rank, (_, argv) in _node_commands(out).items():
        args, environment = resolve_launch(argv[2:])
        assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", rank, "8")
        assert args.rdzv_endpoint.startswith("gpu-01:")
        assert environment["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "2"


def test_slurm_real_mode_runs_exactly_the_dry_run_commands(fake_slurm):
    dry = subprocess.run(["bash", "launch/slurm.sbatch", *OVERRIDES], cwd=ROOT, env=dict(fake_slurm, DRY_RUN="1"),
                         capture_output=True, text=True, check=True).stdout
    real = subprocess.run(["bash", "launch/slurm.sbatch", *OVERRIDES], cwd=ROOT, env=fake_slurm,
                          capture_output=True, text=True, check=True).stdout
    ran = [block.strip("\n").split("\n") for block in real.split("--- accelerate\n")[1:]]
    assert ran == [argv[1:] for _, (_, argv) in sorted(_node_commands(dry).items())]


def test_slurm_refuses_a_node_count_that_disagrees_with_the_node_list(fake_slurm):
    env = dict(fake_slurm, DRY_RUN="1", SLURM_NNODES="3")
    result = subprocess.run(["bash", "launch/slurm.sbatch"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "SLURM_NNODES=3" in result.stderr and "gpu-01 gpu-02" in result.stderr


def test_torchrun_dry_run_prints_the_single_node_command():
    env = {k: v for k, v in os.environ.items() if k not in ("NGPU", "NPROC", "CONFIG", "DRY_RUN")}
    env.update(DRY_RUN="1", NGPU="4", CONFIG="configs/tiny.yaml")
    out = subprocess.run(["bash", "launch/torchrun.sh", *OVERRIDES], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    argv = shlex.split(out)
    assert argv[0] == "torchrun" and "--standalone" in argv
    assert _option(argv, "--nproc_per_node") == "4"  # NPROC defaults to NGPU
    assert argv[argv.index("-m"):] == ["-m", "scaled_ql.cli", "pretrain", "--config", "configs/tiny.yaml", *OVERRIDES]

    env["NPROC"] = "2"
    out = subprocess.run(["bash", "launch/torchrun.sh"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert _option(shlex.split(out.stdout), "--nproc_per_node") == "2"


# ----------------------------------------------------------------------------------------------
# the one config that can run here


PROBE = """
import json, sys
import torch
from accelerate import Accelerator

accelerator = Accelerator(cpu=not torch.cuda.is_available())
total = accelerator.reduce(torch.tensor([float(accelerator.process_index + 1)]), reduction="sum")
report = dict(rank=accelerator.process_index, world=accelerator.num_processes, sum=total.item(),
              type=accelerator.distributed_type.value, precision=accelerator.mixed_precision)
with open(f"{sys.argv[1]}/rank{accelerator.process_index}.json", "w") as f:  # one file each: no interleaving
    json.dump(report, f)
accelerator.end_training()  # destroys the process group: exiting with it alive can abort a rank
"""


@pytest.mark.slow
def test_2cpu_config_starts_two_cooperating_cpu_processes(tmp_path):
    """A probe script (not training) under the 2-CPU config: two gloo processes that all-reduce."""
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        accelerate = Path(shutil.which("accelerate") or "accelerate")
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    result = subprocess.run([str(accelerate), "launch", "--config_file", str(ACCEL / "2cpu_ddp.yaml"), str(probe),
                             str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports == [dict(rank=r, world=2, sum=3.0, type="MULTI_CPU", precision="no") for r in (0, 1)]

#!/usr/bin/env bash
# One node, NPROC processes (one per GPU) started by torchrun.
# torchrun only starts the processes: every setting, dist.backend included, comes from the config
# and its overrides (after the script's name). For DeepSpeed and FSDP the accelerate configs in
# launch/accelerate/ are the usual route (see launch/README.md).
#
#   NGPU=8 CONFIG=configs/atari40.yaml launch/torchrun.sh train.batch_size=656
#   NPROC=2 CONFIG=configs/tiny.yaml launch/torchrun.sh train.threads=1   # 2 CPU processes
#   DRY_RUN=1 launch/torchrun.sh ...    # print the command instead of running it
set -euo pipefail

NGPU=${NGPU:-8}
NPROC=${NPROC:-$NGPU}
CONFIG=${CONFIG:-configs/atari40.yaml}

cmd=(torchrun --standalone --nnodes 1 --nproc_per_node "$NPROC"
     -m scaled_ql.cli pretrain --config "$CONFIG" "$@")

if [[ ${DRY_RUN:-0} == 1 ]]; then
    printf '%q ' "${cmd[@]}"; echo
    exit 0
fi
exec "${cmd[@]}"

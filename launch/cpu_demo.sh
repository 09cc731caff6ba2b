#!/usr/bin/env bash
# The CPU demo as plain commands (what `make demo` runs), for reading or adapting.
set -euo pipefail
CONFIG=${CONFIG:-configs/tiny.yaml}

# 1. Play Pong, Breakout and Boxing with a uniform random policy in ALE; write Arrow files.
scaled-ql prep --config "$CONFIG" --overwrite

# 2. Pretrain the multi-game Q-network with CQL + DR3 (checkpoints and TensorBoard in runs/tiny).
scaled-ql pretrain --config "$CONFIG"

# 3. Evaluate the newest checkpoint again, with more episodes if you like.
scaled-ql evaluate --checkpoint runs/tiny --episodes 8

# TensorBoard:  tensorboard --logdir runs/tiny/tb

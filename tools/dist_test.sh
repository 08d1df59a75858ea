#!/usr/bin/env bash
# Multi-GPU evaluation: bash tools/dist_test.sh CONFIG GPUS [--cfg-options ...]
set -euo pipefail
CONFIG=$1
GPUS=$2
shift 2
PORT=${PORT:-29500}
torchrun --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/test.py" "$CONFIG" --launcher pytorch "$@"

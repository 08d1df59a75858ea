#!/usr/bin/env bash
# Evaluation with several processes (torchrun + mmengine's `--launcher pytorch`): one per GPU on CUDA
# (backend nccl), or several CPU processes (backend gloo) on a machine without CUDA.
#
#   bash tools/dist_test.sh CONFIG NPROC [tools/test.py options: --work-dir, --cfg-options, --resume]
#
# Several machines: run the same command on every node, with
#   NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0's address> [PORT=29500] bash tools/dist_test.sh CONFIG 8
# PYTHON picks the interpreter (default: python on PATH); torchrun is run as `python -m torch.distributed.run`
# so that no activated environment is needed.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash tools/dist_test.sh CONFIG NPROC [tools/test.py options]" >&2
  exit 2
fi
CONFIG=$1
NPROC=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$PORT" \
    --nproc_per_node="$NPROC" \
    "$(dirname "$0")/test.py" "$CONFIG" --launcher pytorch "$@"

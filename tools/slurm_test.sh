#!/usr/bin/env bash
# Evaluation on a SLURM cluster: one task per GPU through srun, mmengine's `--launcher slurm` (backend nccl).
#
#   [GPUS=4] [GPUS_PER_NODE=4] [CPUS_PER_TASK=5] [SRUN_ARGS="--time=2:00:00"] \
#       bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG [tools/test.py options]
#
# The interface of MMSegmentation's tools/slurm_test.sh, without its CHECKPOINT argument (fsa-seg is
# training-free: weights come from the config). GPUS tasks are spread GPUS_PER_NODE to a node; mmengine reads
# the rank, world size and first node's address from SLURM's variables. PYTHON picks the interpreter.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG [tools/test.py options]" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
GPUS=${GPUS:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 4 ? GPUS : 4))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
PYTHON=${PYTHON:-python}

# SRUN_ARGS is split on spaces on purpose: it holds several srun options.
# shellcheck disable=SC2086
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$(dirname "$0")/test.py" "$CONFIG" --launcher slurm "$@"

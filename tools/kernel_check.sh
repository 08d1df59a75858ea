#!/usr/bin/env bash
# Re-runs the numerically sensitive tests (pytest marker `numerics`, quick ones) under every CPU kernel level
# torch can use on this machine other than the one it picks by itself, so that a result that depends on the
# vector kernels (AVX-512 vs AVX2 vs scalar) shows here rather than on a user's machine.
#
#   bash tools/kernel_check.sh [PYTEST ARGS...]      e.g. bash tools/kernel_check.sh -x
#
# Torch reads ATEN_CPU_CAPABILITY (default < avx2 < avx512) and never goes above what the CPU supports. On CPUs
# without these levels (e.g. ARM) there is nothing to vary and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${FSA_VENV:-.venv}/bin/python
native=$(env -u ATEN_CPU_CAPABILITY "$PY" -c "import torch; print(torch.backends.cpu.get_cpu_capability().lower())")
case $native in
  avx512) levels="default avx2" ;;
  avx2) levels="default" ;;
  *) echo "[kernel-check] torch's CPU capability here is '$native': no other x86 kernel level to try"; exit 0 ;;
esac
for level in $levels; do
  echo "[kernel-check] ATEN_CPU_CAPABILITY=$level (native: $native): pytest -m 'numerics and not slow'"
  ATEN_CPU_CAPABILITY=$level "$PY" -m pytest tests -q -m "numerics and not slow" -p no:cacheprovider "$@"
done

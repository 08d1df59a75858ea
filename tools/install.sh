#!/usr/bin/env bash
# One-command setup for fsa-seg: a virtual environment with pinned dependencies and the package (editable).
#
#   bash tools/install.sh [--cuda cu126|cu130|cu132|cpu | --torch-index URL] [--dry-run]
#
#   (no option)        torch 2.13.0 from the registry: its CUDA 13.0 build (NVIDIA driver >= 580), also runs on CPU
#   --cuda TAG         torch from PyTorch's own wheel index for that build, https://download.pytorch.org/whl/TAG:
#                      cu126 = CUDA 12.6 (driver >= 525.60.13), cu130 = CUDA 13.0 (driver >= 580),
#                      cu132 = CUDA 13.2 (experimental for torch 2.13; driver >= 580), cpu = CPU only (no CUDA)
#   --torch-index URL  torch + torchvision from another index (a mirror of one of those)
#   --dry-run          print the commands it would run (each as "+ command"), run none
# The same as environment variables: FSA_CUDA=TAG, FSA_TORCH_INDEX=URL, FSA_DRY_RUN=1; FSA_VENV=/path (default
# ./.venv), PYTHON (the interpreter that creates the venv, default python3).
#
# Re-running it on a machine that already has the environment only checks versions (no rebuild); choosing
# another torch build replaces torch and torchvision only. mmcv 2.1.0 has no binary wheel on PyPI: a wheel
# found through PIP_FIND_LINKS is used when present, otherwise it is compiled from source (~20 min on 2 cores),
# always with its CPU ops only and CUDA hidden from the build (fsa-seg uses no mmcv CUDA op), so no CUDA
# toolkit is needed on a GPU host.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH=2.13.0
TORCHVISION=0.28.0
MMCV=2.1.0
SAM3=0.1.4
PYTORCH_INDEX=https://download.pytorch.org/whl
DEFAULT_CUDA=13.0  # the CUDA version of the registry's torch 2.13.0 wheel

usage() { sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
fail() { echo "[install] error: $*" >&2; exit 2; }

CUDA_TAG=${FSA_CUDA:-}
TORCH_INDEX=${FSA_TORCH_INDEX:-}
DRY=${FSA_DRY_RUN:-}
[ "$DRY" = 0 ] && DRY=
while [ $# -gt 0 ]; do
  case $1 in
    --cuda) [ $# -ge 2 ] || fail "--cuda needs a build tag (cu126, cu130, cu132, cpu)"; CUDA_TAG=$2; shift 2 ;;
    --cuda=*) CUDA_TAG=${1#*=}; shift ;;
    --torch-index) [ $# -ge 2 ] || fail "--torch-index needs a URL"; TORCH_INDEX=$2; shift 2 ;;
    --torch-index=*) TORCH_INDEX=${1#*=}; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) fail "unknown option '$1' (see bash tools/install.sh --help)" ;;
  esac
done
if [ -n "$CUDA_TAG" ]; then
  [ -z "$TORCH_INDEX" ] || fail "give --cuda or --torch-index, not both"
  [[ $CUDA_TAG =~ ^(cpu|cu[0-9]{3})$ ]] || fail "--cuda '$CUDA_TAG': expected cu126, cu130, cu132 or cpu"
  TORCH_INDEX=$PYTORCH_INDEX/$CUDA_TAG
fi
TORCH_SOURCE=${TORCH_INDEX:-registry}

# The CUDA version of the chosen torch build (for the driver check): from a cuXYZ tag at the end of the index.
TORCH_CUDA=$DEFAULT_CUDA
if [ -n "$TORCH_INDEX" ]; then
  TORCH_CUDA=unknown
  TAG=${TORCH_INDEX%/}
  TAG=${TAG##*/}
  if [[ $TAG =~ ^cu([0-9]+)([0-9])$ ]]; then TORCH_CUDA="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"; fi
  if [ "$TAG" = cpu ]; then TORCH_CUDA=none; fi
fi

# NVIDIA's minimum Linux driver per CUDA major version (CUDA minor version compatibility; the same table as
# fsa_seg/diagnostics/env_info.py::MIN_DRIVER, which cites NVIDIA's "CUDA Compatibility" document).
min_driver() {
  case ${1%%.*} in
    11) echo 450.80.02 ;;
    12) echo 525.60.13 ;;
    13) echo 580 ;;
    *) echo "" ;;
  esac
}
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

echo "[install] torch $TORCH from ${TORCH_INDEX:-the registry} (CUDA build: $TORCH_CUDA)${DRY:+; dry run: nothing is run}"
if command -v nvidia-smi >/dev/null 2>&1; then
  DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' ' || true)
  NEED=$(min_driver "$TORCH_CUDA")
  echo "[install] NVIDIA GPU found, driver ${DRIVER:-unknown}"
  if [ "$TORCH_CUDA" = none ]; then
    echo "[install] warning: the CPU-only torch build will not use the GPU"
  elif [ -n "$DRIVER" ] && [ -n "$NEED" ] && ! version_ge "$DRIVER" "$NEED"; then
    echo "[install] warning: torch's CUDA $TORCH_CUDA build needs NVIDIA driver >= $NEED; with $DRIVER it would" \
         "run on the CPU only. Use --cuda cu126 (driver >= $(min_driver 12.6)) or upgrade the driver."
  fi
fi

# Every command is printed before it runs (as the dry run prints it).
run() {
  local arg
  printf '+'
  for arg in "$@"; do  # shell-quoted only where needed, so that the line can be pasted or split with shlex
    if [[ $arg =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf ' %s' "$arg"; else printf " '%s'" "${arg//\'/\'\\\'\'}"; fi
  done
  printf '\n'
  [ -n "$DRY" ] || "$@"
}

VENV=${FSA_VENV:-.venv}
PYTHON=${PYTHON:-python3}
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "[install] creating virtual environment $VENV"
  run "$PYTHON" -m venv "$VENV"
fi
PIP=("$PY" -m pip)
PIP_INSTALL=("${PIP[@]}" install --disable-pip-version-check)

# have NAME[==VERSION]...: installed at that version (a local tag such as +cu126 ignored); false without a venv.
have() {
  [ -x "$PY" ] || return 1
  "$PY" - "$@" <<'PYEOF' 2>/dev/null
import importlib.metadata as md, sys
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    got = md.version(name)
    if want and got.split("+")[0] != want:
        sys.exit(1)
PYEOF
}

# 1. torch + torchvision, from the chosen source. A local find-links folder may hold a CPU-only torch wheel
#    without torchvision, so that folder and local pip config are bypassed for this step only. The source of
#    the installed build is recorded; choosing another one replaces torch and torchvision (not their deps).
TORCH_STAMP="$VENV/.fsa-seg-torch"
INSTALLED_SOURCE=$(cat "$TORCH_STAMP" 2>/dev/null || echo registry)  # older venvs: the registry's build
TORCH_CHANGED=
if ! have "torch==$TORCH" "torchvision==$TORCHVISION" || [ "$INSTALLED_SOURCE" != "$TORCH_SOURCE" ]; then
  TORCH_CHANGED=1
  if have torch && [ "$INSTALLED_SOURCE" != "$TORCH_SOURCE" ]; then
    echo "[install] replacing torch from $INSTALLED_SOURCE with torch from $TORCH_SOURCE"
    run "${PIP[@]}" uninstall -y torch torchvision
  fi
  echo "[install] torch==$TORCH torchvision==$TORCHVISION"
  run env PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "${PIP_INSTALL[@]}" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} \
    "torch==$TORCH" "torchvision==$TORCHVISION"
  [ -n "$DRY" ] || echo "$TORCH_SOURCE" > "$TORCH_STAMP"
else
  echo "[install] torch==$TORCH torchvision==$TORCHVISION from $TORCH_SOURCE: already installed"
fi

# 2. mmcv with compiled CPU ops (a wheel from PIP_FIND_LINKS if one is there, else a source build). mmcv
#    2.1.0's setup.py compiles CUDA ops when torch.cuda.is_available() or FORCE_CUDA=1: an empty
#    CUDA_VISIBLE_DEVICES makes the first False, FORCE_CUDA=0 the second, and without CUDA_HOME no toolkit is
#    looked for. After a torch change, ops built against the previous torch are rebuilt if they do not load.
if have "mmcv==$MMCV" && [ -n "$TORCH_CHANGED" ] && [ -z "$DRY" ] && ! "$PY" -c "import mmcv._ext" 2>/dev/null; then
  echo "[install] mmcv's compiled ops do not load with the new torch: rebuilding mmcv"
  run "${PIP[@]}" uninstall -y mmcv
  MMCV_NO_CACHE=1
elif [ -n "$DRY" ] && [ -n "$TORCH_CHANGED" ] && have "mmcv==$MMCV"; then
  echo "[install] (after the torch step: mmcv is rebuilt if its compiled ops do not load with the new torch)"
fi
if ! have "mmcv==$MMCV"; then
  echo "[install] mmcv==$MMCV with CPU ops (PIP_FIND_LINKS=${PIP_FIND_LINKS:-unset})"
  run "${PIP_INSTALL[@]}" "setuptools<70" wheel ninja
  run env -u CUDA_HOME -u CUDA_PATH CUDA_VISIBLE_DEVICES= FORCE_CUDA=0 MMCV_WITH_OPS=1 \
    "${PIP_INSTALL[@]}" --no-build-isolation ${MMCV_NO_CACHE:+--no-cache-dir} "mmcv==$MMCV"
else
  echo "[install] mmcv==$MMCV: already installed"
fi

# 3. everything else, then the package itself (again only when requirements.txt or setup.py changed).
STAMP="$VENV/.fsa-seg-deps"
WANT=$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! have fsa-seg; then
  run "${PIP_INSTALL[@]}" -r requirements.txt
  # Meta's reference SAM3 code, for the SAM3 parity test only: pure Python; what it imports is in
  # requirements.txt, and --no-deps keeps its numpy<2.4 pin from downgrading numpy.
  run "${PIP_INSTALL[@]}" --no-deps "sam3==$SAM3"
  run "${PIP_INSTALL[@]}" --no-deps --no-build-isolation -e .
  [ -n "$DRY" ] || echo "$WANT" > "$STAMP"
else
  echo "[install] requirements and fsa-seg: already installed"
fi
CHECK='import torch, mmcv, mmcv.ops, mmseg, mmengine, torchvision, open_clip, fsa_seg as f; print("[install] ok: torch",
  torch.__version__, "| GPU usable:", torch.cuda.is_available(), "| mmcv", mmcv.__version__, "| fsa_seg", f.__version__)'
run "$PY" -c "${CHECK//$'\n'/}"
[ -n "$DRY" ] || echo "[install] activate with: source $VENV/bin/activate; check the devices with: python tools/collect_env.py"

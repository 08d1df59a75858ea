#!/usr/bin/env bash
# One-command setup for fsa-seg: a virtual environment with pinned dependencies and the package (editable).
#
#   bash tools/install.sh            # creates ./.venv (override with FSA_VENV=/path)
#
# Re-running it on a machine that already has the environment only checks versions (no rebuild).
# mmcv 2.1.0 has no binary wheel on PyPI: a wheel found through PIP_FIND_LINKS is used when present,
# otherwise it is compiled from source with its CPU ops (~20 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FSA_VENV:-.venv}
PYTHON=${PYTHON:-python3}

TORCH=2.13.0
TORCHVISION=0.28.0
MMCV=2.1.0

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_() { "$PY" -m pip install --disable-pip-version-check "$@"; }

have() { "$PY" - "$@" <<'PYEOF' 2>/dev/null
import importlib.metadata as md, sys
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    got = md.version(name)
    if want and got.split("+")[0] != want:
        sys.exit(1)
PYEOF
}

# 1. torch + torchvision. The registry's default torch build (CUDA-enabled) also runs on CPU and matches
#    torchvision; a CPU-only torch wheel served by a local find-links folder has no torchvision, so that
#    folder and local pip config are bypassed for this step only.
if ! have "torch==$TORCH" "torchvision==$TORCHVISION"; then
  echo "[install] torch==$TORCH torchvision==$TORCHVISION"
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= pip_ "torch==$TORCH" "torchvision==$TORCHVISION"
fi

# 2. mmcv with compiled ops (wheel from PIP_FIND_LINKS if one is there, else a source build).
if ! have "mmcv==$MMCV"; then
  echo "[install] mmcv==$MMCV (PIP_FIND_LINKS=${PIP_FIND_LINKS:-unset})"
  pip_ "setuptools<70" wheel ninja
  MMCV_WITH_OPS=1 pip_ --no-build-isolation "mmcv==$MMCV"
fi

# 3. everything else, then the package itself (again only when requirements.txt or setup.py changed).
STAMP="$VENV/.fsa-seg-deps"
WANT=$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! have fsa-seg; then
  pip_ -r requirements.txt
  pip_ --no-deps --no-build-isolation -e .
  echo "$WANT" > "$STAMP"
fi
"$PY" -c "import torch, torchvision, mmcv, mmcv.ops, mmseg, mmengine, open_clip, fsa_seg; print('[install] ok: torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmseg', mmseg.__version__, '| fsa_seg', fsa_seg.__version__)"
echo "[install] activate with: source $VENV/bin/activate"

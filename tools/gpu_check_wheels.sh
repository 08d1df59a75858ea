#!/usr/bin/env bash
# The wheels that tools/gpu_check.py needs on a GPU machine with Python 3.12 and torch but no package index.
#
#   bash tools/gpu_check_wheels.sh                # into .whl/: what this workplace's GPU machine lacks
#   bash tools/gpu_check_wheels.sh --bare         # + what a machine with only torch and torchvision lacks
#   bash tools/gpu_check_wheels.sh --dry-run      # print the commands, run none
#   bash tools/gpu_check_wheels.sh --list [--bare]   # the pinned requirements, one a line
#
# Downloads cp312 / manylinux x86_64 / pure-Python wheels with `pip download --no-deps` (one version of each;
# the *.whl files already in the folder are removed first), then checks the set: no name twice, the total size,
# and that it is complete: `pip install --dry-run --no-index` of the set against these wheels plus empty stand-in
# wheels for what the target already has (DEVICE_HAS or BARE_HAS below) must resolve every requirement.
# On the GPU machine (the repository root, .whl/ copied along):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#
# Options: --dir DIR (default .whl), --bare, --dry-run, --no-check, --list. PYTHON=... picks the interpreter
# that runs pip (default: python3).
set -euo pipefail

# What the check imports beyond torch, pinned to the versions its tests run with here (tests/test_gpu_check.py
# keeps the pins equal to the installed versions).
NEEDED=(open_clip_torch==3.3.0 timm==1.0.31 segment-anything==1.0 ftfy==6.3.1 wcwidth==0.9.4)
# What the GPU machine of this workplace already has (its package list): torch 2.11.0, torchvision 0.26.0 and
# the other requirements of open_clip_torch and timm. timm is there too, but pinned above to the tested version.
DEVICE_HAS=(torch==2.11.0 torchvision==0.26.0 regex tqdm huggingface-hub safetensors pyyaml)
# --bare: a machine with only torch and torchvision (of one build: torchvision's CUDA ops must match torch's,
# so it cannot travel from here) and their requirements (torch: filelock, fsspec, typing-extensions, ...;
# torchvision: numpy, pillow). Then also regex, tqdm, safetensors, pyyaml and huggingface-hub with its own.
BARE_EXTRA=(regex==2026.11.19 tqdm==4.70.1 safetensors==0.8.0 pyyaml==6.0.4 huggingface_hub==2.4.0
            click==8.5.1 hf-xet==1.8.0 httpx2==2.16.2 httpcore2==2.16.2 anyio==4.16.0 idna==3.20 h11==0.16.0
            truststore==0.10.5 packaging==26.4)
BARE_HAS=(torch==2.11.0 torchvision==0.26.0 numpy pillow filelock fsspec typing-extensions)
PLATFORMS=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
LIMIT_MIB=64

DEST=.whl
BARE=0
DRY=0
CHECK=1
LIST=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DEST="${2:?--dir needs a folder}"; shift 2 ;;
        --bare) BARE=1; shift ;;
        --dry-run) DRY=1; shift ;;
        --no-check) CHECK=0; shift ;;
        --list) LIST=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

WANT=("${NEEDED[@]}")
HAS=("${DEVICE_HAS[@]}")
if [ "$BARE" = 1 ]; then
    WANT+=("${BARE_EXTRA[@]}")
    HAS=("${BARE_HAS[@]}")
fi
if [ "$LIST" = 1 ]; then
    printf '%s\n' "${WANT[@]}"
    exit 0
fi

PY="${PYTHON:-python3}"
run() {
    echo "+ $*"
    if [ "$DRY" = 0 ]; then "$@"; fi
}

run mkdir -p "$DEST"
if [ "$DRY" = 0 ]; then
    rm -f "$DEST"/*.whl
else
    echo "+ rm -f $DEST/*.whl"
fi
run "$PY" -m pip download --no-deps --only-binary=:all: "${PLATFORMS[@]}" -d "$DEST" "${WANT[@]}"
if [ "$DRY" = 1 ]; then
    echo "+ (check: pip install --dry-run --no-index --find-links $DEST + stand-ins for: ${HAS[*]})"
    exit 0
fi

echo "wheels in $DEST:"
"$PY" - "$DEST" "$LIMIT_MIB" <<'EOF'
import collections, os, re, sys
dest, limit = sys.argv[1], float(sys.argv[2])
wheels = sorted(f for f in os.listdir(dest) if f.endswith(".whl"))
names = collections.Counter(re.sub(r"[-_.]+", "-", w.split("-")[0]).lower() for w in wheels)
total = 0
for w in wheels:
    size = os.path.getsize(os.path.join(dest, w))
    total += size
    print(f"  {size / 2**20:6.2f} MiB  {w}")
print(f"  {total / 2**20:6.2f} MiB  total ({len(wheels)} wheels)")
twice = sorted(n for n, k in names.items() if k > 1)
if twice:
    sys.exit(f"error: more than one version of {twice} in {dest}: the install on the GPU machine would stop")
if total > limit * 2**20 / 2:
    sys.exit(f"error: {total / 2**20:.1f} MiB of wheels is more than half the {limit:.0f} MiB a device call carries")
EOF

if [ "$CHECK" = 1 ]; then
    STUBS="$(mktemp -d)"
    trap 'rm -rf "$STUBS"' EXIT
    # Empty wheels standing for what the target has, so that the resolver sees them as available.
    "$PY" - "$STUBS" "${HAS[@]}" <<'EOF'
import sys, zipfile
out = sys.argv[1]
for spec in sys.argv[2:]:
    name, _, version = spec.partition("==")
    version = version or "9999"
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(f"{out}/{dist}-{version}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: stub\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
EOF
    echo "complete? pip install --dry-run --no-index against $DEST and stand-ins for: ${HAS[*]}"
    "$PY" -m pip --isolated install --dry-run --quiet --no-index --find-links "$DEST" --find-links "$STUBS" \
        --only-binary=:all: "${PLATFORMS[@]}" --target "$STUBS/target" "${WANT[@]}"
    echo "complete: every requirement of the set resolves"
fi

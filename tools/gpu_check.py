"""The prepared GPU check: fp16/bf16 vs fp32 agreement of the FSA core and of every segmentor, the benchmark
grid on CUDA, one image end to end; JSON + markdown (see fsa_seg/perf/gpu_check.py).

    python tools/gpu_check.py --out work_dirs/gpu_check              # on a CUDA machine (~7 min budget)
    python tools/gpu_check.py --out work_dirs/gpu_check --dry-run    # the same code on the CPU, tiny models

Needs torch, open_clip, timm and segment-anything only (no mmseg/mmcv/mmengine): on a GPU machine without a
package index, bring them as wheels (bash tools/gpu_check_wheels.sh; docs/gpu_check.md). Without CUDA and
without --dry-run it says so and exits 0.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from fsa_seg.perf.gpu_check import DEFAULT_BUDGET_S, SECTIONS, run_check


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="work_dirs/gpu_check", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, tiny models and small N (the same code)")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                   help="start no measurement that would end after this many seconds (default %(default)s)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list from {','.join(SECTIONS)}")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    try:
        return run_check(args.out, dry_run=args.dry_run, budget_s=args.budget_s, sections=sections,
                         command="python tools/gpu_check.py " + " ".join(argv))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

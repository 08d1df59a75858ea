"""Evaluate a training-free segmentation config with mmengine's Runner.

    python tools/test.py configs/fsa_proxy_sam_voc.py [--work-dir DIR] [--cfg-options model.top_p=0.3 ...]
                         [--resume]

Prints progress while it runs, the per-class IoU table and mIoU at the end, and writes
``WORK_DIR/results.json`` with the config, the overrides and the metrics. Multi-GPU evaluation:
``bash tools/dist_test.sh CONFIG GPUS`` (torchrun + ``--launcher pytorch``).

Every run records each image's areas in ``WORK_DIR/per_image/`` as it goes (fsync'ed per batch). A run
that was interrupted (killed, out of time, crashed) continues where it stopped with ``--resume``: the
images already recorded are skipped and their stored areas merged, giving exactly the metric of an
uninterrupted run. Without ``--resume`` (the default) a run starts over and replaces the records.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from mmengine.config import DictAction

from fsa_seg.apis.config import ConfigKeyError
from fsa_seg.apis.evaluate import evaluate
from fsa_seg.weights import WeightsUnavailableError

# Exit codes: 2 = bad input the user can fix (message says how); 1 = unexpected failure.
EXIT_USAGE = 2


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate an fsa-seg config (training-free OVSS).")
    parser.add_argument("config", help="config file, e.g. configs/fsa_proxy_sam_voc.py")
    parser.add_argument("--work-dir", help="where logs and results.json go (default: work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config keys, e.g. model.top_p=0.3 model.lamda=2.0")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in the same --work-dir: skip the images it already "
                             "evaluated (WORK_DIR/per_image/) and merge their results; default: start over")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        evaluate(args.config, args.cfg_options, args.work_dir, args.launcher, resume=args.resume)
    except (FileNotFoundError, WeightsUnavailableError, ConfigKeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())

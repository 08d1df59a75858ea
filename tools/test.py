"""Evaluate a training-free segmentation config with mmengine's Runner.

    python tools/test.py configs/fsa_proxy_sam_voc.py [--work-dir DIR] [--cfg-options model.top_p=0.3 ...]
                         [--resume] [--strict] [--skip-bad-images]
                         [--variants model.top_p=0.3,0.45,0.6 [--variants model.lamda=2,3]] [--show-dir DIR]

Prints progress while it runs, the per-class IoU table and mIoU at the end, and writes
``WORK_DIR/results.json`` with the config, the overrides and the metrics. Multi-GPU evaluation:
``bash tools/dist_test.sh CONFIG GPUS`` (torchrun + ``--launcher pytorch``).

Every run records each image's areas in ``WORK_DIR/per_image/`` as it goes (fsync'ed per batch). A run
that was interrupted (killed, out of time, crashed) continues where it stopped with ``--resume``: the
images already recorded are skipped and their stored areas merged, giving exactly the metric of an
uninterrupted run. Without ``--resume`` (the default) a run starts over and replaces the records.

``--variants KEY=V1,V2,...`` (repeatable: every combination, values parsed like tools/sweep.py's ``--grid``)
evaluates several settings that act after the backbone (e.g. ``model.top_p``, ``model.lamda``, ``model.fsa``,
``model.prob_thd``; the model's variant keys) in one pass over the data: the backbone runs once per crop batch.
Each combination writes ``WORK_DIR/<key=value__...>/results.json`` and its per-image records exactly as
``tools/test.py CONFIG --work-dir WORK_DIR/<key=value__...> --cfg-options KEY=V ...`` would; ``--resume``
continues a killed one-pass run. A key that changes the crops or the backbone (e.g. ``model.slide_crop``) is
refused with a one-line error: use separate runs (or tools/sweep.py, which splits the passes itself).

``--show-dir DIR`` writes ``DIR/<image name>.png`` per image: the ground truth and the prediction side by side
(mmseg's visualizer draws each panel), with ``--variants`` the ground truth and every variant of the one pass in
one row (docs/visualization.md). Without it no visualisation hook is added.

Everything is checked before the run starts and before anything is written (a failed check leaves no work dir):
the config keys and values, the data root, the class-name file against the dataset (as many lines as the
dataset has classes, no name on two lines; a line that does not name the dataset's class at its id is a warning
listing the pairs, an error with ``--strict``), the work dir, the weights. An image that cannot be read stops the
run naming the file (the images before it stay recorded: fix it and ``--resume``), or with ``--skip-bad-images`` is
skipped and listed. Ctrl-C stops with ``interrupted after N/M images; continue with --resume``.

Exit codes: 0 done; 2 bad input or an unreadable image (one line ``error: ...``); 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from mmengine.config import DictAction

from fsa_seg.apis.config import ConfigKeyError, load_config
from fsa_seg.apis.evaluate import EvaluationInterrupted, evaluate, evaluate_variants
from fsa_seg.apis.grid import GridError, combo_dir, expand_grid, parse_grid
from fsa_seg.open_vocab import CropMemoryError
from fsa_seg.weights import WeightsUnavailableError

# Exit codes: 2 = bad input the user can fix (message says how); 1 = unexpected failure; 130 = Ctrl-C (as a shell).
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate an fsa-seg config (training-free OVSS).")
    parser.add_argument("config", help="config file, e.g. configs/fsa_proxy_sam_voc.py")
    parser.add_argument("--work-dir", help="where logs and results.json go (default: work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config keys, e.g. model.top_p=0.3 model.lamda=2.0")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in the same --work-dir: skip the images it already "
                             "evaluated (WORK_DIR/per_image/) and merge their results; default: start over")
    parser.add_argument("--variants", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="evaluate every combination of these values in one pass over the data, each into "
                             "WORK_DIR/<key=value__...>; repeat for more keys (settings acting after the "
                             "backbone only, e.g. model.top_p, model.lamda, model.fsa)")
    parser.add_argument("--strict", action="store_true",
                        help="a class-name line that does not name the dataset's class at its id is an error "
                             "(default: a warning listing them)")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="skip (and list) images that cannot be read instead of stopping at the first one")
    parser.add_argument("--show-dir", metavar="DIR",
                        help="write per image the ground truth and each prediction (every variant) side by side "
                             "to DIR/<image name>.png")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.show_dir:  # the drawing hook, only when asked
        from fsa_seg.visualization.show_dir import show_dir_options
        args.cfg_options.update(show_dir_options(args.show_dir))
    try:
        if args.variants:
            variants = expand_grid(parse_grid(args.variants, flag="--variants"))
            work_dir = args.work_dir or load_config(args.config, args.cfg_options).work_dir
            evaluate_variants(args.config, variants, [combo_dir(work_dir, v) for v in variants],
                              args.cfg_options, args.launcher, resume=args.resume, strict=args.strict,
                              skip_unreadable=args.skip_bad_images)
        else:
            evaluate(args.config, args.cfg_options, args.work_dir, args.launcher, resume=args.resume,
                     strict=args.strict, skip_unreadable=args.skip_bad_images)
    except EvaluationInterrupted as err:
        print(f"\n{err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("\ninterrupted before the evaluation started", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FileNotFoundError, WeightsUnavailableError, ConfigKeyError, GridError, ValueError,
            CropMemoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # a read-only or full disk met while writing
        print(f"error: {err.strerror or err}{f': {err.filename}' if err.filename else ''}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hyper-parameter sweep: evaluate every combination of config values, on one or more benchmarks.

    python tools/sweep.py CONFIG --grid model.top_p=0.3,0.45,0.6 --grid model.lamda=2,3,4 \\
        [--datasets voc21,context60] [--data-root voc21=PATH ...] [--work-dir DIR] \\
        [--cfg-options KEY=VALUE ...] [--rerun] [--separate]

* ``--grid KEY=V1,V2,...`` (repeatable): any config key; ``model.*`` keys are checked against the model's
  options, other keys must exist in the config. Values are parsed like ``--cfg-options`` (int, float, bool,
  None, else string); a value holding commas is given as a JSON list: ``--grid 'k=[[1,2],[3,4]]'``.
* ``--datasets``: run the sweep on these benchmarks instead of CONFIG's own. For each benchmark the tool uses
  the sibling config whose file name differs only in the dataset part (``fsa_proxy_sam_voc21.py`` ->
  ``fsa_proxy_sam_context60.py``); without one it uses ``configs/_base_/datasets/<ds>.py`` plus CONFIG's
  model keys that are not benchmark keys (name_path, prob_thd, slide_crop, slide_stride stay the
  benchmark's) as ``--cfg-options``. The choice is printed for each benchmark.
* ``--data-root DS=PATH``: the data root of one benchmark (``--cfg-options
  test_dataloader.dataset.data_root=...`` would set one root for all).

One pass over the data, many settings: when the grid keys are settings that act after the backbone (the
model's variant keys: for the CLIP segmentor ``fsa``, ``top_p``, ``lamda``, ``feedback_scale``, ``isolation_scale``,
``beta``, ``gamma``, ``base_method`` among methods that share the backbone, ``base_method_cfg``, ``prob_thd``,
``area_thd``, ``renormalize``, ``logit_scale``, ``pamr``, ``pamr_steps``, ``pamr_dilations``), the
combinations of a dataset are evaluated in one pass (``fsa_seg.apis.evaluate_runs``): per crop batch the backbone
runs once and each combination its last block and post-processing. A grid key that changes anything else (the
dataset, the window, the backbone, the proxy) splits them into one pass per value. The tool prints how it
groups them; ``--separate`` evaluates every combination on its own (the backbone runs for each). Either way,
every combination's results land in ``WORK_DIR/<dataset>/<key=value__...>/`` (``results.json``, per-image
records), with the same files and numbers. A combination whose ``results.json`` exists (with the same options)
is not run again; an interrupted one resumes where it stopped (``--resume`` of tools/test.py). ``--rerun``
re-evaluates everything. The tool prints its wall time at the end.

Outputs in WORK_DIR (default ``work_dirs/sweep_<config name>``), rewritten after every combination:

* ``sweep.csv`` - one row per (dataset, combination): the grid values, mIoU, aAcc, mAcc, seconds, status;
* ``sweep.md`` - per dataset: the mIoU table (for two keys a matrix: first key down, second across) and
  the best combination;
* ``sweep_<dataset>.png`` - mIoU plot: 1 key -> line plot (bar plot for non-numeric values), 2 keys -> heat
  map, more keys -> one heat map (first two keys) per combination of the other keys' values, up to 16 panels
  (beyond that, the tables only). Without ``--grid``: ``sweep.png``, mIoU per dataset.

With ``model.random_weights=True`` the tables (a ``random_weights`` column, a note atop ``sweep.md``) and the
plot titles say RANDOM WEIGHTS: such numbers only check the pipeline.

Exit codes: 0 all combinations evaluated, 1 some failed (see ``status``), 2 bad input (one-line message),
130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

from mmengine.config import DictAction

from fsa_seg.apis.grid import parse_grid
from fsa_seg.apis.sweep import SweepError, default_sweep_dir, run_sweep
from fsa_seg.zoo.experiments import parse_data_roots
from fsa_seg.weights import WeightsUnavailableError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate every combination of config values (a grid sweep).")
    parser.add_argument("config", help="config file, e.g. configs/fsa_proxy_sam_voc21.py")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="a config key and its values; repeat for more keys")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="benchmarks to sweep on (comma- or space-separated), default: CONFIG's own")
    parser.add_argument("--data-root", nargs="+", action="extend", default=[], metavar="DS=PATH",
                        help="data root of a benchmark, e.g. voc21=data/VOCdevkit/VOC2012")
    parser.add_argument("--work-dir", help="default: work_dirs/sweep_<config name>")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="overrides applied to every combination")
    parser.add_argument("--rerun", action="store_true", help="re-evaluate combinations that have results")
    parser.add_argument("--separate", action="store_true",
                        help="evaluate every combination on its own (default: settings that act after the "
                             "backbone share one pass over the data)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    work_dir = args.work_dir or default_sweep_dir(args.config)
    start = time.time()
    try:
        results = run_sweep(args.config, parse_grid(args.grid), args.datasets, parse_data_roots(args.data_root),
                            args.cfg_options, work_dir, rerun=args.rerun, separate=args.separate)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to continue (finished combinations are kept, the "
              "interrupted one resumes)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (SweepError, FileNotFoundError, WeightsUnavailableError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # a read-only or full disk
        print(f"error: {err.strerror or err}{f': {err.filename}' if err.filename else ''}", file=sys.stderr)
        return EXIT_USAGE
    failed = sum(r.status.startswith("failed") for r in results)
    print(f"sweep: {len(results) - failed}/{len(results)} combinations evaluated in {time.time() - start:.1f} s "
          f"wall time ({'separate runs' if args.separate else 'one pass per group of settings'}); "
          f"results in {os.path.join(work_dir, 'sweep.csv')}, {os.path.join(work_dir, 'sweep.md')}")
    return EXIT_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Reproduce the paper's comparison table for one method: the method and the method + FSA on the eight
benchmarks, next to the published numbers.

    python tools/reproduce.py --method proxyclip --vfm sam [--backbone ViT-B-16] \\
        [--datasets voc21,context60,...] [--data-root voc21=PATH ...] [--work-dir DIR] \\
        [--cfg-options KEY=VALUE ...] [--from-results] [--published FILE.json] [--rerun] [--separate]

For each benchmark and for FSA off/on the config is looked up in configs/ (``fsa_seg.zoo.experiments.find_config``:
``configs/fsa_proxy_{vfm}_{dataset}.py``, ``configs/proxyclip/{fsa_}proxy_{vfm}_{backbone}_{dataset}.py``,
``configs/{method}/{fsa_}{method}_{backbone}_{dataset}.py``; without a file, the dataset config with
``--cfg-options model.base_method=... model.fsa=... model.clip_model=... model.vfm=...``) and evaluated
(``fsa_seg.apis``: ``evaluate`` in the shared job loop) into ``WORK_DIR/{base,fsa}/<dataset>/`` (a finished run is
reused, an interrupted one resumes). On each benchmark the two runs share one pass over the data (the backbone
runs once per crop batch for both) when their configs differ only in settings that act after the backbone (FSA
on/off, the protocol's thresholds); otherwise (e.g. ProxyCLIP's and FSA's Cityscapes windows differ) they run
separately; the tool prints which, and ``--separate`` always runs them separately. ``--from-results`` runs
nothing and reads those ``results.json`` files; a missing one leaves its cell empty.

Writes ``WORK_DIR/table.md`` and ``WORK_DIR/table.csv`` (default WORK_DIR:
``work_dirs/reproduce/<method>[_<vfm>]_<backbone>``): rows method and method + FSA, each as ``ours`` /
``paper`` / ``diff`` (ours - paper); columns the benchmarks in the paper's order and their average (only when
every benchmark of the row has a number). Published numbers and their sources come from
``fsa_seg/published_results.py`` (or ``--published``); unknown ones stay empty, never guessed. Each row is
compared with the first published entry whose settings its config has (e.g. NACLIP's configs use PAMR, so they
are compared with NACLIP's run with PAMR); the table's notes say whether that number is the paper's own, a
re-run or a reprint, and list the other published numbers of the row.

Exit codes: 0 table written, 1 some runs failed (their cells are empty), 2 bad input (one-line message).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from mmengine.config import DictAction

from fsa_seg.apis.paper_table import reproduce_table
from fsa_seg.benchmarks import check_benchmarks
from fsa_seg.zoo.experiments import needs_proxy, parse_data_roots
from fsa_seg.last_block import list_base_methods
from fsa_seg.zoo.published_results import load_published
from fsa_seg.vfm import list_vfms
from fsa_seg.weights import WeightsUnavailableError

EXIT_FAILED = 1
EXIT_USAGE = 2


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Method vs method + FSA on the eight benchmarks, next to the "
                                                 "published numbers.")
    parser.add_argument("--method", default="proxyclip",
                        help="base method: proxyclip, sclip, clearclip, naclip, maskclip, vanilla")
    parser.add_argument("--vfm", default="sam", help="ProxyCLIP's proxy model: sam, dino, dinov2, mae")
    parser.add_argument("--backbone", default="ViT-B-16", help="CLIP backbone: ViT-B-16, ViT-L-14, ViT-H-14")
    parser.add_argument("--datasets", nargs="+", default=None, help="subset of the eight benchmarks")
    parser.add_argument("--data-root", nargs="+", action="extend", default=[], metavar="DS=PATH",
                        help="data root of a benchmark, e.g. voc21=data/VOCdevkit/VOC2012")
    parser.add_argument("--work-dir", help="default: work_dirs/reproduce/<method>[_<vfm>]_<backbone>")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="overrides applied to every run")
    parser.add_argument("--from-results", action="store_true",
                        help="run nothing: build the table from the results.json files in WORK_DIR")
    parser.add_argument("--published", help="JSON file of published numbers (default: the packaged ones)")
    parser.add_argument("--rerun", action="store_true", help="re-evaluate runs that already have results")
    parser.add_argument("--separate", action="store_true",
                        help="evaluate the method and the method + FSA in separate passes over the data "
                             "(default: one pass per benchmark when their configs allow it)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.method not in list_base_methods():
            raise ValueError(f"--method {args.method}: unknown; choose from {', '.join(list_base_methods())}")
        vfm = args.vfm if needs_proxy(args.method) else None
        if vfm is not None and vfm not in list_vfms(include_testing=True):
            raise ValueError(f"--vfm {vfm}: unknown; choose from {', '.join(list_vfms())}")
        datasets = check_benchmarks(args.datasets) if args.datasets else None
        published = load_published(args.published)
        _, paths, failed = reproduce_table(args.method, vfm, args.backbone, datasets, args.work_dir,
                                           args.cfg_options, parse_data_roots(args.data_root), published,
                                           from_results=args.from_results, rerun=args.rerun,
                                           separate=args.separate)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to continue (finished evaluations are kept, the "
              "interrupted one resumes)", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, WeightsUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"table: {paths['markdown']}, {paths['csv']}")
    return EXIT_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())

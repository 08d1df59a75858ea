"""Report which of the benchmarks are ready to evaluate.

For each benchmark: whether its folders exist, how many validation images and masks
there are, images without a mask, the label values of a sample of masks compared with
the values the benchmark allows (its classes and its ignore value: 255, or 65535 for the 16-bit
masks of ADE20K-847 and PASCAL-Context-459), and the problems found.

    python tools/check_data.py                      # data/ of the current directory (as tools/test.py)
    python tools/check_data.py --data-root /datasets
    python tools/check_data.py --from-configs       # data_root of each dataset config
    python tools/check_data.py --json report.json --strict
    python tools/check_data.py --import my_benchmarks   # also the benchmarks a module registers

Exit code 0 even when benchmarks are missing, unless ``--strict`` (then 1 when any
selected benchmark is missing or has problems). Layouts: ``data/README.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
from dataclasses import asdict
from typing import List, Optional

from fsa_seg.benchmarks import BENCHMARKS
from fsa_seg.diagnostics.data_check import check_benchmark, format_table, resolve_roots
from fsa_seg.zoo.extensions import import_extensions


def add_import_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--import', dest='imports', action='append', default=[], metavar='MODULE',
                        help='import MODULE first (it registers benchmarks); repeatable')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    # The modules first: the benchmarks they register are choices of --benchmarks.
    early = argparse.ArgumentParser(add_help=False)
    add_import_option(early)
    import_extensions(early.parse_known_args(argv)[0].imports)
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_import_option(parser)
    where = parser.add_mutually_exclusive_group()
    where.add_argument('--data-root', metavar='DIR', default=None,
                       help='folder holding the benchmarks in the data/ layout '
                            '(default: data/ of the current directory, where tools/test.py '
                            'looks)')
    where.add_argument('--from-configs', action='store_true',
                       help='use the data_root of each configs/_base_/datasets/*.py '
                            '(relative to the current directory)')
    parser.add_argument('--config-dir', metavar='DIR', default=None,
                        help='with --from-configs: the folder that plays configs/ (default: the packaged configs)')
    parser.add_argument('--benchmarks', nargs='+', choices=list(BENCHMARKS),
                        default=list(BENCHMARKS), help='benchmarks to check (default: all)')
    parser.add_argument('--max-masks', type=int, default=50,
                        help='masks to read per benchmark, evenly spaced (default: 50; 0 = all)')
    parser.add_argument('--json', metavar='FILE', default=None, help='also write the report here')
    parser.add_argument('--strict', action='store_true',
                        help='exit 1 if any selected benchmark is missing or has problems')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = parse_args(argv)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    roots = resolve_roots(args.benchmarks, args.data_root, args.from_configs, args.config_dir)
    reports = [check_benchmark(BENCHMARKS[n], roots[n], args.max_masks) for n in args.benchmarks]
    print(format_table(reports))
    ready = sum(r.status == 'ready' for r in reports)
    print(f'{ready}/{len(reports)} benchmarks ready; layouts and preparation: data/README.md')
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump([asdict(r) for r in reports], f, indent=2)
    if args.strict and ready < len(reports):
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

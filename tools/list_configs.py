"""List the evaluation configs as a table: method, fsa, backbone, vfm, dataset, path (read from the configs).

    python tools/list_configs.py                                   # every config
    python tools/list_configs.py --method sclip --fsa on --backbone vit-b16
    python tools/list_configs.py --method proxyclip --vfm dino --dataset voc21 ade20k
    python tools/list_configs.py --method naclip --paths | xargs -n1 python tools/test.py   # one by one

Filters take one or more values each; ``--backbone`` accepts the open_clip name (ViT-L-14) or the short tag
used in file names (vit-l14). ``--csv`` prints comma-separated values, ``--paths`` only the paths.
``--config-dir DIR`` lists the configs under DIR instead of the packaged ones; ``--import MODULE`` (repeatable)
imports a module that registers methods, proxies or benchmarks first (a config's own ``custom_imports`` outside
the package are imported as it is read).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from fsa_seg.benchmarks import BENCHMARKS
from fsa_seg.resources import CONFIG_DIR
from fsa_seg.zoo.config_index import collect, matches, render
from fsa_seg.zoo.extensions import import_extensions


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="List the fsa-seg evaluation configs.")
    parser.add_argument("--method", nargs="+", help="vanilla maskclip sclip clearclip naclip proxyclip sam3")
    parser.add_argument("--fsa", nargs="+", choices=["on", "off"])
    parser.add_argument("--backbone", nargs="+", help="ViT-B-16 | vit-b16 | ViT-L-14 | vit-l14 | ViT-H-14 | vit-h14")
    parser.add_argument("--vfm", nargs="+", help="sam dino dinov2 mae (ProxyCLIP's proxy model)")
    parser.add_argument("--dataset", nargs="+", help=f"benchmarks: {' '.join(BENCHMARKS)}")
    parser.add_argument("--config-dir", default=str(CONFIG_DIR), metavar="DIR",
                        help="list the configs under DIR (default: the packaged configs)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it registers methods, proxies, benchmarks); repeatable")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="comma-separated output")
    out.add_argument("--paths", action="store_true", help="print only the config paths")
    args = parser.parse_args(argv)
    try:
        import_extensions(args.imports)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    rows = [r for r in collect(args.config_dir) if all(matches(r, k, getattr(args, k))
                                        for k in ("method", "fsa", "backbone", "vfm", "dataset"))]
    if args.paths:
        print("\n".join(r["path"] for r in rows))
    else:
        print(render(rows, csv=args.csv))
        if not args.csv:
            print(f"\n{len(rows)} configs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate the evaluation configs from the registries: every base method, with and without FSA, on every
registered benchmark, for the paper's three CLIP backbones (and, for ProxyCLIP, each registered proxy model), SAM3
and SAM3 + FSA, the protocol bases they compose and each benchmark's dataset base.

    python tools/gen_configs.py            # (re)write the generated files; idempotent
    python tools/gen_configs.py --check    # exit 1 if a committed file differs from the generator's output
    python tools/gen_configs.py --import my_methods --out-dir /tmp/configs   # with outside registrations

What is generated and how the configs compose: :mod:`fsa_seg.zoo.generate`; the released protocols and
backbones: :mod:`fsa_seg.zoo.protocols`. ``--import MODULE`` (repeatable) imports a module that registers a base
method, proxy, benchmark or protocol first: they are generated as the package's own, and each config that uses
them imports the module (``custom_imports``). ``--out-dir DIR``: DIR plays ``configs/`` (default: the packaged
configs); the hand-written bases (``_base_/models``, ``_base_/default_runtime.py``) are not written there.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from fsa_seg.resources import CONFIG_DIR
from fsa_seg.zoo.generate import differences, expected_files, import_extensions, write_all


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the method/backbone/benchmark configs.")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it registers methods, proxies, benchmarks); repeatable")
    parser.add_argument("--out-dir", type=Path, default=CONFIG_DIR, metavar="DIR",
                        help="the folder that plays configs/ (default: the packaged configs)")
    args = parser.parse_args(argv)
    try:
        imports = import_extensions(args.imports)
        expected = expected_files(imports)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        diff = differences(expected, args.out_dir)
        for line in diff:
            print(line)
        print(f"{len(expected)} generated files, {len(diff)} out of date")
        return 1 if diff else 0
    written, unchanged, removed = write_all(expected, args.out_dir)
    print(f"wrote {written}, unchanged {unchanged}, removed {removed} stale generated files")
    return 0


if __name__ == "__main__":
    sys.exit(main())

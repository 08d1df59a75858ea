"""Print the versions and devices a bug report needs (mmseg's convention), and why a present NVIDIA GPU is
not used, if it is not.

    python tools/collect_env.py           # key: value lines (paste them into an issue)
    python tools/collect_env.py --json    # the same as JSON
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from fsa_seg.diagnostics.env_info import collect_env, format_env


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Versions and devices for a bug report.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of key: value lines")
    args = parser.parse_args(argv)
    env = collect_env()
    print(json.dumps(env, indent=2) if args.json else format_env(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run a command-line tool of tools/ as a user does (a subprocess), for the tests of flags and exit codes.

The tools are thin front ends over the package (``fsa_seg.apis`` and friends), which the other tests call
in-process; only what the command line adds (parsing, messages, exit codes) is tested through here.
"""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_tool(name: str, *args: str, timeout: float = 600, env: dict = None) -> subprocess.CompletedProcess:
    """``python tools/<name>.py ARGS`` from the repository root; text output captured. ``env`` adds to this
    process's environment; a value of None removes the variable."""
    full_env = {k: v for k, v in dict(os.environ, **(env or {})).items() if v is not None}
    # The checkout under test first (it may not be the one installed in editable mode).
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full_env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, str(REPO / "tools" / f"{name}.py"), *map(str, args)], cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)

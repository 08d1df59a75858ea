"""Grids of config values: parsing ``KEY=V1,V2,...`` items, expanding them into combinations, and naming each
combination (its label and its work dir). ``tools/test.py --variants`` and ``tools/sweep.py --grid`` read the
same syntax; a sweep and a one-pass run name a combination's work dir the same way.

* :func:`parse_grid` reads the items (values parsed like ``--cfg-options``: int, float, bool, None, else string;
  a value list holding commas as JSON: ``'k=[[1,2],[3,4]]'``) into a :data:`Grid`;
* :func:`expand_grid` gives every combination, first key slowest;
* :func:`combo_label` / :func:`combo_dirname` / :func:`combo_dir` name a combination (``top_p=0.3 lamda=2``,
  ``top_p=0.3__lamda=2``, ``WORK_DIR/top_p=0.3__lamda=2``).
"""
from __future__ import annotations

import itertools
import json
import os.path as osp
import re
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from mmengine.config import DictAction

Grid = List[Tuple[str, List[Any]]]


class GridError(ValueError):
    """Bad grid input; the message (one line) says what to fix."""


def parse_value(text: str) -> Any:
    """One grid value, parsed as ``--cfg-options`` parses it (``None``/``none``/``null`` -> ``None``)."""
    text = text.strip()
    if text in ("None", "none", "null"):
        return None
    return DictAction._parse_int_float_bool(text)


def parse_grid(items: Sequence[str], flag: str = "--grid") -> Grid:
    """``['KEY=V1,V2,...', ...]`` as ``[(key, [values]), ...]``; a :class:`GridError` naming ``flag`` for a
    malformed item, an empty value or a key given twice."""
    grid: Grid = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise GridError(f"{flag} {item}: expected KEY=V1,V2,... e.g. {flag} model.top_p=0.3,0.45,0.6")
        if values.strip().startswith("["):
            try:
                parsed = json.loads(values)
            except ValueError as err:
                raise GridError(f"{flag} {item}: the value list is not valid JSON ({err})") from None
        else:
            parsed = [parse_value(v) for v in values.split(",")]
            if any(isinstance(v, str) and not v for v in parsed):
                raise GridError(f"{flag} {item}: empty value (check for doubled or trailing commas)")
        if any(key == k for k, _ in grid):
            raise GridError(f"{flag} {key} is given twice; put all its values in one {flag}")
        grid.append((key, list(parsed)))
    return grid


def expand_grid(grid: Sequence[Tuple[str, Sequence[Any]]]) -> List[Dict[str, Any]]:
    """Every combination of ``[(key, values), ...]`` as ``{key: value}`` dicts, first key slowest."""
    keys = [k for k, _ in grid]
    return [dict(zip(keys, values)) for values in itertools.product(*[v for _, v in grid])]


def short_key(key: str) -> str:
    """A key as tables and names show it: without the ``model.`` prefix."""
    return key[len("model."):] if key.startswith("model.") else key


def combo_label(combo: Mapping[str, Any]) -> str:
    """``top_p=0.3 lamda=2`` (``(config as is)`` for the empty combination)."""
    return " ".join(f"{short_key(k)}={v}" for k, v in combo.items()) or "(config as is)"


def combo_dirname(combo: Mapping[str, Any]) -> str:
    """The folder name of a combination, ``top_p=0.3__lamda=2`` (``default`` when empty; other characters than
    letters, digits and ``._=+-`` become ``-``; at most 200 characters)."""
    if not combo:
        return "default"
    text = "__".join(f"{short_key(k)}={v}" for k, v in combo.items())
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", text)[:200]


def combo_dir(work_dir: str, combo: Mapping[str, Any]) -> str:
    """``WORK_DIR/<key=value__...>``: a combination's work dir."""
    return osp.join(work_dir, combo_dirname(combo))

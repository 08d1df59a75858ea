"""Published mIoU (%) of the paper, for ``tools/reproduce.py``'s side-by-side table.

Rules: every number records where it comes from (``source``: paper, table, row); a number that is not known
is ``None`` and its table cell stays empty. Never fill a cell with a guess or a number from another setting.

Status: the numbers are NOT transcribed yet. The released README (github.com/chi-chi-zx/FSA) reports no
numbers (only hyper-parameters, in ``hyper_param.txt``), and the paper's tables (arXiv:2508.20265) could
not be read from the machine this file was written on. To fill a row, copy the numbers from the paper's
comparison table, set ``source`` to the table and row (e.g. ``"arXiv:2508.20265v1, Table N, row
'ProxyCLIP (SAM) + Ours', ViT-B/16"``) and look at the table of ``tools/reproduce.py --from-results``. A different file with the same layout can be passed with ``--published FILE.json``.

Layout (the same as JSON, for ``--published``)::

    {"paper": "...", "entries": [
        {"method": "proxyclip", "vfm": "sam", "backbone": "ViT-B-16", "fsa": true,
         "source": "arXiv:2508.20265v1, Table N, row ...",
         "mIoU": {"voc21": 61.2, ..., "ade20k": null}, "avg": null}]}

``mIoU`` keys are the benchmark names of :data:`fsa_seg.benchmarks.BENCHMARKS`; ``avg`` is the paper's own
average over the eight benchmarks (``None``: not published or not transcribed). A cell may also be
``{"value": 61.2, "source": "..."}`` when one number comes from somewhere else than its row.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

from .benchmarks import BENCHMARKS
from .experiments import backbone_tag

PAPER = ("Z. Chi, Y. Wu, L. Gu, H. Liu, Z. Wang, Y. Zhang, Y. Wang, K. N. Plataniotis: Plug-in Feedback "
         "Self-adaptive Attention in CLIP for Training-free Open-Vocabulary Segmentation, ICCV 2025, "
         "arXiv:2508.20265")

_NOT_TRANSCRIBED = ("not transcribed: to be copied from the comparison table of arXiv:2508.20265 (the released "
                    "README has no numbers); every cell is empty until then")


def _empty_row() -> Dict[str, Optional[float]]:
    return {name: None for name, bench in BENCHMARKS.items() if bench.paper_table}


PUBLISHED: Dict[str, Any] = {
    "paper": PAPER,
    "entries": [
        {"method": "proxyclip", "vfm": "sam", "backbone": "ViT-B-16", "fsa": False,
         "source": _NOT_TRANSCRIBED, "mIoU": _empty_row(), "avg": None},
        {"method": "proxyclip", "vfm": "sam", "backbone": "ViT-B-16", "fsa": True,
         "source": _NOT_TRANSCRIBED, "mIoU": _empty_row(), "avg": None},
    ],
}


def load_published(path: Optional[str] = None) -> Dict[str, Any]:
    """The packaged numbers, or those of a JSON file with the same layout (``ValueError`` if malformed)."""
    if path is None:
        return PUBLISHED
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        raise FileNotFoundError(f"published-results file '{path}' cannot be read: {err.strerror}") from None
    except ValueError as err:
        raise ValueError(f"published-results file '{path}' is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ValueError(f"published-results file '{path}' needs {{\"entries\": [...]}} (see "
                         f"fsa_seg/published_results.py)")
    for i, entry in enumerate(data["entries"]):
        unknown = set((entry.get("mIoU") or {})) - set(BENCHMARKS)
        if unknown:
            raise ValueError(f"published-results file '{path}', entry {i}: unknown benchmark(s) "
                             f"{sorted(unknown)}; use {', '.join(BENCHMARKS)}")
    return data


def find_entry(data: Dict[str, Any], method: str, vfm: Optional[str], backbone: str, fsa: bool
               ) -> Optional[Dict[str, Any]]:
    """The entry of one table row (backbone names compared as tags: ``ViT-B-16`` == ``vit-b16``)."""
    for entry in data.get("entries", []):
        if (entry.get("method") == method and bool(entry.get("fsa")) == bool(fsa)
                and backbone_tag(str(entry.get("backbone", ""))) == backbone_tag(backbone)
                and (method != "proxyclip" or entry.get("vfm") == vfm)):
            return entry
    return None


def cell(entry: Optional[Dict[str, Any]], dataset: str) -> Tuple[Optional[float], Optional[str]]:
    """``(value, source)`` of one published number; ``(None, None)`` when unknown."""
    if entry is None:
        return None, None
    value = (entry.get("mIoU") or {}).get(dataset)
    source = entry.get("source")
    if isinstance(value, dict):
        source = value.get("source", source)
        value = value.get("value")
    return (float(value) if value is not None else None), source


def published_average(entry: Optional[Dict[str, Any]]) -> Optional[float]:
    value = entry.get("avg") if entry else None
    return float(value) if value is not None else None


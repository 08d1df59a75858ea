"""Published mIoU (%) of FSA and its base methods, for ``tools/reproduce.py``'s side-by-side table.

Rules: every number records where it comes from (``source``) and what it is (``kind``); a number that is not
known is ``None`` and its table cell stays empty. Never fill a cell with a guess or a number from another
setting. ``kind`` is one of :data:`KINDS`:

* ``paper``: the method's own paper (possibly read from another work's reprint, named in ``source``);
* ``re-run``: a run of the released code reported outside the method's paper (its README, an issue, or
  another paper that says it re-ran the method);
* ``reprint``: a number printed in another work's table that does not say whether it is the cited paper's
  number or its own run.

FSA's own tables (arXiv:2508.20265) could not be read where this file was written: the only FSA numbers are
the author's reproduction in github.com/chi-chi-zx/FSA issue #2. To add a row, copy the numbers with their
table and row as ``source``. A different file with the same layout can be passed with ``--published FILE.json``.

Layout (the same as JSON, for ``--published``)::

    {"paper": "...", "entries": [
        {"method": "proxyclip", "vfm": "dino", "backbone": "ViT-B-16", "fsa": false, "kind": "paper",
         "source": "...", "note": "...", "settings": {"pamr": true},
         "mIoU": {"voc21": 61.3, ..., "ade20k": 20.2}, "avg": 42.3}]}

``mIoU`` keys are the benchmark names of :data:`fsa_seg.benchmarks.BENCHMARKS`; ``avg`` is the source's own
average over the eight benchmarks (``None``: not printed). A cell may also be ``{"value": 61.2, "source": "..."}``
when one number comes from somewhere else than its row. ``settings`` (optional) lists model keys the number's
setting needs (e.g. NACLIP with PAMR): an entry is compared only with runs whose config has those values
(:func:`find_entry`); among the entries that fit, the first listed is compared, the others are printed below
the table.

Column values were checked against the figures they cite where those could be read: the Trident README's
``assets/data_result.png`` (github.com/YuHengsss/Trident @ a93b346), ResCLIP's ``figs/main_results_w.png`` and
``figs/main_results_wo.png`` (github.com/yvhangyang/ResCLIP @ 0e085f7), the SCLIP and NACLIP READMEs and FSA's
issue #2 (see each entry). The FreeCP README was not compared.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ..benchmarks import BENCHMARKS
from .experiments import backbone_tag

PAPER = ("Z. Chi, Y. Wu, L. Gu, H. Liu, Z. Wang, Y. Zhang, Y. Wang, K. N. Plataniotis: Plug-in Feedback "
         "Self-adaptive Attention in CLIP for Training-free Open-Vocabulary Segmentation, ICCV 2025, "
         "arXiv:2508.20265")

KINDS: Dict[str, str] = {
    "paper": "the method's own paper",
    "re-run": "a run of the released code, reported outside the method's paper",
    "reprint": "another work's table; it does not say whether it is the cited paper's number or its own run",
}

_NOT_TRANSCRIBED = ("not transcribed: to be copied from the comparison table of arXiv:2508.20265 (the released "
                    "README has no numbers); every cell is empty until then")
_COLUMNS = ("voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff164k", "cityscapes", "ade20k")

_TRIDENT = "Trident (ICCV 2025) README results figure (github.com/YuHengsss/Trident, assets/data_result.png)"
_RESCLIP = ("ResCLIP (CVPR 2025) README results figures (github.com/yvhangyang/ResCLIP, figs/main_results_w.png "
            "and figs/main_results_wo.png)")
_FREECP = "FreeCP README (its numbers not compared)"


def _row(*values: Optional[float]) -> Dict[str, Optional[float]]:
    """The eight benchmarks in the paper's column order: VOC21, Context60, COCO-Object, VOC20, Context59,
    COCO-Stuff, Cityscapes, ADE20K."""
    assert len(values) == len(_COLUMNS)
    return dict(zip(_COLUMNS, values))


def _empty_row() -> Dict[str, Optional[float]]:
    return {name: None for name, bench in BENCHMARKS.items() if bench.paper_table}


def _entry(method: str, backbone: Optional[str], kind: str, source: str, miou: Dict[str, Optional[float]],
           avg: Optional[float] = None, fsa: bool = False, vfm: Optional[str] = None, note: str = "",
           settings: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    entry = {"method": method, "vfm": vfm, "backbone": backbone, "fsa": fsa, "kind": kind, "source": source,
             "mIoU": miou, "avg": avg}
    if note:
        entry["note"] = note
    if settings:
        entry["settings"] = settings
    return entry


PUBLISHED: Dict[str, Any] = {
    "paper": PAPER,
    "entries": [
        # --- FSA + ProxyCLIP -------------------------------------------------------------------------------
        {"method": "proxyclip", "vfm": "sam", "backbone": "ViT-B-16", "fsa": False, "kind": "paper",
         "source": _NOT_TRANSCRIBED, "mIoU": _empty_row(), "avg": None},
        {"method": "proxyclip", "vfm": "sam", "backbone": "ViT-B-16", "fsa": True, "kind": "paper",
         "source": _NOT_TRANSCRIBED, "mIoU": _empty_row(), "avg": None},
        _entry("proxyclip", "ViT-B-16", "re-run", fsa=True, vfm="dino",
               source="FSA author's reproduction with the released code and default config (DINO ViT-B/8 "
                      "proxy, CLIP ViT-B/16), github.com/chi-chi-zx/FSA issue #2 (2026-04-17)",
               note="the comment reads 'VOC20 (63.7) and VOC21 (82.3)'; recorded swapped (VOC21 63.7, VOC20 "
                    "82.3): VOC21 is the lower of the two for every method, so the labels are almost certainly "
                    "exchanged. The rest of FSA's tables could not be read: their cells are empty",
               miou=_row(63.7, None, None, 82.3, None, None, None, None)),
        # --- ProxyCLIP (DINO ViT-B/8 proxy) -----------------------------------------------------------------
        _entry("proxyclip", "ViT-B-16", "paper", vfm="dino",
               source=f"ProxyCLIP (Lan et al., ECCV 2024), as reprinted in the {_TRIDENT}",
               miou=_row(61.3, 35.3, 37.5, 80.3, 39.1, 26.5, 38.1, 20.2), avg=42.3),
        _entry("proxyclip", "ViT-H-14", "paper", vfm="dino",
               source=f"ProxyCLIP (Lan et al., ECCV 2024), OpenCLIP ViT-H/14, as reprinted in the {_TRIDENT}",
               miou=_row(65.0, 35.4, 38.6, 83.3, 39.6, 26.8, 42.0, 24.2), avg=44.4),
        # --- CLIP-native methods, CLIP ViT-B/16 -------------------------------------------------------------
        _entry("maskclip", "ViT-B-16", "re-run",
               source=f"MaskCLIP (Zhou et al., ECCV 2022) as re-run in the SCLIP paper (Wang et al., ECCV 2024), "
                      f"as reprinted in the {_TRIDENT}",
               note="SCLIP's protocol; this repository's MaskCLIP configs follow the released FSA protocol",
               miou=_row(43.4, 23.2, 20.6, 74.9, 26.4, 16.7, 24.9, 11.9), avg=30.3),
        _entry("sclip", "ViT-B-16", "paper",
               source=f"SCLIP (Wang et al., ECCV 2024), as reprinted in the {_TRIDENT} and the {_RESCLIP} "
                      f"(also the {_FREECP})",
               miou=_row(59.1, 30.4, 30.5, 80.4, 34.2, 22.4, 32.2, 16.1), avg=38.2),
        _entry("sclip", "ViT-B-16", "re-run",
               source="SCLIP's repository README, results 'with the default setup in this repo' "
                      "(github.com/wangf3014/SCLIP @ b56bd30)",
               miou=_row(59.63, 31.74, 33.52, 81.54, 34.46, 22.77, 32.34, 16.45)),
        _entry("clearclip", "ViT-B-16", "paper",
               source=f"ClearCLIP (Lan et al., ECCV 2024), as reprinted in the {_RESCLIP} (also the {_FREECP})",
               miou=_row(51.8, 32.6, 33.0, 80.9, 35.9, 23.9, 30.0, 16.7), avg=38.1),
        _entry("naclip", "ViT-B-16", "re-run", settings={"pamr": True},
               source="NACLIP's repository README, results 'with the default setup in this repo' (test_all.sh "
                      "reduced naclip 5 on: PAMR on; github.com/sinahmr/NACLIP @ 0cac3a6)",
               note="with PAMR, as this repository's NACLIP configs (its main-results protocol)",
               miou=_row(64.07, 34.99, 36.19, 83.03, 38.35, 25.69, 38.27, 19.05), avg=42.46),
        _entry("naclip", "ViT-B-16", "paper", settings={"pamr": False},
               source=f"NACLIP (Hajimiri et al., WACV 2025), without PAMR, as reprinted in the {_TRIDENT} and "
                      f"the {_RESCLIP}",
               note="without PAMR: compare with --cfg-options model.pamr=False",
               miou=_row(58.9, 32.2, 33.2, 79.7, 35.2, 23.3, 35.5, 17.4), avg=39.4),
        # --- CLIP ViT-L/14 ----------------------------------------------------------------------------------
        _entry("sclip", "ViT-L-14", "reprint", source=f"SCLIP, CLIP ViT-L/14, in the {_RESCLIP}",
               miou=_row(44.4, 22.3, 24.9, 60.3, 20.5, 13.1, 17.0, 7.1)),
        _entry("clearclip", "ViT-L-14", "reprint", source=f"ClearCLIP, CLIP ViT-L/14, in the {_RESCLIP}",
               miou=_row(48.7, 28.3, 29.7, 80.0, 29.6, 19.9, 27.9, 15.0)),
        _entry("naclip", "ViT-L-14", "reprint", source=f"NACLIP, CLIP ViT-L/14, in the {_RESCLIP}",
               note="PAMR not stated (NACLIP's paper table is without PAMR)",
               miou=_row(52.2, 28.7, 29.9, 78.7, 32.1, 21.4, 31.4, 17.3)),
        # --- SAM3 (its own model; no CLIP backbone) ------------------------------------------------------------
        _entry("sam3", None, "paper",
               source="SAM 3: Segment Anything with Concepts (Carion et al., arXiv:2511.16719), semantic "
                      "segmentation results (transcribed from a quotation of the paper's table, not checked against "
                      "the paper itself)",
               note="SAM3's own semantic-segmentation evaluation; configs/sam3_*.py are this repository's "
                    "training-free use of SAM3, not necessarily the paper's protocol",
               miou={"ade847": 13.8, "context59": 60.8, "cityscapes": 65.2}),
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
        if entry.get("kind", "paper") not in KINDS:
            raise ValueError(f"published-results file '{path}', entry {i}: kind '{entry.get('kind')}' is not "
                             f"one of {', '.join(KINDS)}")
        unknown = set((entry.get("mIoU") or {})) - set(BENCHMARKS)
        if unknown:
            raise ValueError(f"published-results file '{path}', entry {i}: unknown benchmark(s) "
                             f"{sorted(unknown)}; use {', '.join(BENCHMARKS)}")
    return data


def matching_entries(data: Mapping[str, Any], method: str, vfm: Optional[str], backbone: str, fsa: bool
                     ) -> List[Dict[str, Any]]:
    """Every entry of one table row, in file order (backbones compared as tags: ``ViT-B-16`` == ``vit-b16``)."""
    return [entry for entry in data.get("entries", [])
            if entry.get("method") == method and bool(entry.get("fsa")) == bool(fsa)
            and backbone_tag(str(entry.get("backbone", ""))) == backbone_tag(backbone)
            and (method != "proxyclip" or entry.get("vfm") == vfm)]


def settings_mismatch(entry: Mapping[str, Any], model: Optional[Mapping[str, Any]]) -> List[str]:
    """``'key=entry value (run: value)'`` for each of the entry's settings the run's model config differs in."""
    if model is None:
        return []
    return [f"{key}={value} (run: {model.get(key)})" for key, value in (entry.get("settings") or {}).items()
            if model.get(key) != value]


def find_entry(data: Mapping[str, Any], method: str, vfm: Optional[str], backbone: str, fsa: bool,
               model: Optional[Mapping[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The entry a run is compared with: the first of :func:`matching_entries` whose ``settings`` the run's model
    config (``model``; ``None``: not checked) has."""
    for entry in matching_entries(data, method, vfm, backbone, fsa):
        if not settings_mismatch(entry, model):
            return entry
    return None


def describe_entry(entry: Mapping[str, Any]) -> str:
    """``'[kind] source; note'`` for the table's notes."""
    text = f"[{entry.get('kind', 'paper')}] {entry.get('source') or 'no source'}"
    return text + (f"; {entry['note']}" if entry.get("note") else "")


def entry_numbers(entry: Mapping[str, Any], datasets: Iterable[str]) -> str:
    """``'VOC21 59.63, Context60 31.74, ...'`` (known cells only)."""
    parts = []
    for ds in datasets:
        value, _ = cell(entry, ds)
        if value is not None:
            parts.append(f"{BENCHMARKS[ds].column} {value:g}")
    return ", ".join(parts) or "no numbers"


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


"""Writing figures and their numbers: every figure as PNG (screen) and PDF (paper; SVG on request), its numbers
as CSV and JSON next to it; label maps as palette PNGs. And whether a model ran with random weights.
"""
from __future__ import annotations

import csv
import json
import os
import os.path as osp
from typing import Any, List, Mapping, Optional, Sequence

import numpy as np

#: the formats every figure is written in
FIGURE_FORMATS = ("png", "pdf")


def save_figure(fig, stem: str, formats: Sequence[str] = FIGURE_FORMATS, dpi: int = 150) -> List[str]:
    """``fig`` (matplotlib) as ``stem.png``, ``stem.pdf`` (and ``stem.svg`` when asked); the paths."""
    os.makedirs(osp.dirname(osp.abspath(stem)), exist_ok=True)
    paths = []
    for fmt in formats:
        path = f"{stem}.{fmt}"
        fig.savefig(path, dpi=dpi, format=fmt, facecolor="white")
        paths.append(path)
    return paths


def save_image(image: np.ndarray, path: str) -> str:
    """RGB uint8 ``[H, W, 3]`` as a PNG."""
    from PIL import Image

    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    return path


def save_labels(labels: np.ndarray, colors: np.ndarray, path: str) -> str:
    """A label map as a palette PNG: pixel value = class id (at most 256 ids), colours = ``colors``."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"label ids {labels.min()}..{labels.max()} do not fit a palette PNG (0..255)")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = np.asarray(colors[:256], dtype=np.uint8).ravel().tolist()
    img.putpalette(flat + [0] * (768 - len(flat)))
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    img.save(path)
    return path


def write_table(rows: Sequence[Mapping[str, Any]], stem: str, meta: Optional[Mapping[str, Any]] = None,
                fields: Optional[Sequence[str]] = None) -> List[str]:
    """``rows`` as ``stem.csv`` (one row each, columns ``fields`` or the first row's keys) and ``stem.json``
    (``{**meta, "rows": rows}``); the two paths."""
    fields = list(fields or (rows[0].keys() if rows else []))
    os.makedirs(osp.dirname(osp.abspath(stem)), exist_ok=True)
    with open(f"{stem}.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for row in rows:
            writer.writerow(["" if row.get(k) is None else row.get(k) for k in fields])
    with open(f"{stem}.json", "w", encoding="utf-8") as f:
        json.dump({**dict(meta or {}), "rows": [dict(r) for r in rows]}, f, indent=2, default=_plain)
    return [f"{stem}.csv", f"{stem}.json"]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def random_weights_used(model: Any = None, cfg: Any = None) -> bool:
    """Whether predictions of this model (an mmseg segmentor, an :class:`~fsa_seg.open_vocab.OpenVocabModel`)
    or of this config come from random weights. The weights are random exactly when the model is built with
    ``random_weights=True`` (that is when the builders call :func:`fsa_seg.weights.warn_random_weights`), and the
    random-weight test proxies (``tiny-*``) have no other kind."""
    configs: List[Any] = []
    if cfg is not None:
        configs.append(cfg.get("model", cfg) if hasattr(cfg, "get") else cfg)
    for obj in (model, getattr(model, "module", None)):  # a distributed wrapper keeps the model in .module
        if obj is not None and getattr(obj, "cfg", None) is not None:
            configs.append(obj.cfg.get("model", {}))
        for part in (obj, getattr(obj, "model", None)):
            if part is not None and getattr(part, "random_weights", None):
                return True
    for model_cfg in configs:
        get = model_cfg.get if hasattr(model_cfg, "get") else (lambda key, default=None: default)
        if get("random_weights", False):
            return True
        if str(get("vfm", "") or "").startswith("tiny-"):
            return True
    return False


def describe_variant(variant: Mapping[str, Any]) -> str:
    """``{'model.fsa': False}`` -> ``fsa=False`` (``as configured`` for ``{}``)."""
    return " ".join(f"{k.split('.', 1)[1] if k.startswith('model.') else k}={v}" for k, v in variant.items()) \
        or "as configured"

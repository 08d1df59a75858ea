"""FSA's attention for chosen pixels, drawn over the image (``tools/demo.py --point X,Y``), and the kept share of
top-p pruning over many images (Fig. 9 style, ``tools/analyze.py``). The rows come from
:func:`fsa_seg.internals.explain` (the library's own forward, traced); nothing here recomputes them.

Per point, one figure row over the window the rows belong to (the model's input resolution, the window padded as
the model pads it): the window with the point | base attention ``A0`` | isolated affinity | kept set after
top-p pruning (with its share of the row) | sharpened ``A_fb`` | ensembled. A second figure shows each strategy's
prediction alone (base, isolation, pruning, both, ensemble: the paper's Table 7 modules).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from . import drawing
from .output import random_weights_used, save_figure, save_labels, write_table

#: the maps of a point's row, in drawing order, and their titles
ROW_FIELDS = (("base", "base A0"), ("isolated", "isolated affinity"), ("kept", "kept set"),
              ("sharpened", "sharpened A_fb"), ("ensembled", "ensembled"))
STRATEGY_TITLES = {"base": "base", "isolation": "isolation only", "pruning": "pruning only",
                   "both": "isolation + pruning", "ensemble": "FSA (ensemble)"}


def parse_points(values: Sequence[str]) -> List[Tuple[int, int]]:
    """``["10,20", "5,7;8,9"]`` -> ``[(10, 20), (5, 7), (8, 9)]``; ``ValueError`` (one line) for a bad one."""
    points = []
    for value in values:
        for part in str(value).replace(" ", "").split(";"):
            if not part:
                continue
            try:
                x, y = (int(v) for v in part.split(","))
            except ValueError:
                raise ValueError(f"--point {part!r}: give X,Y in pixels of the image, e.g. --point 120,80") from None
            points.append((x, y))
    return points


def model_pixels(model, rgb: np.ndarray) -> torch.Tensor:
    """RGB pixels 0..255 ``[3, h, w]`` (fp32) of ``rgb`` at the resolution the model sees it: the config's test
    pipeline (its resize) without normalisation (the model normalises)."""
    from mmcv.transforms import Compose

    cfg = model.cfg
    steps = copy.deepcopy(cfg.test_dataloader.dataset.get("pipeline") or cfg.get("test_pipeline"))
    steps = [s for s in steps if s.get("type") != "LoadAnnotations"]
    steps[0] = dict(type="LoadImageFromNDArray")
    data = Compose(steps)(dict(img=np.ascontiguousarray(rgb[:, :, ::-1])))  # the pipeline works in BGR
    return data["inputs"][[2, 1, 0]].float()


def scale_points(points: Sequence[Tuple[int, int]], size: Tuple[int, int], to: Tuple[int, int]
                 ) -> List[Tuple[int, int]]:
    """Points ``(x, y)`` of an image of ``size`` ``(H, W)`` on the same image resized to ``to``."""
    (h, w), (th, tw) = size, to
    return [(min(tw - 1, int(x * tw / w)), min(th - 1, int(y * th / h))) for x, y in points]


def explain_image(model, rgb: np.ndarray, points: Sequence[Tuple[int, int]]):
    """``(explanation, pixels, model_points)``: :func:`fsa_seg.internals.explain` of segmentor ``model`` on ``rgb``
    at the model's resolution, for ``points`` given in ``rgb``'s pixels (checked first)."""
    from fsa_seg.clip_model import CLIPSegModel
    from fsa_seg.internals import explain

    if not isinstance(model.model, CLIPSegModel):
        raise ValueError(f"--point draws the attention rows of CLIP models; {type(model.model).__name__} is not one")
    h, w = rgb.shape[:2]
    for x, y in points:
        if not (0 <= x < w and 0 <= y < h):
            raise ValueError(f"--point {x},{y} is outside the {w}x{h} image")
    pixels = model_pixels(model, rgb)
    inner = scale_points(points, (h, w), tuple(pixels.shape[-2:]))
    return explain(model.model, pixels, inner), pixels, inner


def _window(pixels: torch.Tensor, box, padding) -> np.ndarray:
    """The window ``box`` (y1, y2, x1, x2) of ``pixels`` as RGB uint8, zero-padded as the model pads it."""
    y1, y2, x1, x2 = box
    crop = pixels[:, y1:y2, x1:x2].clamp(0, 255).round().byte().permute(1, 2, 0).cpu().numpy()
    left, right, top, bottom = padding
    return np.pad(crop, ((top, bottom), (left, right), (0, 0)))


def point_rows(explanation, pixels: torch.Tensor) -> List[Dict[str, Any]]:
    """Per point, the first window holding it: the window image, the point in it and the five maps on the grid
    (``kept`` as 0/1), the query token and its kept share."""
    out = []
    for k, (x, y) in enumerate(explanation.points):
        found = explanation.rows_of(k)
        if not found:
            continue
        crop, row = found[0]
        rows = crop.rows
        window = _window(pixels, crop.box, crop.padding)
        maps = {name: rows.maps(name)[row].float().numpy() for name, _ in ROW_FIELDS}
        token = int(rows.query_tokens[row])
        kept = rows.kept[row]
        out.append(dict(point=(x, y), window=window, box=tuple(int(v) for v in crop.box),
                        padding=tuple(int(v) for v in crop.padding),
                        at=(x - crop.box[2] + crop.padding[0], y - crop.box[0] + crop.padding[2]),
                        grid=tuple(rows.grid), token=token, maps=maps, kept_count=int(kept.sum()),
                        kept_share=float(rows.kept_share[token]), windows=len(found)))
    return out


def points_figure(rows: Sequence[Mapping[str, Any]], random_weights: bool):
    """One row per point: the window with the point, then the five maps over it."""
    n_cols = 1 + len(ROW_FIELDS)
    h, w = rows[0]["window"].shape[:2]
    cell = 2.2
    cell_h = cell * h / w + 0.45
    height = len(rows) * cell_h + 0.3 + (drawing.BANNER_INCHES if random_weights else 0.0)
    fig = drawing.new_figure(cell * n_cols, height)
    for i, r in enumerate(rows):
        bottom = (0.15 + (len(rows) - 1 - i) * cell_h) / height
        x, y = r.get("image_point", r["point"])
        panels = [(r["window"], f"point ({x}, {y})")]
        for name, title in ROW_FIELDS:
            if name == "kept":
                title = f"kept set: {100.0 * r['kept_share']:.1f}% of the row"
            panels.append((drawing.heat_overlay(r["window"], r["maps"][name]), title))
        for j, (image, title) in enumerate(panels):
            ax = fig.add_axes([j / n_cols + 0.004, bottom, 1 / n_cols - 0.008, (cell_h - 0.45) / height])
            ax.imshow(image, interpolation="nearest")
            ax.plot([r["at"][0]], [r["at"][1]], marker="+", color="red", markersize=10, markeredgewidth=2)
            ax.set_title(title, fontsize=7)
            ax.set_axis_off()
    drawing.figure_banner(fig, random_weights)
    return fig


def strategies_figure(explanation, pixels: torch.Tensor, classes: Sequence[str], colors: np.ndarray,
                      random_weights: bool):
    """Each strategy's prediction alone over the image (model resolution), one legend."""
    rgb = pixels.clamp(0, 255).round().byte().permute(1, 2, 0).cpu().numpy()
    names = [n for n in STRATEGY_TITLES if n in explanation.predictions]
    h, w = rgb.shape[:2]
    cell = 2.6
    height = cell * h / w + 1.0 + (drawing.BANNER_INCHES if random_weights else 0.0)
    fig = drawing.new_figure(cell * len(names), height)
    present = set()
    for j, name in enumerate(names):
        labels = explanation.predictions[name].numpy()
        present.update(np.unique(labels).tolist())
        ax = fig.add_axes([j / len(names) + 0.004, 0.55 / height, 1 / len(names) - 0.008, cell * h / w / height])
        ax.imshow(drawing.blend(rgb, labels, colors), interpolation="nearest")
        ax.set_title(STRATEGY_TITLES[name], fontsize=8)
        ax.set_axis_off()
    drawing.figure_legend(fig, drawing.legend_entries(classes, colors, sorted(present)))
    drawing.figure_banner(fig, random_weights)
    return fig


def write_points(model, rgb: np.ndarray, points: Sequence[Tuple[int, int]], stem: str,
                 colors: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """``stem_points.{png,pdf,csv,json}`` (the maps per point; the JSON holds the rows on the grid) and
    ``stem_strategies.{png,pdf,csv,json}`` plus ``stem_strategy_<name>_labels.png``; returns paths and numbers."""
    from fsa_seg.apis.inference import model_classes

    explanation, pixels, inner = explain_image(model, rgb, points)
    random_weights = random_weights_used(model)
    rows = point_rows(explanation, pixels)
    for p, r in zip(points, rows):
        r["image_point"] = p
    table = [{"x": p[0], "y": p[1], "model_x": r["point"][0], "model_y": r["point"][1],
              "window": "{}:{},{}:{}".format(*r["box"]), "grid": "{}x{}".format(*r["grid"]), "token": r["token"],
              "kept_count": r["kept_count"], "kept_share": round(r["kept_share"], 6), "windows": r["windows"]}
             for p, r in zip(points, rows)]
    meta = dict(random_weights=random_weights, settings={k: v for k, v in explanation.settings.items()},
                model_size=list(pixels.shape[-2:]), image_size=list(rgb.shape[:2]),
                maps=[{"x": t["x"], "y": t["y"], **{name: r["maps"][name].tolist() for name, _ in ROW_FIELDS}}
                      for t, r in zip(table, rows)])
    out: Dict[str, Any] = {"explanation": explanation, "points": table}
    out["point_files"] = save_figure(points_figure(rows, random_weights), f"{stem}_points") + \
        write_table(table, f"{stem}_points", meta)
    classes = [words[0] for words in model_classes(model)]
    colors = drawing.palette(len(classes)) if colors is None else colors
    counts = [{"strategy": name, **{c: int((labels == k).sum()) for k, c in enumerate(classes)}}
              for name, labels in ((n, explanation.predictions[n].numpy()) for n in STRATEGY_TITLES
                                   if n in explanation.predictions)]
    out["strategy_files"] = (save_figure(strategies_figure(explanation, pixels, classes, colors, random_weights),
                                         f"{stem}_strategies")
                             + write_table(counts, f"{stem}_strategies", dict(random_weights=random_weights,
                                                                              model_size=list(pixels.shape[-2:])))
                             + [save_labels(explanation.predictions[c["strategy"]].numpy(), colors,
                                            f"{stem}_strategy_{c['strategy']}_labels.png") for c in counts])
    return out


def kept_share_values(model, rgb: np.ndarray) -> np.ndarray:
    """The kept share of every patch row of every window of ``rgb`` (segmentor ``model``'s settings)."""
    from fsa_seg.internals import explain

    pixels = model_pixels(model, rgb)
    return explain(model.model, pixels, [], strategies=["ensemble"]).kept_share.float().numpy()


def kept_share_summary(values: Mapping[str, np.ndarray]) -> List[Dict[str, Any]]:
    """Per method: rows, mean, quantiles (5, 25, 50, 75, 95 %) of the kept share (in %)."""
    out = []
    for method, v in values.items():
        v = np.asarray(v, dtype=np.float64) * 100.0
        q = np.percentile(v, [5, 25, 50, 75, 95]) if v.size else [float("nan")] * 5
        out.append({"method": method, "rows": int(v.size), "mean": round(float(v.mean()), 4) if v.size else None,
                    **{f"p{p}": round(float(x), 4) for p, x in zip((5, 25, 50, 75, 95), q)}})
    return out


def kept_share_figure(values: Mapping[str, np.ndarray], random_weights: bool):
    """Fig. 9 style: the distribution of the kept share per method (violins with the quartiles)."""
    names = list(values)
    height = 3.2 + (drawing.BANNER_INCHES if random_weights else 0.0)
    width = 1.6 + 1.2 * len(names)
    fig = drawing.new_figure(width, height)
    ax = fig.add_axes([0.9 / width, 0.7 / height, 1 - 1.1 / width, 2.1 / height])
    data = [np.asarray(values[n], dtype=np.float64) * 100.0 for n in names]
    ax.violinplot([d if d.size else np.zeros(1) for d in data], showmedians=True, showextrema=True)
    ax.set_xticks(np.arange(1, len(names) + 1), names, fontsize=8)
    ax.set_ylabel("kept share of a row (%)")
    ax.set_ylim(0, 100)
    ax.set_title("top-p pruning: kept share per patch row", fontsize=9)
    drawing.figure_banner(fig, random_weights)
    return fig


def write_kept_share(values: Mapping[str, np.ndarray], stem: str, random_weights: bool,
                     meta: Optional[Mapping[str, Any]] = None) -> List[str]:
    """``stem.{png,pdf}`` (violins) and ``stem.{csv,json}`` (the summary per method; the JSON also holds a
    10-bin histogram per method)."""
    hist = {m: np.histogram(np.asarray(v) * 100.0, bins=10, range=(0, 100))[0].tolist() for m, v in values.items()}
    return (save_figure(kept_share_figure(values, random_weights), stem)
            + write_table(kept_share_summary(values), stem, dict(meta or {}, random_weights=random_weights,
                                                                 histogram_bins_percent=list(range(0, 101, 10)),
                                                                 histogram=hist)))

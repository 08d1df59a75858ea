"""Base vs base + FSA over a dataset or a folder of images (``tools/analyze.py``).

Dataset (:func:`analyze_dataset`): one evaluation pass with two variants, ``model.fsa=False`` and
``model.fsa=True`` (:func:`fsa_seg.apis.one_pass.evaluate_variants`: the backbone runs once per crop batch), each
into its own work dir with its ``results.json`` and per-image records; the show-dir hook keeps every prediction
and ground truth as label maps. From these:

* ``per_class_iou`` - each class's IoU under base and under FSA (the evaluations' own per-class numbers), as a bar
  chart sorted by FSA - base;
* ``per_image`` - each image's mIoU under base and under FSA (from its per-image areas: the mean IoU over the
  classes present in its ground truth or prediction), sorted by the difference; ``gains_losses`` draws the
  ``top`` images FSA improves most and the ``top`` it worsens most: image | ground truth | base | base + FSA.

Folder (:func:`analyze_folder`): base and FSA of each image from one pass (:mod:`.compare`), no ground truth:

* ``per_image_changes`` - per image the pixels FSA changed (count, share), sorted; ``most_changed`` draws the
  ``top`` images with the largest share: image | base | base + FSA | changed pixels.

Both modes, CLIP models: ``kept_share`` - the distribution of the share of each patch row that top-p pruning
keeps, per base method (``methods``: the model's own by default; others that share its backbone and proxy), over
the images (Fig. 9 style: violins; the numbers: rows, mean and quantiles per method, and a histogram), from
:func:`fsa_seg.internals.explain`.

Every figure is written as PNG and PDF, its numbers as CSV and JSON of the same name; every figure made with random
weights carries the banner.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from . import drawing
from .output import random_weights_used, save_figure, write_table

#: the variants of the dataset pass: base first, then base + FSA
DATASET_VARIANTS = ({"model.fsa": False}, {"model.fsa": True})
NAMES = ("base", "fsa")


def image_miou(areas: np.ndarray) -> Optional[float]:
    """mIoU (%) of one image's areas ``[4, K]`` (intersect, union, pred, label): the mean IoU of the classes with
    a non-empty union; ``None`` when there is none."""
    intersect, union = np.asarray(areas[0], dtype=np.float64), np.asarray(areas[1], dtype=np.float64)
    present = union > 0
    if not present.any():
        return None
    return float(100.0 * np.mean(intersect[present] / union[present]))


def per_class_rows(base: Mapping[str, Any], fsa: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Per class: IoU under base and FSA (``results.json``'s ``per_class``), sorted by FSA - base (largest gain
    first; classes without an IoU last)."""
    rows = []
    for name in base:
        b, f = base[name].get("IoU"), fsa.get(name, {}).get("IoU")
        diff = None if b is None or f is None else round(f - b, 2)
        rows.append({"class": name, "base_IoU": b, "fsa_IoU": f, "difference": diff})
    return sorted(rows, key=lambda r: (r["difference"] is None, -(r["difference"] or 0.0)))


def per_image_rows(base_records: Mapping[str, np.ndarray], fsa_records: Mapping[str, np.ndarray]
                   ) -> List[Dict[str, Any]]:
    """Per image in both record sets: its mIoU under base and FSA and the difference, largest gain first."""
    rows = []
    for key in base_records:
        if key not in fsa_records:
            continue
        b, f = image_miou(base_records[key]), image_miou(fsa_records[key])
        diff = None if b is None or f is None else f - b
        rows.append({"image": key, "base_mIoU": None if b is None else round(b, 4),
                     "fsa_mIoU": None if f is None else round(f, 4),
                     "difference": None if diff is None else round(diff, 4)})
    return sorted(rows, key=lambda r: (r["difference"] is None, -(r["difference"] or 0.0)))


def per_class_figure(rows: Sequence[Mapping[str, Any]], random_weights: bool):
    """Grouped horizontal bars (base, FSA) per class, sorted by FSA - base (largest gain on top)."""
    rows = [r for r in rows if r["base_IoU"] is not None and r["fsa_IoU"] is not None]
    n = max(1, len(rows))
    plot = 0.3 * n + 0.3  # inches of bars
    height = plot + 1.2 + (drawing.BANNER_INCHES if random_weights else 0.0)
    fig = drawing.new_figure(7.0, height)
    top = drawing.banner_top(fig, random_weights) - 0.4 / height  # the title above the axes
    ax = fig.add_axes([0.25, 0.7 / height, 0.7, plot / height])
    y = np.arange(len(rows))[::-1]
    ax.barh(y + 0.2, [r["base_IoU"] for r in rows], height=0.4, color="#9e9e9e", label="base")
    ax.barh(y - 0.2, [r["fsa_IoU"] for r in rows], height=0.4, color="#1f77b4", label="base + FSA")
    ax.set_yticks(y, [f"{r['class']} ({r['difference']:+.1f})" for r in rows], fontsize=8)
    ax.set_xlabel("IoU (%)")
    ax.set_xlim(0, 100)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("per-class IoU, sorted by FSA - base", fontsize=10)
    drawing.figure_banner(fig, random_weights)
    return fig


def image_grid_figure(rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str], column_titles: Sequence[str],
                      random_weights: bool, legend=None):
    """A grid of images (each row one image's panels), a title per row and per column, one legend."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows) if rows else 1
    h, w = (rows[0][0].shape[:2] if rows else (1, 1))
    cell_w = 2.4
    cell_h = cell_w * h / w + 0.35
    banner = drawing.BANNER_INCHES if random_weights else 0.0
    height = n_rows * cell_h + 0.9 + banner
    fig = drawing.new_figure(cell_w * n_cols, height)
    for i, panels in enumerate(rows):
        for j, panel in enumerate(panels):
            bottom = (0.55 + (n_rows - 1 - i) * cell_h) / height
            ax = fig.add_axes([j / n_cols + 0.004, bottom, 1 / n_cols - 0.008, (cell_h - 0.35) / height])
            ax.imshow(panel, interpolation="nearest")
            ax.set_axis_off()
            title = column_titles[j] if i == 0 else ""
            if j == 0:
                title = f"{row_titles[i]}" if not title else f"{title}\n{row_titles[i]}"
            if title:
                ax.set_title(title, fontsize=7, loc="left" if j == 0 else "center")
    if legend:
        drawing.figure_legend(fig, legend)
    drawing.figure_banner(fig, random_weights)
    return fig


def _read_label_png(path: str):
    from PIL import Image

    with Image.open(path) as img:
        labels = np.asarray(img)
        pal = img.getpalette() or []
    colors = np.asarray(pal[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
    return labels.astype(np.int64), colors


def analyze_dataset(config: str, out_dir: str, options: Optional[Mapping[str, Any]] = None, top: int = 3,
                    launcher: str = "none", methods: Optional[Sequence[str]] = None, kept_share: bool = True
                    ) -> Dict[str, Any]:
    """Evaluate ``config`` (with ``options``) once with base and FSA as variants into ``out_dir/base`` and
    ``out_dir/fsa`` and write the figures and tables of the module docstring into ``out_dir``; returns the
    paths and the tables. ``kept_share``: also the kept-share distribution per method of ``methods`` (a CLIP
    model built from the config as the evaluation builds it, over the evaluated images)."""
    from fsa_seg.apis.config import load_config
    from fsa_seg.apis.results import read_results
    from fsa_seg.apis.inference import read_image
    from fsa_seg.apis.evaluate import evaluate_variants
    from fsa_seg.plugin.resume import load_records, record_dir_for

    from .show_dir import GROUND_TRUTH, show_dir_options, variant_names

    from fsa_seg.apis.config import segmentor_class

    options = dict(options or {})
    cfg = load_config(config, options)
    if kept_share:
        check_kept_share(segmentor_class(cfg.model))
    if kept_share and methods:  # a method that cannot vary on this model: one line before the evaluation
        model_cfg = {k: v for k, v in cfg.model.to_dict().items()
                     if k not in ("type", "data_preprocessor", "init_cfg", "variants")}
        for method in methods:
            segmentor_class(cfg.model).variant_changes(model_cfg, {"base_method": method})
    show = osp.join(out_dir, "show")
    run_dirs = [osp.join(out_dir, name) for name in NAMES]
    evaluate_variants(config, list(DATASET_VARIANTS), run_dirs,
                      {**options, **show_dir_options(show, save_labels=True)}, launcher)
    random_weights = random_weights_used(cfg=cfg)
    results = [read_results(d) for d in run_dirs]
    out: Dict[str, Any] = {"random_weights": random_weights, "runs": run_dirs}
    meta = dict(config=config, cfg_options={k: v for k, v in options.items()}, random_weights=random_weights,
                variants=dict(zip(NAMES, DATASET_VARIANTS)),
                mIoU={name: r["metrics"].get("mIoU") for name, r in zip(NAMES, results)})

    rows = per_class_rows(results[0]["per_class"], results[1]["per_class"])
    stem = osp.join(out_dir, "per_class_iou")
    out["per_class_iou"] = rows
    out["per_class_iou_files"] = (save_figure(per_class_figure(rows, random_weights), stem)
                                  + write_table(rows, stem, meta))

    images = per_image_rows(*(load_records(record_dir_for(d)) for d in run_dirs))
    stem = osp.join(out_dir, "per_image")
    out["per_image"] = images
    out["per_image_files"] = write_table(images, stem, meta)

    # the images FSA improves most and worsens most: drawn from the label maps the evaluation kept
    ranked = [r for r in images if r["difference"] is not None]
    gains = ranked[:top]
    losses = [r for r in reversed(ranked[-top:]) if r not in gains]
    names = variant_names([{"fsa": False}, {"fsa": True}])
    panels, titles, picked, present = [], [], [], set()
    colors = None
    classes = list(results[0]["per_class"])
    for kind, row in [("gain", r) for r in gains] + [("loss", r) for r in losses]:
        stem_name = osp.splitext(osp.basename(row["image"]))[0]
        rgb = read_image(row["image"])
        maps = []
        for name in (GROUND_TRUTH, *names):
            labels, colors = _read_label_png(osp.join(show, "labels", name, f"{stem_name}.png"))
            maps.append(labels)
            present.update(int(i) for i in np.unique(labels) if i < len(classes))
        panels.append([rgb] + [drawing.blend(rgb, m, colors[: len(classes)]) for m in maps])
        titles.append(f"{stem_name}: {row['base_mIoU']:.1f} -> {row['fsa_mIoU']:.1f} ({row['difference']:+.1f})")
        picked.append(dict(row, kind=kind))
    out["gains_losses"] = picked
    out["gains_losses_files"] = _write_picked(
        osp.join(out_dir, "gains_losses"), picked, meta, panels, titles,
        ["image", "ground truth", "base", "base + FSA"], classes, colors, present, random_weights)
    if kept_share:
        out.update(_kept_share(_evaluation_model(cfg, config, options), [r["image"] for r in images], methods,
                               out_dir, random_weights, meta))
    return out


def _write_picked(stem: str, picked: List[Dict[str, Any]], meta: Mapping[str, Any], panels, titles,
                  columns: Sequence[str], classes, colors, present, random_weights: bool) -> List[str]:
    """The table of the picked images at ``stem`` (CSV, JSON) and, when there are panels, their grid figure with
    one legend of the classes ``present`` (PNG, PDF); returns the files written, figure first."""
    files = write_table(picked, stem, meta)
    if panels:
        legend = drawing.legend_entries(classes, colors, sorted(present))
        fig = image_grid_figure(panels, titles, list(columns), random_weights, legend)
        files = save_figure(fig, stem) + files
    return files


def _evaluation_model(cfg, config: str, options: Mapping[str, Any]):
    """The config's segmentor built as its evaluation builds it (seeded the same way: random weights equal)."""
    from mmengine.runner import set_random_seed

    from fsa_seg.apis.inference import init_segmentor

    randomness = cfg.get("randomness") or (dict(seed=0) if random_weights_used(cfg=cfg) else None)
    if randomness and randomness.get("seed") is not None:
        set_random_seed(**randomness)
    return init_segmentor(config, options)


def analyze_folder(model, images: Sequence[str], out_dir: str, top: int = 3, methods: Optional[Sequence[str]] = None,
                   kept_share: bool = True) -> Dict[str, Any]:
    """Base and FSA of segmentor ``model`` on each image (one pass each) and the tables and figures of the
    module docstring (folder) in ``out_dir``."""
    from fsa_seg.apis.inference import read_image

    from .compare import compare_image

    random_weights = random_weights_used(model)
    if kept_share:
        check_kept_share(type(model))
    for method in (methods or []) if kept_share else []:  # one line before any work
        model.model.variant_state({"base_method": method})
    rows, kept = [], {}
    for path in images:
        c = compare_image(model, read_image(path))
        changed = int(c.changed.sum())
        rows.append({"image": path, "pixels": int(c.base.size), "changed_pixels": changed,
                     "changed_share": round(100.0 * changed / c.base.size, 4)})
        kept[path] = c
        # only the images that may still be drawn keep their comparison (memory stays flat over a large folder)
        rows.sort(key=lambda r: -r["changed_share"])
        kept = {r["image"]: kept[r["image"]] for r in rows[:top] if r["image"] in kept}
    meta = dict(random_weights=random_weights, variants=dict(zip(NAMES, ({"fsa": False}, {"fsa": True}))))
    os.makedirs(out_dir, exist_ok=True)
    stem = osp.join(out_dir, "per_image_changes")
    out: Dict[str, Any] = {"random_weights": random_weights, "per_image_changes": rows,
                           "per_image_changes_files": write_table(rows, stem, meta)}
    picked = rows[:top]
    panels, titles, present = [], [], set()
    for row in picked:
        c = kept[row["image"]]
        panels.append([c.rgb, drawing.blend(c.rgb, c.base, c.colors), drawing.blend(c.rgb, c.fsa, c.colors),
                       drawing.changed_panel(c.rgb, c.base, c.fsa, c.colors)])
        titles.append(f"{osp.basename(row['image'])}: {row['changed_share']:.1f}% changed")
        present.update(np.unique(c.base).tolist() + np.unique(c.fsa).tolist())
    first = kept[picked[0]["image"]] if picked else None
    out["most_changed"] = picked
    out["most_changed_files"] = _write_picked(
        osp.join(out_dir, "most_changed"), picked, meta, panels, titles,
        ["image", "base", "base + FSA", "changed pixels"], first and first.classes, first and first.colors,
        present, random_weights)
    if kept_share:
        out.update(_kept_share(model, list(images), methods, out_dir, random_weights, meta))
    return out


def check_kept_share(segmentor_cls) -> None:
    """The kept-share figure needs FSA's traced rows of a CLIP model: a one-line ``ValueError`` otherwise."""
    from fsa_seg.clip_model import CLIPSegModel

    model_class = getattr(segmentor_cls, "model_class", None)
    if model_class is None or not issubclass(model_class(), CLIPSegModel):
        raise ValueError(f"the kept-share figure is drawn for CLIP models only, not "
                         f"{getattr(segmentor_cls, '__name__', segmentor_cls)}: pass --no-kept-share")


def kept_share_by_method(model, images: Sequence[str], methods: Optional[Sequence[str]] = None
                         ) -> Dict[str, np.ndarray]:
    """Per base method (default: segmentor ``model``'s own), the kept share of every patch row of every window of
    ``images`` (paths), each method a variant of the model (its other settings kept)."""
    from contextlib import nullcontext

    from fsa_seg.apis.inference import read_image

    from .points import kept_share_values

    inner = model.model
    own = inner.variant_settings().get("base_method")
    methods = list(methods or [own])
    rgbs = [read_image(path) for path in images]
    out = {}
    for method in methods:
        with (nullcontext() if method == own else inner.variant(base_method=method)):
            out[method] = np.concatenate([kept_share_values(model, rgb) for rgb in rgbs]) if rgbs else np.zeros(0)
    return out


def _kept_share(model, images: Sequence[str], methods: Optional[Sequence[str]], out_dir: str,
                random_weights: bool, meta: Mapping[str, Any]) -> Dict[str, Any]:
    from .points import kept_share_summary, write_kept_share

    values = kept_share_by_method(model, images, methods)
    files = write_kept_share(values, osp.join(out_dir, "kept_share"), random_weights,
                             dict(meta, images=len(images)))
    return {"kept_share": kept_share_summary(values), "kept_share_files": files}


def write_summary(out: Mapping[str, Any], path: str) -> str:
    """The analysis (tables and file lists) as one JSON file."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(out), f, indent=2, default=str)
    return path

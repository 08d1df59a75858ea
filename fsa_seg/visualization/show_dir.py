"""``tools/test.py --show-dir DIR``: per evaluated image, the ground truth and each variant's prediction side by
side, written to ``DIR/<image name>.png``.

:class:`ShowDirHook` is mmseg's ``SegVisualizationHook`` for these panels: it draws each panel with the runner's
``SegLocalVisualizer`` (its alpha, the dataset's classes and palette, the class names at the regions) and puts
them in one row: ground truth | prediction, or with ``--variants`` ground truth | variant 0 | variant 1 | ... from
the one pass (the segmentor stores every variant's labels in each data sample). Each panel has its title above it;
a run with random weights gets the banner on top. ``save_labels=True`` also writes every prediction as a palette PNG
``DIR/labels/<variant>/<image stem>.png`` (pixel value = class id; the ground truth in
``DIR/labels/ground_truth/``), which ``tools/analyze.py`` reads.

It is added only when asked (:func:`show_dir_options`: ``default_hooks.visualization``), so an evaluation without
``--show-dir`` registers no hook and draws nothing.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from mmseg.engine.hooks import SegVisualizationHook
from mmseg.registry import HOOKS

from . import drawing
from .output import describe_variant, random_weights_used, save_image, save_labels

HOOK_TYPE = "FSAShowDirHook"
#: the folder under ``labels/`` of the ground-truth label maps (``save_labels``)
GROUND_TRUTH = "ground_truth"


def show_dir_options(show_dir: Optional[str], save_labels: bool = False) -> Dict[str, Any]:
    """The config overrides that add :class:`ShowDirHook` writing to ``show_dir``; ``{}`` when ``show_dir`` is
    empty (no hook)."""
    if not show_dir:
        return {}
    return {"default_hooks.visualization": dict(type=HOOK_TYPE, out_dir=osp.abspath(show_dir),
                                                save_labels=bool(save_labels))}


def variant_names(variants: Sequence[Mapping[str, Any]]) -> List[str]:
    """Folder-safe names of variants (``fsa=False__top_p=0.3``; ``as_configured`` for ``{}``)."""
    return ["__".join(f"{k}={v}" for k, v in v.items()).replace("/", "_") or "as_configured" for v in variants]


@HOOKS.register_module(name=HOOK_TYPE)
class ShowDirHook(SegVisualizationHook):
    """Writes ``out_dir/<image name>.png`` after each test batch: ground truth and each variant's prediction
    (see the module docstring). ``interval``: every n-th batch (default every one)."""

    def __init__(self, out_dir: str, interval: int = 1, with_labels: bool = True, save_labels: bool = False,
                 backend_args: Optional[dict] = None) -> None:
        super().__init__(draw=True, interval=interval, show=False, backend_args=backend_args)
        self.out_dir = out_dir
        self.with_labels = with_labels
        self.save_labels = save_labels
        self.random_weights = False
        self.variants: List[Dict[str, Any]] = []

    def before_test(self, runner) -> None:
        model = getattr(runner.model, "module", runner.model)
        variants = [dict(v) for v in getattr(model, "variants", None) or []]
        # Each variant named by the value of every key any variant sets (the first variant is the config's own
        # model, often ``{}``: its values come from the config).
        keys = list(dict.fromkeys(k for v in variants for k in v))
        model_cfg = runner.cfg.get("model", {})
        self.variants = [{k: v.get(k, model_cfg.get(k)) for k in keys} for v in variants]
        self.random_weights = random_weights_used(model, runner.cfg)
        os.makedirs(self.out_dir, exist_ok=True)

    def _meta(self):
        meta = self._visualizer.dataset_meta or {}
        classes = list(meta.get("classes") or [])
        colors = meta.get("palette")
        colors = np.asarray(colors, dtype=np.uint8) if colors is not None and len(colors) >= len(classes) \
            else drawing.palette(len(classes))
        return classes, colors

    def panels(self, image: np.ndarray, sample) -> tuple:
        """``(panels, titles, predictions)`` of one data sample: ground truth (when the sample has it) and each
        prediction drawn on ``image`` (RGB) by the visualizer; ``predictions``: ``(name, label map)``."""
        from fsa_seg.plugin.segmentors import variant_field

        classes, colors = self._meta()
        draw = self._visualizer._draw_sem_seg  # mmseg's drawing of one label map (the class names at the regions)
        palette = [tuple(int(c) for c in color) for color in colors]
        panels, titles, predictions = [], [], []
        if "gt_sem_seg" in sample:
            panels.append(draw(image, sample.gt_sem_seg, classes, palette, self.with_labels))
            titles.append("ground truth")
        if self.variants:
            fields = [(variant_field(k, "pred_sem_seg"), describe_variant(v), name)
                      for k, (v, name) in enumerate(zip(self.variants, variant_names(self.variants)))]
        else:
            fields = [("pred_sem_seg", "prediction", "prediction")]
        for field, title, name in fields:
            seg = sample.get(field)
            panels.append(draw(image, seg, classes, palette, self.with_labels))
            titles.append(title)
            predictions.append((name, seg.data[0].cpu().numpy()))
        return panels, titles, predictions

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        import mmcv
        import mmengine.fileio as fileio

        if not self.every_n_inner_iters(batch_idx, self.interval):
            return
        for sample in outputs or []:
            path = sample.img_path
            image = mmcv.imfrombytes(fileio.get(path, backend_args=self.backend_args), channel_order="rgb")
            panels, titles, predictions = self.panels(image, sample)
            row = drawing.with_banner(drawing.panel_row(panels, titles), self.random_weights)
            stem = osp.splitext(osp.basename(path))[0]
            save_image(row, osp.join(self.out_dir, f"{stem}.png"))
            if self.save_labels:
                _, colors = self._meta()
                if "gt_sem_seg" in sample:
                    predictions = [(GROUND_TRUTH, sample.gt_sem_seg.data[0].cpu().numpy())] + predictions
                for name, labels in predictions:
                    save_labels(labels, colors, osp.join(self.out_dir, "labels", name, f"{stem}.png"))

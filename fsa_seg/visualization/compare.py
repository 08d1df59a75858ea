"""Base vs base + FSA on one image, from one backbone pass: image | base | base + FSA | changed pixels.

    from fsa_seg.apis import init_segmentor
    from fsa_seg.visualization import compare_image, write_comparison
    model = init_segmentor(config, options, classes=[["cat"], ["dog"]])
    comparison = compare_image(model, rgb)            # base and FSA from one run of the backbone
    write_comparison(comparison, "out/photo")         # figure (PNG, PDF), numbers (CSV, JSON), label maps

The two predictions are variants of one pass (:meth:`fsa_seg.open_vocab.OpenVocabModel.predict_variants`):
``fsa=False`` and ``fsa=True`` on the model's other settings; each equals the prediction of a model built with
that setting.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from . import drawing
from .output import random_weights_used, save_figure, save_labels, write_table

#: the two variants of a comparison: FSA off, FSA on
BASE_VS_FSA = ({"fsa": False}, {"fsa": True})


def pipeline_input(model, rgb: np.ndarray):
    """``(image tensor [3, h, w] as the model takes it, original size (H, W))`` of RGB uint8 ``rgb`` through the
    config's test pipeline and the segmentor's data preprocessor."""
    from mmcv.transforms import Compose

    cfg = model.cfg
    steps = copy.deepcopy(cfg.test_dataloader.dataset.get("pipeline") or cfg.get("test_pipeline"))
    steps = [s for s in steps if s.get("type") != "LoadAnnotations"]
    steps[0] = dict(type="LoadImageFromNDArray")
    data = Compose(steps)(dict(img=np.ascontiguousarray(rgb[:, :, ::-1])))  # the pipeline works in BGR
    batch = model.data_preprocessor(dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]]), False)
    meta = batch["data_samples"][0].metainfo
    h, w = meta["img_shape"][:2]
    return batch["inputs"][0][:, :h, :w], tuple(meta["ori_shape"][:2])


def segment_variants(model, rgb: np.ndarray, variants: Sequence[Mapping[str, Any]]) -> List[np.ndarray]:
    """The label maps ``[H, W]`` of ``variants`` (model settings, e.g. ``{'fsa': False}``) of segmentor
    ``model`` on RGB uint8 ``rgb``, from one run of the backbone per crop batch."""
    image, size = pipeline_input(model, rgb)
    with torch.no_grad():
        preds = model.model.predict_variants([image], [size], [dict(v) for v in variants])[0]
    return [p.labels.cpu().numpy().astype(np.int64) for p in preds]


@dataclass
class Comparison:
    """Base and base + FSA label maps of one image, its classes (names) and colours."""

    rgb: np.ndarray
    base: np.ndarray
    fsa: np.ndarray
    classes: List[str]
    colors: np.ndarray
    random_weights: bool = False
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> np.ndarray:
        return self.base != self.fsa

    def rows(self) -> List[Dict[str, Any]]:
        """Per class: pixels under base and under FSA, pixels FSA gave to it and took from it."""
        k = len(self.classes)
        base = np.bincount(self.base.ravel(), minlength=k)
        fsa = np.bincount(self.fsa.ravel(), minlength=k)
        gained = np.bincount(self.fsa[self.changed].ravel(), minlength=k)
        lost = np.bincount(self.base[self.changed].ravel(), minlength=k)
        total = self.base.size
        return [{"id": i, "class": self.classes[i], "base_pixels": int(base[i]), "fsa_pixels": int(fsa[i]),
                 "base_share": round(100.0 * base[i] / total, 2), "fsa_share": round(100.0 * fsa[i] / total, 2),
                 "gained_pixels": int(gained[i]), "lost_pixels": int(lost[i])} for i in range(k)]


def compare_image(model, rgb: np.ndarray, colors: Optional[np.ndarray] = None) -> Comparison:
    """Base (``fsa=False``) and base + FSA (``fsa=True``) of segmentor ``model`` on ``rgb``, in one pass."""
    from fsa_seg.apis.inference import model_classes

    base, fsa = segment_variants(model, rgb, BASE_VS_FSA)
    classes = [words[0] for words in model_classes(model)]
    colors = drawing.palette(len(classes)) if colors is None else colors
    return Comparison(rgb, base, fsa, classes, colors, random_weights_used(model))


def comparison_figure(c: Comparison, opacity: float = 0.5):
    """The figure: image | base | base + FSA | changed pixels, one legend, the banner with random weights."""
    h, w = c.base.shape
    changed = int(c.changed.sum())
    panels = [(c.rgb, "image"), (drawing.blend(c.rgb, c.base, c.colors, opacity), "base"),
              (drawing.blend(c.rgb, c.fsa, c.colors, opacity), "base + FSA"),
              (drawing.changed_panel(c.rgb, c.base, c.fsa, c.colors),
               f"changed pixels: {changed} ({100.0 * changed / c.base.size:.1f}%)")]
    cell = 3.2
    height = cell * h / w + 1.1 + (drawing.BANNER_INCHES if c.random_weights else 0.0)
    fig = drawing.new_figure(cell * len(panels), height)
    for n, (image, title) in enumerate(panels):
        ax = fig.add_axes([n / len(panels) + 0.005, 0.6 / height, 1 / len(panels) - 0.01, cell * h / w / height])
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    present = np.unique(np.concatenate([c.base.ravel(), c.fsa.ravel()]))
    drawing.figure_legend(fig, drawing.legend_entries(c.classes, c.colors, present.tolist()))
    drawing.figure_banner(fig, c.random_weights)
    return fig


def write_comparison(c: Comparison, stem: str, opacity: float = 0.5, formats=("png", "pdf")) -> Dict[str, Any]:
    """Writes ``stem_compare.{png,pdf}``, its numbers ``stem_compare.{csv,json}`` and the label maps
    ``stem_base_labels.png`` / ``stem_fsa_labels.png``; returns the paths."""
    fig = comparison_figure(c, opacity)
    figures = save_figure(fig, f"{stem}_compare", formats)
    changed = int(c.changed.sum())
    tables = write_table(c.rows(), f"{stem}_compare", meta=dict(
        c.meta, size=list(c.base.shape), changed_pixels=changed,
        changed_share=round(100.0 * changed / c.base.size, 4), random_weights=c.random_weights,
        variants={"base": BASE_VS_FSA[0], "fsa": BASE_VS_FSA[1]}))
    labels = [save_labels(c.base, c.colors, f"{stem}_base_labels.png"),
              save_labels(c.fsa, c.colors, f"{stem}_fsa_labels.png")]
    return {"figures": figures, "tables": tables, "labels": labels, "changed_pixels": changed}

"""mIoU with the per-class numbers kept for the result file, and resumable per-image records.

:class:`PerClassIoUMetric` is mmseg's ``IoUMetric`` plus:

* ``self.per_class`` (class -> IoU/Acc in %) and ``self.num_images`` after ``evaluate``;
* exact totals: per-image areas are integer pixel counts, kept and summed as int64 (mmseg sums float32,
  which rounds once a class has more than 2**24 pixels in total and then depends on the order);
* ``record_dir``: every image's areas are appended to ``record_dir/rank<R>.jsonl`` and fsync'ed after each
  batch, and the final metric merges them with the areas of this run (see :mod:`fsa_seg.resume`), so an
  interrupted evaluation can be resumed with exactly the same result;
* ``variant``: score the labels of that variant of a one-pass run (``variant<k>_pred_sem_seg``, see
  :mod:`fsa_seg.plugin.segmentors`) instead of ``pred_sem_seg``; one metric per variant, each with its own
  ``record_dir`` and ``prefix``, evaluates K settings in one ``Runner.test()``.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS
from prettytable import PrettyTable

from .resume import ALL_KEYS, RecordWriter, SkipDoneDataset, areas_to_array, load_records, merge_records
from .segmentors import variant_field

__all__ = ["PerClassIoUMetric", "SkipDoneDataset"]

_unnamed = itertools.count()


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """``IoUMetric`` that keeps the per-class IoU/Acc in ``self.per_class`` (class -> metrics) and can record
    and merge per-image results (``record_dir``) and score one variant of a one-pass run (``variant``); see the
    module docstring."""

    def __init__(self, record_dir: Optional[str] = None, variant: Optional[int] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.per_class: Dict[str, Dict[str, Optional[float]]] = {}
        self.num_images = 0
        self.record_dir = record_dir
        self.variant = None if variant is None else int(variant)
        self._writer: Optional[RecordWriter] = None

    # -- per batch ----------------------------------------------------------------------------------
    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        if self.variant is not None:
            field = variant_field(self.variant, "pred_sem_seg")
            data_samples = [dict(sample, pred_sem_seg=sample[field]) for sample in data_samples]
        start = len(self.results)
        super().process(data_batch, data_samples)
        if self.format_only:
            return
        records = []
        for sample, areas in zip(data_samples, self.results[start:]):
            key = sample.get("img_path")
            records.append((str(key) if key is not None else f"#unnamed{next(_unnamed)}",
                            areas_to_array(*areas)))
        self.results[start:] = records
        if self.record_dir:
            if self._writer is None:
                self._writer = RecordWriter(self.record_dir, get_rank())
            for key, areas in records:
                if not key.startswith("#unnamed"):
                    self._writer.write(key, areas)
            self._writer.flush()

    def evaluate(self, size: int) -> dict:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return super().evaluate(size)

    # -- at the end ---------------------------------------------------------------------------------
    def compute_metrics(self, results: List) -> Dict[str, float]:
        logger: MMLogger = MMLogger.get_current_instance()
        if self.format_only:
            return super().compute_metrics(results)
        keys = (self.dataset_meta or {}).get(ALL_KEYS)
        stored = load_records(self.record_dir) if self.record_dir else {}
        merged = merge_records(stored, results, keys)
        self.num_images = len(merged)
        if keys is not None and len(merged) < len(keys):
            print_log(f"{len(keys) - len(merged)} of {len(keys)} images have no result; the metric covers "
                      f"the other {len(merged)}", logger, level=30)
        classes = self.dataset_meta["classes"]
        if not merged:
            print_log("no images were evaluated", logger, level=30)
            return {name: float("nan") for name in ["aAcc"] + ["m" + m for m in ("IoU", "Acc")]}
        # int64 totals (exact); float64 for the ratios.
        totals = np.sum(np.stack([merged[k] for k in sorted(merged)]), axis=0)
        intersect, union, pred, label = (torch.from_numpy(t.astype(np.float64)) for t in totals)
        ret_metrics = self.total_area_to_metrics(intersect, union, pred, label, self.metrics,
                                                 self.nan_to_num, self.beta)
        metrics: Dict[str, float] = {}
        for name, value in ret_metrics.items():
            summary = float(np.round(np.nanmean(value) * 100, 2))
            metrics[name if name == "aAcc" else "m" + name] = summary
        ret_metrics.pop("aAcc", None)
        self.per_class = {
            cls: {k: (None if np.isnan(v[i]) else round(float(v[i]) * 100, 2)) for k, v in ret_metrics.items()}
            for i, cls in enumerate(classes)}
        table = OrderedDict({"Class": list(classes)})
        table.update({k: np.round(v * 100, 2) for k, v in ret_metrics.items()})
        pretty = PrettyTable()
        for key, val in table.items():
            pretty.add_column(key, list(val))
        print_log("per class results:", logger)
        print_log("\n" + pretty.get_string(), logger=logger)
        return metrics

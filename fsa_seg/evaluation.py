"""mIoU with the per-class numbers kept for the result file (mmseg's IoUMetric only logs them)."""
from __future__ import annotations

from typing import Dict, List

import numpy as np
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """``IoUMetric`` that also keeps the last per-class IoU/Acc in ``self.per_class`` (class -> metrics)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.per_class: Dict[str, Dict[str, float]] = {}

    def compute_metrics(self, results: List) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        if results:
            intersect, union, pred, label = (sum(r) for r in zip(*results))
            per_metric = self.total_area_to_metrics(intersect, union, pred, label, self.metrics,
                                                    self.nan_to_num, self.beta)
            per_metric.pop("aAcc", None)
            classes = self.dataset_meta["classes"]
            self.per_class = {
                name: {k: (None if np.isnan(v[i]) else round(float(v[i]) * 100, 2)) for k, v in per_metric.items()}
                for i, name in enumerate(classes)}
        return metrics

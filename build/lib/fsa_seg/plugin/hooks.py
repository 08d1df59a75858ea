"""Evaluation progress: :class:`ImageProgressHook` shows images done / total, images per second and the time
left after every test batch (a bar on a terminal, one line per batch otherwise; :mod:`fsa_seg.progress`), and
sets mmengine's logging interval from the dataset size.

It is in ``custom_hooks`` of ``configs/_base_/default_runtime.py``, and :func:`fsa_seg.apis.evaluate.evaluate`
adds it to a config that lacks it.
"""
from __future__ import annotations

import os.path as osp
from typing import Optional

from mmengine.hooks import Hook, LoggerHook
from mmseg.registry import HOOKS

from ..progress import Progress


def logging_interval(batches: int, lines: int = 20, most: int = 50) -> int:
    """Batches between two mmengine log lines: about ``lines`` lines per run, at most every ``most`` batches
    (mmengine's default interval), at least every batch."""
    return max(1, min(most, -(-batches // lines)))


@HOOKS.register_module()
class ImageProgressHook(Hook):
    """Images done / total with images/s and ETA after each test batch (rank 0 only; with several processes
    the count is rank 0's share of the images).

    ``adapt_logger_interval``: lower the ``LoggerHook``'s interval to :func:`logging_interval` of the number of
    test batches (a configured smaller interval is kept).
    """

    priority = "LOW"

    def __init__(self, adapt_logger_interval: bool = True) -> None:
        self.adapt_logger_interval = adapt_logger_interval
        self.progress: Optional[Progress] = None

    def before_test(self, runner) -> None:
        loader = runner.test_dataloader
        try:
            images = len(loader.sampler)
        except TypeError:
            images = len(loader.dataset)
        if self.adapt_logger_interval:
            for hook in runner.hooks:
                if isinstance(hook, LoggerHook):
                    hook.interval = min(hook.interval, logging_interval(len(loader)))
        if runner.rank != 0:
            return
        label = "images" if runner.world_size == 1 else f"images (rank 0 of {runner.world_size})"
        self.progress = Progress(images, label)
        self.progress.start_line()

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.progress is None:
            return
        samples = list(outputs or [])
        name = osp.basename(str(samples[-1].metainfo.get("img_path", ""))) if samples else ""
        self.progress.update(len(samples) or 1, name)

    def after_test_epoch(self, runner, metrics=None) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None

"""Sliding-window inference with overlap, as in the training-free OVSS protocol (SCLIP/ProxyCLIP/FSA).

Windows of ``crop`` with ``stride``; the last window of a row/column is shifted back to end at the image
border; an image smaller than the crop is one window of its own size. Each window is padded (centred,
zeros) to a multiple of ``pad_multiple`` so the patch grid covers it, the model's scores are cut back to
the window, summed into the image and divided by the number of windows covering each pixel.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

Window = Tuple[int, int, int, int]  # y1, y2, x1, x2


def _starts(size: int, crop: int, stride: int) -> List[Tuple[int, int]]:
    n = max(size - crop + stride - 1, 0) // stride + 1
    spans = []
    for i in range(n):
        end = min(i * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def windows(height: int, width: int, crop: Tuple[int, int], stride: Tuple[int, int]) -> List[Window]:
    """All windows ``(y1, y2, x1, x2)`` covering a ``height x width`` image."""
    if min(crop) <= 0 or min(stride) <= 0:
        raise ValueError(f"crop and stride must be positive, got crop={crop} stride={stride}")
    return [(y1, y2, x1, x2) for y1, y2 in _starts(height, crop[0], stride[0])
            for x1, x2 in _starts(width, crop[1], stride[1])]


def centre_padding(height: int, width: int, multiple: int) -> Tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` zero padding that makes both sides a multiple of ``multiple``."""
    pad_w = (-width) % multiple
    pad_h = (-height) % multiple
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def slide_inference(images: Sequence[Tensor], score_fn: Callable[[Tensor], Tensor], num_outputs: int,
                    crop: Tuple[int, int], stride: Tuple[int, int], pad_multiple: int = 1,
                    crop_batch_size: int = 8, progress: Optional[Callable[[int, int], None]] = None
                    ) -> List[Tensor]:
    """Scores ``[num_outputs, H, W]`` for each image ``[3, H, W]`` of ``images`` (sizes may differ).

    ``score_fn`` maps a batch of equally sized (padded) windows ``[n, 3, h, w]`` to ``[n, num_outputs, h, w]``.
    Windows of all images are batched together ``crop_batch_size`` at a time, so a batch of images gives
    the same windows, hence the same scores, as the images one by one.
    """
    per_image = slide_inference_shared(images, lambda crops: crops, [score_fn], num_outputs, crop, stride,
                                       pad_multiple, crop_batch_size, progress)
    return [scores for (scores,) in per_image]


def slide_inference_shared(images: Sequence[Tensor], shared_fn: Callable[[Tensor], Any],
                           score_fns: Sequence[Callable[[Any], Tensor]], num_outputs: int,
                           crop: Tuple[int, int], stride: Tuple[int, int], pad_multiple: int = 1,
                           crop_batch_size: int = 8, progress: Optional[Callable[[int, int], None]] = None,
                           on_chunk: Optional[Callable[[Sequence[Tuple[int, Window, Tuple[int, int, int, int]]]],
                                                       None]] = None) -> List[List[Tensor]]:
    """:func:`slide_inference` for several scorings that share a first stage: per image, one score map
    ``[num_outputs, H, W]`` per function of ``score_fns``.

    Each batch of windows goes through ``shared_fn`` once; its result goes to every ``score_fns[k]``, one after
    another, and each ``[n, num_outputs, h, w]`` result is added into its own per-image sums before the next
    one runs (so only one batch of score maps is alive at a time, plus ``len(score_fns)`` sums per image).
    Windows, batches and sums are those of :func:`slide_inference`: ``score_fns[k]`` gives exactly the scores
    that ``slide_inference`` with ``score_fns[k](shared_fn(.))`` gives. ``progress(done, total)`` (optional) is
    called before the first batch (``done=0``) and after each batch with the windows done so far. ``on_chunk``
    (optional) is told each batch's windows, ``(image index, (y1, y2, x1, x2), (left, right, top, bottom)
    padding)`` in batch order, before ``shared_fn`` runs on them.
    """
    jobs = []  # (image index, window, padding), grouped by padded window shape
    for idx, img in enumerate(images):
        for win in windows(img.shape[-2], img.shape[-1], crop, stride):
            pad = centre_padding(win[1] - win[0], win[3] - win[2], pad_multiple)
            jobs.append((idx, win, pad))
    outputs = [[img.new_zeros((num_outputs, *img.shape[-2:]), dtype=torch.float32) for _ in score_fns]
               for img in images]
    counts = [img.new_zeros((1, *img.shape[-2:]), dtype=torch.float32) for img in images]
    by_shape = {}
    done = 0
    for job in jobs:
        _, (y1, y2, x1, x2), (l, r, t, b) = job
        by_shape.setdefault((y2 - y1 + t + b, x2 - x1 + l + r), []).append(job)
    if progress is not None:
        progress(0, len(jobs))
    for group in by_shape.values():
        for chunk in _chunks(group, crop_batch_size):
            crops = torch.stack([F.pad(images[i][:, y1:y2, x1:x2], pad) for i, (y1, y2, x1, x2), pad in chunk])
            if on_chunk is not None:
                on_chunk(chunk)
            shared = shared_fn(crops)
            for k, score_fn in enumerate(score_fns):
                scores = score_fn(shared).float()
                for (i, (y1, y2, x1, x2), (l, _, t, _)), score in zip(chunk, scores):
                    outputs[i][k][:, y1:y2, x1:x2] += score[:, t:t + y2 - y1, l:l + x2 - x1]
                del scores
            del shared
            for i, (y1, y2, x1, x2), _ in chunk:
                counts[i][:, y1:y2, x1:x2] += 1
            done += len(chunk)
            if progress is not None:
                progress(done, len(jobs))
    return [[out / cnt for out in outs] for outs, cnt in zip(outputs, counts)]

"""The base of every training-free open-vocabulary segmentation model of the package (CLIP and SAM3), in plain
torch: no mmseg, no mmcv.

A subclass provides :meth:`OpenVocabModel.crop_scores` (per-query score maps of a batch of crops) and, if its
scores are not CLIP logits, :meth:`OpenVocabModel.class_probabilities`. This class does the rest, for any
number and size of images: the class-name queries, sliding-window or whole-image inference, resizing to
the original size, the max over synonyms and the background threshold. The mmseg segmentors
(``fsa_seg.plugin``) wrap these models; :mod:`fsa_seg.apis` runs them on single images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .class_names import load_class_names
from .sliding_window import slide_inference

# CLIP's pixel statistics in 0..255 (images are normalised with them).
CLIP_MEAN = (122.771, 116.746, 104.094)
CLIP_STD = (68.501, 66.632, 70.323)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device_dtype(precision: str = "auto", device: Optional[Union[str, torch.device]] = None
                         ) -> Tuple[torch.device, torch.dtype]:
    """``device=None`` picks CUDA when available; ``precision='auto'`` is fp16 on CUDA and fp32 elsewhere."""
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if precision == "auto":
        return device, (torch.float16 if device.type == "cuda" else torch.float32)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto' or one of {list(PRECISIONS)}, got '{precision}'")
    if device.type == "cpu" and precision == "fp16":
        raise ValueError("precision 'fp16' is not supported on CPU; use 'fp32' or 'bf16' (or 'auto')")
    return device, PRECISIONS[precision]


def suppress_small_classes(probabilities: Tensor, area_thd: float) -> Tensor:
    """SCLIP's area threshold (Wang et al., ECCV 2024; released ``area_thd``): a class ``k >= 1`` whose argmax
    area is at most ``area_thd`` times the area of all pixels predicted as a class ``>= 1`` gets probability 0
    everywhere (its pixels then go to their next class, often the background). ``[K, H, W]`` -> new tensor."""
    num_classes = probabilities.shape[0]
    area = torch.bincount(probabilities.argmax(dim=0).flatten(), minlength=num_classes)[1:]
    keep = (area > area_thd * area.sum()).to(probabilities.dtype)
    out = probabilities.clone()
    out[1:] *= keep.view(-1, 1, 1)
    return out


@dataclass
class Prediction:
    """One image's result: class probabilities ``[K, H, W]`` (fp32) and labels ``[H, W]`` (long)."""

    probabilities: Tensor
    labels: Tensor


class OpenVocabModel(nn.Module):
    """Training-free open-vocabulary segmentation of normalised images (inference only).

    Args:
        name_path: class-name file or builtin name (one class per line, ``;``-separated synonyms).
        prob_thd: pixels whose best class probability is below it get label 0 (background).
        area_thd: classes (other than 0) predicted on less than this share of the pixels not predicted as
            class 0 are removed (their probabilities set to 0) before the labels are taken (SCLIP's
            ``area_thd``); None: off.
        renormalize: after the max over synonyms, divide the stored class probabilities by their sum over
            classes (NACLIP's released code); the labels are taken before, so they are unaffected.
        logit_scale: CLIP's softmax scale over the query logits.
        slide_crop, slide_stride: sliding window (``slide_crop=0``: the whole image in one window).
        crop_batch_size: windows scored together.
        precision, device: see :func:`resolve_device_dtype`.
    """

    #: pixel statistics (0..255, RGB) the model's inputs are normalised with
    pixel_mean: Tuple[float, float, float] = CLIP_MEAN
    pixel_std: Tuple[float, float, float] = CLIP_STD

    def __init__(self, name_path: str, prob_thd: float = 0.0, area_thd: Optional[float] = None,
                 renormalize: bool = False, logit_scale: float = 40.0, slide_crop: int = 336,
                 slide_stride: int = 112, crop_batch_size: int = 8, precision: str = "auto",
                 device: Optional[str] = None) -> None:
        super().__init__()
        self._set_queries(*load_class_names(name_path))
        self.prob_thd = float(prob_thd)
        if area_thd is not None and not 0.0 <= float(area_thd) < 1.0:
            raise ValueError(f"area_thd must be in [0, 1) or None, got {area_thd}")
        self.area_thd = None if area_thd is None else float(area_thd)
        self.renormalize = bool(renormalize)
        self.logit_scale = float(logit_scale)
        if slide_crop < 0 or (slide_crop > 0 and slide_stride <= 0):
            raise ValueError(f"slide_crop must be >= 0 (0 = whole image) and slide_stride > 0, "
                             f"got {slide_crop} / {slide_stride}")
        if crop_batch_size < 1:
            raise ValueError(f"crop_batch_size must be positive, got {crop_batch_size}")
        self.slide_crop = int(slide_crop)
        self.slide_stride = int(slide_stride)
        self.crop_batch_size = int(crop_batch_size)
        self.run_device, self.run_dtype = resolve_device_dtype(precision, device)

    def _set_queries(self, query_words: Sequence[str], query_to_class: Sequence[int]) -> None:
        self.query_words = list(query_words)
        self.register_buffer("query_to_class", torch.as_tensor(list(query_to_class), dtype=torch.long),
                             persistent=False)
        self.num_queries = len(self.query_words)
        self.num_classes = int(max(query_to_class)) + 1

    def set_classes(self, classes: Sequence[Sequence[str]]) -> None:
        """Segment other classes: ``classes[k]`` lists class ``k``'s synonyms (each one a text query).

        The queries are encoded again (:meth:`encode_queries`); labels follow the order given.
        """
        words = [str(w).strip() for synonyms in classes for w in synonyms]
        if not classes or any(not synonyms for synonyms in classes) or any(not w for w in words):
            raise ValueError(f"classes must be a non-empty list of non-empty synonym lists, got {classes!r}")
        self._set_queries(words, [k for k, synonyms in enumerate(classes) for _ in synonyms])
        self.query_to_class = self.query_to_class.to(self.run_device)
        self.encode_queries()

    # -- to implement -------------------------------------------------------------------------------
    def encode_queries(self) -> None:
        """(Re)compute whatever the model keeps of its text queries ``self.query_words``."""
        raise NotImplementedError

    def crop_scores(self, crops: Tensor) -> Tensor:
        """Per-query scores ``[n, Q, h, w]`` of ``n`` normalised crops ``[n, 3, h, w]``."""
        raise NotImplementedError

    @property
    def pad_multiple(self) -> int:
        """Crops are zero-padded to a multiple of this (the model's patch grid)."""
        return 1

    def class_probabilities(self, scores: Tensor) -> Tensor:
        """Query scores ``[Q, H, W]`` to class probabilities ``[K, H, W]``: softmax of the scaled CLIP
        logits over queries, then the max over each class's synonyms."""
        probs = (scores * self.logit_scale).softmax(dim=0)
        return self.max_over_synonyms(probs)

    def refine_scores(self, scores: Tensor, image: Tensor) -> Tensor:
        """Hook for a post-refinement of one image's query scores ``[Q, H, W]`` at its original size, given
        the normalised image ``[3, h, w]`` (e.g. PAMR); the identity here."""
        return scores

    # -- provided -----------------------------------------------------------------------------------
    def normalise(self, image: Tensor) -> Tensor:
        """RGB pixels ``[3, H, W]`` in 0..255 to the model's normalised input (fp32)."""
        mean = torch.tensor(self.pixel_mean, device=image.device).view(3, 1, 1)
        std = torch.tensor(self.pixel_std, device=image.device).view(3, 1, 1)
        return (image.float() - mean) / std

    def max_over_synonyms(self, per_query: Tensor) -> Tensor:
        """``[Q, H, W]`` -> ``[K, H, W]``: each class takes the max over its synonym queries."""
        if self.num_classes == self.num_queries:
            return per_query
        out = per_query.new_full((self.num_classes, *per_query.shape[1:]), float("-inf"))
        index = self.query_to_class.to(per_query.device).view(-1, 1, 1).expand_as(per_query)
        return out.scatter_reduce_(0, index, per_query, reduce="amax")

    def image_scores(self, images: Sequence[Tensor]) -> List[Tensor]:
        """Query scores ``[Q, H, W]`` of each normalised image ``[3, H, W]`` (sliding window or whole)."""
        if self.slide_crop > 0:
            crop = (self.slide_crop, self.slide_crop)
            stride = (self.slide_stride, self.slide_stride)
        else:  # whole image: one window per image of its own size
            crop = stride = None
        out = []
        groups = [images] if crop is not None else [[img] for img in images]
        for group in groups:
            c = crop or tuple(group[0].shape[-2:])
            s = stride or c
            out += slide_inference(group, self._scores_on_device, self.num_queries, c, s,
                                   pad_multiple=self.pad_multiple, crop_batch_size=self.crop_batch_size)
        return out

    def _scores_on_device(self, crops: Tensor) -> Tensor:
        with torch.no_grad():
            return self.crop_scores(crops.to(self.run_device, self.run_dtype))

    def scores_at(self, scores: Tensor, image: Tensor, size: Tuple[int, int]) -> Tensor:
        """One image's query scores resized to ``size`` (its original size), then :meth:`refine_scores`."""
        resized = F.interpolate(scores[None], size=tuple(size), mode="bilinear")[0]
        return self.refine_scores(resized, image)

    def labels(self, probabilities: Tensor) -> Tensor:
        """Labels ``[H, W]`` from class probabilities ``[K, H, W]``; below ``prob_thd``: class 0."""
        top, label = probabilities.max(dim=0)
        label[top < self.prob_thd] = 0
        return label

    def predict_scores(self, scores: Tensor) -> Prediction:
        """Class probabilities and labels from one image's query scores at its original size."""
        probs = self.class_probabilities(scores.float())
        if self.area_thd is not None:
            probs = suppress_small_classes(probs, self.area_thd)
        labels = self.labels(probs)
        if self.renormalize:
            probs = probs / probs.sum(dim=0, keepdim=True)
        return Prediction(probs, labels)

    @torch.no_grad()
    def predict(self, images: Sequence[Tensor], sizes: Optional[Sequence[Tuple[int, int]]] = None
                ) -> List[Prediction]:
        """Predictions of normalised images ``[3, h, w]``, at ``sizes`` (default: their own)."""
        sizes = list(sizes) if sizes is not None else [tuple(img.shape[-2:]) for img in images]
        scores = self.image_scores(images)
        return [self.predict_scores(self.scores_at(s, img, size)) for s, img, size in zip(scores, images, sizes)]

"""mmseg plumbing shared by every training-free segmentor of the package (CLIP and SAM3).

A subclass provides :meth:`crop_scores` (per-query score maps of a batch of crops) and, if its scores are
not CLIP logits, :meth:`class_probabilities`. This base class does the rest, for any batch size and image
shape: class-name queries, sliding-window or whole-image inference, resizing to the original image,
max over synonyms, the background threshold, and mmseg's ``SegDataSample`` outputs.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.utils import stack_batch
from torch import Tensor

from .class_names import load_class_names
from .sliding_window import slide_inference

# CLIP's pixel statistics in 0..255 (the data preprocessor normalises with them).
CLIP_MEAN = (122.771, 116.746, 104.094)
CLIP_STD = (68.501, 66.632, 70.323)


@MODELS.register_module()
class FSASegDataPreProcessor(SegDataPreProcessor):
    """SegDataPreProcessor that also batches test images of different sizes.

    mmseg's test path requires equal sizes in a batch; here smaller images are zero-padded bottom/right to
    the largest one and their own size is kept in ``img_shape``, so the segmentor can cut them out again.
    Ground truth is left untouched (it stays at the original image size).
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        if training:
            return super().forward(data, training)
        data = self.cast_data(data)
        inputs = data["inputs"]
        if self.channel_conversion and inputs[0].size(0) == 3:
            inputs = [x[[2, 1, 0], ...] for x in inputs]
        inputs = [x.float() for x in inputs]
        if self._enable_normalize:
            inputs = [(x - self.mean) / self.std for x in inputs]
        data_samples = data.get("data_samples")
        if data_samples is not None:
            for x, sample in zip(inputs, data_samples):
                sample.set_metainfo({"img_shape": tuple(x.shape[-2:])})
        batch, _ = stack_batch(inputs, size_divisor=1, pad_val=self.pad_val)
        return dict(inputs=batch, data_samples=data_samples)


def resolve_device_dtype(precision: str = "auto", device: Optional[Union[str, torch.device]] = None
                         ) -> Tuple[torch.device, torch.dtype]:
    """``device=None`` picks CUDA when available; ``precision='auto'`` is fp16 on CUDA and fp32 elsewhere."""
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision == "auto":
        return device, (torch.float16 if device.type == "cuda" else torch.float32)
    if precision not in table:
        raise ValueError(f"precision must be 'auto' or one of {list(table)}, got '{precision}'")
    if device.type == "cpu" and precision == "fp16":
        raise ValueError("precision 'fp16' is not supported on CPU; use 'fp32' or 'bf16' (or 'auto')")
    return device, table[precision]


class OpenVocabSegmentor(BaseSegmentor):
    """Base class of the training-free open-vocabulary segmentors (inference only)."""

    def __init__(self, name_path: str, prob_thd: float = 0.0, logit_scale: float = 40.0,
                 slide_crop: int = 336, slide_stride: int = 112, crop_batch_size: int = 8,
                 precision: str = "auto", device: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type=FSASegDataPreProcessor, mean=list(CLIP_MEAN), std=list(CLIP_STD),
                                     bgr_to_rgb=True)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.query_words, query_to_class = load_class_names(name_path)
        self.register_buffer("query_to_class", torch.as_tensor(query_to_class, dtype=torch.long),
                             persistent=False)
        self.num_queries = len(self.query_words)
        self.num_classes = int(max(query_to_class)) + 1
        self.prob_thd = float(prob_thd)
        self.logit_scale = float(logit_scale)
        if slide_crop < 0 or (slide_crop > 0 and slide_stride <= 0):
            raise ValueError(f"slide_crop must be >= 0 (0 = whole image) and slide_stride > 0, "
                             f"got {slide_crop} / {slide_stride}")
        self.slide_crop = int(slide_crop)
        self.slide_stride = int(slide_stride)
        self.crop_batch_size = int(crop_batch_size)
        self.run_device, self.run_dtype = resolve_device_dtype(precision, device)

    # -- to implement -------------------------------------------------------------------------------
    def crop_scores(self, crops: Tensor) -> Tensor:
        """Per-query scores ``[n, Q, h, w]`` of ``n`` preprocessed crops ``[n, 3, h, w]``."""
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

    # -- provided -----------------------------------------------------------------------------------
    def max_over_synonyms(self, per_query: Tensor) -> Tensor:
        """``[Q, H, W]`` -> ``[K, H, W]``: each class takes the max over its synonym queries."""
        if self.num_classes == self.num_queries:
            return per_query
        out = per_query.new_full((self.num_classes, *per_query.shape[1:]), float("-inf"))
        index = self.query_to_class.to(per_query.device).view(-1, 1, 1).expand_as(per_query)
        return out.scatter_reduce_(0, index, per_query, reduce="amax")

    def image_scores(self, images: Sequence[Tensor]) -> List[Tensor]:
        """Query scores ``[Q, H, W]`` of each preprocessed image ``[3, H, W]`` (sliding window or whole)."""
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

    def predict(self, inputs: Tensor, data_samples: Optional[list] = None):
        metas = ([s.metainfo for s in data_samples] if data_samples is not None else
                 [dict(img_shape=inputs.shape[-2:], ori_shape=inputs.shape[-2:])] * inputs.shape[0])
        images = [img[:, :meta["img_shape"][0], :meta["img_shape"][1]] for img, meta in zip(inputs, metas)]
        scores = self.image_scores(images)
        seg_logits = [self.refine_scores(F.interpolate(s[None], size=tuple(meta["ori_shape"][:2]),
                                                       mode="bilinear")[0], img)
                      for s, img, meta in zip(scores, images, metas)]
        return self.postprocess_result(seg_logits, data_samples)

    def refine_scores(self, scores: Tensor, image: Tensor) -> Tensor:
        """Hook for a post-refinement of one image's query scores ``[Q, H, W]`` at its original size, given
        the preprocessed image ``[3, h, w]`` (e.g. PAMR); the identity here."""
        return scores

    def postprocess_result(self, seg_logits: Sequence[Tensor], data_samples: Optional[list] = None):
        """Class probabilities and labels per image; pixels below ``prob_thd`` go to class 0."""
        preds = []
        for i, logits in enumerate(seg_logits):
            probs = self.class_probabilities(logits.float())
            top, label = probs.max(dim=0, keepdim=True)
            label[top < self.prob_thd] = 0
            preds.append(label)
            if data_samples is not None:
                data_samples[i].set_data({"seg_logits": PixelData(data=probs),
                                          "pred_sem_seg": PixelData(data=label)})
        return data_samples if data_samples is not None else torch.stack(preds)

    # mmseg's abstract training/tensor-mode API: this is an inference-only, training-free model.
    def _forward(self, inputs, data_samples=None):
        return torch.stack(self.image_scores(list(inputs)))

    def encode_decode(self, inputs, batch_img_metas):
        return self._forward(inputs)

    def extract_feat(self, inputs):
        raise NotImplementedError("training-free segmentor: use predict()")

    def loss(self, inputs, data_samples):
        raise NotImplementedError("training-free segmentor: there is nothing to train")


def lcm(*values: int) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out

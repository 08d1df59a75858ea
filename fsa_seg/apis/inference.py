"""Single images: build a segmentor from a config, segment an image with any class names.

    from fsa_seg.apis import init_segmentor, segment_image
    model = init_segmentor("configs/fsa_proxy_sam_voc21.py", classes=[["cat", "kitten"], ["dog"]])
    result = segment_image(model, "photo.jpg")          # or an RGB uint8 array [H, W, 3]
    result.labels, result.probabilities, result.shares()

As mmseg's ``init_model`` / ``inference_model``: the model runs the config's test pipeline (its resize), and
the result is at the image's own size.
"""
from __future__ import annotations

import copy
import os
import os.path as osp
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .config import check_options, load_config

Classes = Sequence[Sequence[str]]


def parse_classes(text: str) -> List[List[str]]:
    """``"cat,kitten; dog"`` -> ``[['cat', 'kitten'], ['dog']]`` (classes by ``;``, synonyms by ``,``);
    ``ValueError`` (one line) for an empty list, class or synonym."""
    if not text or not text.strip() or not any(c.strip(" ,") for c in text.split(";")):
        raise ValueError('the class list is empty: give class names separated by ";" (synonyms by ","), '
                         'e.g. "cat,kitten; dog; grass"')
    parts = text.split(";")
    classes = []
    for i, part in enumerate(parts, 1):
        if not part.strip():
            if i == len(parts):
                continue  # a trailing ";"
            raise ValueError(f'class {i} is empty (check for doubled ";")')
        words = [w.strip() for w in part.split(",")]
        if any(not w for w in words):
            raise ValueError(f'class {i} ("{part.strip()}") has an empty synonym (check for doubled or '
                             f'trailing ",")')
        classes.append(words)
    return classes


def write_class_file(classes: Classes, path: str) -> str:
    """``classes`` in the class-name file format (one class per line, synonyms ``'; '``-separated)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join("; ".join(words) + "\n" for words in classes))
    return path


def read_image(path: str) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` of any image PIL reads (EXIF rotation applied, transparency on white);
    ``ValueError`` (one line) when it cannot be read."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not osp.isfile(path):
        raise ValueError(f"image '{path}' not found")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        reason = "not an image file" if isinstance(err, UnidentifiedImageError) else str(err) or type(err).__name__
        raise ValueError(f"cannot read image '{path}': {reason}") from None
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"cannot read image '{path}': empty image")
    return array


def init_segmentor(config: str, options: Optional[Mapping[str, Any]] = None, classes: Optional[Classes] = None,
                   device: Optional[str] = None):
    """The config's segmentor (an mmseg model, ``model.cfg`` = the config) in eval mode.

    ``options``: ``--cfg-options``-style overrides (checked against the model's options). ``classes``:
    segment these classes instead of the config's ``name_path`` (``classes[k]`` = class ``k``'s synonyms).
    ``device``: e.g. ``'cpu'`` (default: the config's, else CUDA when available).
    """
    import fsa_seg.plugin  # noqa: F401  (registers the segmentors)
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    options = dict(options or {})
    cfg = load_config(config, options)
    check_options(cfg, options)
    with tempfile.TemporaryDirectory() as tmp:
        if classes is not None:
            cfg.model.name_path = write_class_file(classes, osp.join(tmp, "classes.txt"))
        if device is not None:
            cfg.model.device = device
        init_default_scope(cfg.get("default_scope", "mmseg"))
        model = MODELS.build(cfg.model)
    model.cfg = cfg
    return model.eval()


@dataclass
class Segmentation:
    """One image's result at its own size: labels ``[H, W]`` (class ids), class probabilities ``[K, H, W]``
    and the classes (``classes[k]``: class ``k``'s synonyms)."""

    labels: np.ndarray
    probabilities: Tensor
    classes: List[List[str]]

    def shares(self) -> List[dict]:
        """Per class: id, name (first synonym), synonyms, pixels and share of the image (%)."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.classes))[: len(self.classes)]
        total = int(self.labels.size)
        return [{"id": i, "class": words[0], "synonyms": list(words), "pixels": int(counts[i]),
                 "share": round(100.0 * int(counts[i]) / total, 2)} for i, words in enumerate(self.classes)]


def model_classes(model) -> List[List[str]]:
    """The segmentor's classes as synonym lists (from its queries)."""
    inner = model.model
    classes: List[List[str]] = [[] for _ in range(inner.num_classes)]
    for word, k in zip(inner.query_words, inner.query_to_class.tolist()):
        classes[k].append(word)
    return classes


def pipeline_input(cfg, rgb: np.ndarray) -> Dict[str, list]:
    """One RGB image ``[H, W, 3]`` through the config's test pipeline (its resize; no annotations), as a batch of
    one for the segmentor's ``test_step`` / data preprocessor."""
    from mmcv.transforms import Compose

    steps = copy.deepcopy(cfg.test_dataloader.dataset.get("pipeline") or cfg.get("test_pipeline"))
    steps = [s for s in steps if s.get("type") != "LoadAnnotations"]
    steps[0] = dict(type="LoadImageFromNDArray")
    data = Compose(steps)(dict(img=np.ascontiguousarray(rgb[:, :, ::-1])))  # the pipeline works in BGR
    return dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]])


def segment_image(model, image: Union[str, np.ndarray], classes: Optional[Classes] = None) -> Segmentation:
    """Segment one image (a path, or RGB uint8 ``[H, W, 3]``) through the config's test pipeline.

    ``classes`` (optional) replaces the model's classes first (their text queries are encoded again).
    """
    if classes is not None and [list(c) for c in classes] != model_classes(model):
        model.model.set_classes(classes)
    rgb = read_image(image) if isinstance(image, (str, os.PathLike)) else np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"image must be RGB uint8 [H, W, 3], got {rgb.dtype} {list(rgb.shape)}")
    data = pipeline_input(model.cfg, rgb)
    with torch.no_grad():
        sample = model.test_step(data)[0]
    labels = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)
    return Segmentation(labels, sample.seg_logits.data.cpu(), model_classes(model))

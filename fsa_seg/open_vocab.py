"""The base of every training-free open-vocabulary segmentation model of the package (CLIP and SAM3), in plain
torch: no mmseg, no mmcv.

A subclass provides :meth:`OpenVocabModel.crop_scores` (per-query score maps of a batch of crops) and, if its
scores are not CLIP logits, :meth:`OpenVocabModel.class_probabilities`. This class does the rest, for any
number and size of images: the class-name queries, sliding-window or whole-image inference, resizing to
the original size, the max over synonyms and the background threshold. The mmseg segmentors
(``fsa_seg.plugin``) wrap these models; :mod:`fsa_seg.apis` runs them on single images.

Settings: what acts after a subclass's shared part (its thresholds, last block, FSA, ...) is one frozen dataclass,
the model's ``SETTINGS`` (:class:`OutputSettings` here, extended by each subclass), held as ``model.settings`` and
built once by the constructor from its keyword arguments; the pieces it stands for (an FSA module, a score recipe,
...) are built from it. Its fields are the model's ``VARIANT_KEYS``.

One pass, many settings (:meth:`OpenVocabModel.predict_variants`): a subclass that splits its crop scoring into
a shared part (:meth:`~OpenVocabModel.crop_features`) and a per-setting part
(:meth:`~OpenVocabModel.scores_from_features`) evaluates K settings ("variants", each
``dataclasses.replace(model.settings, **changes)``) on one run of the shared part per crop batch, the model's
``settings`` swapped for each variant's (:meth:`~OpenVocabModel.use_variant`). Each variant's prediction is
that of a model built with its settings: the same code builds its pieces, and it runs on the same crops.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Dict, FrozenSet, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .class_names import load_class_names
from .settings import AFTER_SCORES, after_score_keys, rename_deprecated, set_fields, setting_keys
from .sliding_window import slide_inference, slide_inference_shared

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


#: ``crop_batch_size=None`` ('auto'): the share of the available memory the crop batch may take, and the
#: largest batch chosen (beyond it a batch is no faster on a CPU and takes memory other work may need)
AUTO_MEMORY_SHARE = 0.5
AUTO_MAX_CROPS = 8


def available_memory(device: torch.device) -> Optional[int]:
    """Bytes a run may still use on ``device``: free CUDA memory (``torch.cuda.mem_get_info``), or the system's
    available memory (Linux ``MemAvailable``, else psutil where installed); None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def auto_crop_batch_size(per_crop_bytes: Optional[int], available: Optional[int]) -> int:
    """Crops per batch for ``crop_batch_size=None``: as many as fit in ``AUTO_MEMORY_SHARE`` of the available
    memory at ``per_crop_bytes`` each, between 1 and ``AUTO_MAX_CROPS`` (1 when either is unknown)."""
    if not per_crop_bytes or not available:
        return 1
    return int(max(1, min(AUTO_MAX_CROPS, AUTO_MEMORY_SHARE * available // per_crop_bytes)))


class CropMemoryError(RuntimeError):
    """Out of memory while scoring a batch of crops; the message (one line) says what to lower."""


def _is_out_of_memory(err: BaseException) -> bool:
    """CUDA's ``OutOfMemoryError``, Python's ``MemoryError``, or the CPU allocator's ``RuntimeError``."""
    if isinstance(err, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    return isinstance(err, RuntimeError) and ("can't allocate memory" in str(err) or "out of memory" in str(err))


class VariantError(ValueError):
    """A setting that cannot be one of several variants of one pass; the message (one line) says why."""


@dataclass(frozen=True)
class OutputSettings:
    """The settings of :meth:`OpenVocabModel.class_probabilities` and :meth:`OpenVocabModel.predict_scores` (see
    :class:`OpenVocabModel`'s arguments), which every model's settings extend. Fields marked ``AFTER_SCORES`` act
    only after a crop's scores: variants that differ only in those share their crop scores."""

    prob_thd: float = field(default=0.0, metadata=AFTER_SCORES)
    area_thd: Optional[float] = field(default=None, metadata=AFTER_SCORES)
    renormalize: bool = field(default=False, metadata=AFTER_SCORES)
    logit_scale: float = field(default=40.0, metadata=AFTER_SCORES)

    def __post_init__(self) -> None:
        if self.area_thd is not None and not 0.0 <= float(self.area_thd) < 1.0:
            raise ValueError(f"area_thd must be in [0, 1) or None, got {self.area_thd}")
        set_fields(self, prob_thd=float(self.prob_thd), renormalize=bool(self.renormalize),
                   area_thd=None if self.area_thd is None else float(self.area_thd),
                   logit_scale=float(self.logit_scale))


@dataclass
class Prediction:
    """One image's result: class probabilities ``[K, H, W]`` (fp32) and labels ``[H, W]`` (long)."""

    probabilities: Tensor
    labels: Tensor


class OpenVocabModel(nn.Module):
    """Training-free open-vocabulary segmentation of normalised images (inference only).

    Args (the settings, :class:`OutputSettings`, are keyword arguments: ``prob_thd``, ``area_thd``, ``renormalize``,
    ``logit_scale`` here, and a subclass's ``SETTINGS`` fields):
        name_path: class-name file or builtin name (one class per line, ``;``-separated synonyms).
        prob_thd: pixels whose best class probability is below it get label 0 (background).
        area_thd: classes (other than 0) predicted on less than this share of the pixels not predicted as
            class 0 are removed (their probabilities set to 0) before the labels are taken (SCLIP's
            ``area_thd``); None: off.
        renormalize: after the max over synonyms, divide the stored class probabilities by their sum over
            classes (NACLIP's released code); the labels are taken before, so they are unaffected.
        logit_scale: CLIP's softmax scale over the query logits.
        slide_crop, slide_stride: sliding window (``slide_crop=0``: the whole image in one window).
        crop_batch_size: windows scored together; None ('auto'): chosen on first use from the memory available
            on the device and :meth:`crop_memory_bytes` (:func:`auto_crop_batch_size`).
        precision, device: see :func:`resolve_device_dtype`.
    """

    #: pixel statistics (0..255, RGB) the model's inputs are normalised with
    pixel_mean: Tuple[float, float, float] = CLIP_MEAN
    pixel_std: Tuple[float, float, float] = CLIP_STD
    #: the settings dataclass: the constructor arguments that act only after :meth:`crop_features`, which may
    #: differ between the variants of one pass (:meth:`predict_variants`); a subclass extends it
    SETTINGS: ClassVar[type] = OutputSettings
    #: deprecated spellings of settings (old -> new), accepted with a ``DeprecationWarning``
    RENAMED_SETTINGS: ClassVar[Mapping[str, str]] = {}
    #: the fields of ``SETTINGS`` (set for every subclass from its own ``SETTINGS``)
    VARIANT_KEYS: ClassVar[FrozenSet[str]] = setting_keys(OutputSettings)
    #: the fields of ``SETTINGS`` marked ``AFTER_SCORES``, which act only after the per-crop scores
    #: (:meth:`class_probabilities` onwards): variants that differ only in these share one
    #: :meth:`scores_from_features` per crop batch
    POST_SCORE_KEYS: ClassVar[FrozenSet[str]] = after_score_keys(OutputSettings)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.VARIANT_KEYS = setting_keys(cls.SETTINGS)
        cls.POST_SCORE_KEYS = after_score_keys(cls.SETTINGS)

    def __init__(self, name_path: str, slide_crop: int = 336, slide_stride: int = 112,
                 crop_batch_size: Optional[int] = None, precision: str = "auto", device: Optional[str] = None,
                 **settings: Any) -> None:
        super().__init__()
        self._set_queries(*load_class_names(name_path))
        #: the one settings object (``SETTINGS``) the model runs with; :meth:`use_variant` swaps it
        self.settings = self.make_settings(settings)
        if slide_crop < 0 or (slide_crop > 0 and slide_stride <= 0):
            raise ValueError(f"slide_crop must be >= 0 (0 = whole image) and slide_stride > 0, "
                             f"got {slide_crop} / {slide_stride}")
        if crop_batch_size is not None and (isinstance(crop_batch_size, bool) or int(crop_batch_size) < 1):
            raise ValueError(f"crop_batch_size must be a positive integer or None (auto), got {crop_batch_size}")
        self.slide_crop = int(slide_crop)
        self.slide_stride = int(slide_stride)
        self._crop_batch_size = None if crop_batch_size is None else int(crop_batch_size)
        self.run_device, self.run_dtype = resolve_device_dtype(precision, device)
        #: called as ``crop_progress(done, total)`` after each crop batch of :meth:`image_scores` (e.g. a progress
        #: bar over one large image's windows); None: silent
        self.crop_progress = None

    @property
    def crop_batch_size(self) -> int:
        """Windows scored together: the configured number, or for ``None`` the automatic choice, made on first use
        (:func:`auto_crop_batch_size` of :meth:`crop_memory_bytes` and the memory available then) and printed."""
        if self._crop_batch_size is None:
            per_crop, available = self.crop_memory_bytes(), available_memory(self.run_device)
            self._crop_batch_size = auto_crop_batch_size(per_crop, available)
            if per_crop and available:
                print(f"crop_batch_size auto: {self._crop_batch_size} (about {per_crop / 2 ** 20:,.0f} MiB per crop, "
                      f"{available / 2 ** 30:.1f} GiB available on {self.run_device.type}; set "
                      f"model.crop_batch_size to fix it)", flush=True)
        return self._crop_batch_size

    @crop_batch_size.setter
    def crop_batch_size(self, value: Optional[int]) -> None:
        self._crop_batch_size = None if value is None else int(value)

    def crop_memory_bytes(self) -> Optional[int]:
        """Estimated peak memory of scoring one crop (bytes), for ``crop_batch_size=None``; None: unknown (then
        one crop a batch). A subclass that knows its shapes says."""
        return None

    @classmethod
    def make_settings(cls, kwargs: Mapping[str, Any]) -> Any:
        """The ``SETTINGS`` of constructor keyword arguments (deprecated names mapped, with a warning); a
        ``TypeError`` for a keyword that is no setting."""
        kwargs = rename_deprecated(kwargs, cls.RENAMED_SETTINGS, cls.__name__)
        for key in kwargs:
            if key not in cls.VARIANT_KEYS:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {key!r}")
        return cls.SETTINGS(**kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        # A read-only property (a piece that follows ``settings``) is never shadowed, not even by a module that
        # nn.Module would register under its name.
        attr = getattr(type(self), name, None)
        if isinstance(attr, property) and attr.fset is None:
            raise AttributeError(f"{type(self).__name__}.{name} follows model.settings: set model.settings = "
                                 f"dataclasses.replace(model.settings, ...) or use `with model.variant(...)`")
        super().__setattr__(name, value)

    # The output settings, as attributes.
    prob_thd = property(lambda self: self.settings.prob_thd)
    area_thd = property(lambda self: self.settings.area_thd)
    renormalize = property(lambda self: self.settings.renormalize)
    logit_scale = property(lambda self: self.settings.logit_scale)

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
        """Per-query scores ``[n, Q, h, w]`` of ``n`` normalised crops ``[n, 3, h, w]``: by default
        :meth:`scores_from_features` of :meth:`crop_features` (a subclass implements those two, or this)."""
        return self.scores_from_features(self.crop_features(crops), crops)

    def crop_features(self, crops: Tensor) -> Any:
        """The part of a crop batch's scoring that no ``VARIANT_KEYS`` setting changes (the backbone); needed
        for :meth:`predict_variants`."""
        raise NotImplementedError(f"{type(self).__name__} does not split its crop scoring (crop_features / "
                                  f"scores_from_features): it cannot evaluate variants in one pass")

    def scores_from_features(self, features: Any, crops: Tensor) -> Tensor:
        """Per-query scores ``[n, Q, h, w]`` of the crops ``[n, 3, h, w]`` whose :meth:`crop_features` are
        ``features``, under the current settings."""
        raise NotImplementedError

    def check_settings(self, settings: Any) -> None:
        """Raise ``ValueError`` (one line) if this model cannot run with ``settings`` (a ``SETTINGS``) for reasons
        the settings alone do not show (e.g. the depth of the built network); a subclass adds its checks."""

    @classmethod
    def check_variant(cls, settings: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        """Raise :class:`VariantError` (one line) if ``changes`` cannot vary on top of a model built with
        ``settings``: a key outside ``VARIANT_KEYS`` (e.g. one that changes the crops or the backbone). A subclass
        adds the checks that depend on values."""
        for key in changes:
            if key not in cls.VARIANT_KEYS:
                raise VariantError(f"model.{key} cannot differ between the variants of one pass ({cls.__name__} "
                                   f"varies only {', '.join(sorted(cls.VARIANT_KEYS))} on one run of its "
                                   f"backbone); use separate runs")

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

    def _window_groups(self, images: Sequence[Tensor]):
        """``(images, crop, stride)`` groups: all images with the sliding window, or each image alone as one
        window of its own size (whole-image inference, ``slide_crop=0``)."""
        if self.slide_crop > 0:
            return [(images, (self.slide_crop,) * 2, (self.slide_stride,) * 2)]
        return [([img], tuple(img.shape[-2:]), tuple(img.shape[-2:])) for img in images]

    def image_scores(self, images: Sequence[Tensor]) -> List[Tensor]:
        """Query scores ``[Q, H, W]`` of each normalised image ``[3, H, W]`` (sliding window or whole)."""
        out = []
        for group, crop, stride in self._window_groups(images):
            out += slide_inference(group, self._scores_on_device, self.num_queries, crop, stride,
                                   pad_multiple=self.pad_multiple, crop_batch_size=self.crop_batch_size,
                                   progress=self.crop_progress)
        return out

    def _scores_on_device(self, crops: Tensor) -> Tensor:
        with torch.no_grad(), self.memory_hint(crops):
            return self.crop_scores(crops.to(self.run_device, self.run_dtype))

    @contextmanager
    def memory_hint(self, crops: Tensor) -> Iterator[None]:
        """Turn an out-of-memory error of a crop batch into :class:`CropMemoryError`, one line saying what to lower."""
        try:
            yield
        except Exception as err:  # noqa: BLE001 - only out-of-memory errors are replaced
            if not _is_out_of_memory(err):
                raise
            n, h, w = crops.shape[0], crops.shape[-2], crops.shape[-1]
            batch = self.crop_batch_size
            lower = (f"model.crop_batch_size (now {batch}; 1 takes the least memory)" if batch > 1
                     else f"model.slide_crop (crops of {h}x{w})")
            raise CropMemoryError(
                f"out of memory scoring {n} crop(s) of {h}x{w} on {self.run_device}: lower {lower}, or use "
                f"model.precision=bf16 (or fp16 on CUDA)") from None

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

    # -- variants: many settings on one run of crop_features ---------------------------------------------
    def variant_settings(self) -> Dict[str, Any]:
        """The model's current value of every ``VARIANT_KEYS`` setting."""
        return {f.name: getattr(self.settings, f.name) for f in fields(self.settings)}

    def variant_state(self, changes: Mapping[str, Any]) -> Any:
        """The settings (a ``SETTINGS``) of the model built with its settings updated by ``changes``:
        ``dataclasses.replace(model.settings, **changes)``, its pieces built once (the model itself is left as it
        was). :class:`VariantError` if ``changes`` cannot be a variant (:meth:`check_variant`); deprecated names
        are mapped with a warning."""
        changes = rename_deprecated(changes, self.RENAMED_SETTINGS, type(self).__name__)
        self.check_variant(self.variant_settings(), changes)
        settings = replace(self.settings, **changes)
        self.check_settings(settings)
        return settings

    @contextmanager
    def use_variant(self, settings: Any) -> Iterator["OpenVocabModel"]:
        """Within the block the model runs with ``settings`` (from :meth:`variant_state`); after it, with its own
        again."""
        if not isinstance(settings, self.SETTINGS):
            raise TypeError(f"use_variant takes a {self.SETTINGS.__name__} (from variant_state), got "
                            f"{type(settings).__name__}")
        saved = self.settings
        self.settings = settings
        try:
            yield self
        finally:
            self.settings = saved

    def variant(self, **changes: Any):
        """``with model.variant(top_p=0.3): ...`` - the model with these settings changed, within the block."""
        return self.use_variant(self.variant_state(changes))

    def scoring_groups(self, states: Sequence[Any]) -> Tuple[List[Any], List[int]]:
        """The states (settings from :meth:`variant_state`) whose crop scores differ (the first of each group of
        ``states`` that differ only in ``POST_SCORE_KEYS``), and for each state the index of its group's scores."""
        distinct: Dict[str, int] = {}
        index = []
        for state in states:
            key = repr([(f.name, getattr(state, f.name)) for f in fields(state) if f.name not in self.POST_SCORE_KEYS])
            index.append(distinct.setdefault(key, len(distinct)))
        firsts = {group: k for k, group in reversed(list(enumerate(index)))}
        return [states[firsts[group]] for group in range(len(distinct))], index

    def image_scores_variants(self, images: Sequence[Tensor], states: Sequence[Any]
                              ) -> List[List[Tensor]]:
        """:meth:`image_scores` of each variant state, per image: :meth:`crop_features` runs once per crop batch,
        then :meth:`scores_from_features` once per group of states that differ only in ``POST_SCORE_KEYS``
        (those states share the same tensors)."""
        def shared(crops: Tensor):
            with self.memory_hint(crops):
                crops = crops.to(self.run_device, self.run_dtype)
                return self.crop_features(crops), crops

        def scorer(state):
            def score(shared_out) -> Tensor:
                features, crops = shared_out
                with self.use_variant(state), self.memory_hint(crops):
                    return self.scores_from_features(features, crops)
            return score

        scoring, index = self.scoring_groups(states)
        out: List[List[Tensor]] = []
        with torch.no_grad():
            for group, crop, stride in self._window_groups(images):
                out += slide_inference_shared(group, shared, [scorer(state) for state in scoring], self.num_queries,
                                              crop, stride, pad_multiple=self.pad_multiple,
                                              crop_batch_size=self.crop_batch_size, progress=self.crop_progress)
        return [[per_image[g] for g in index] for per_image in out]

    def predict_variants(self, images: Sequence[Tensor], sizes: Optional[Sequence[Tuple[int, int]]],
                         variants: Sequence[Mapping[str, Any]]) -> List[List[Prediction]]:
        """Per image, per variant, the :class:`Prediction` of a model built with the variant's settings (each a
        dict of ``VARIANT_KEYS`` arguments applied on top of this model's): ``out[i][k]`` for image ``i`` and
        ``variants[k]``.

        Per crop batch the shared part (:meth:`crop_features`) runs once and :meth:`scores_from_features` after it
        once per variant (once per group of variants that differ only in ``POST_SCORE_KEYS``); memory grows with
        the number of those groups by the per-image sums of their query score maps ``[Q, H, W]`` (and with the
        number of variants K by the K predictions), not by K backbone runs.
        """
        return self.predict_states(images, sizes, [self.variant_state(v) for v in variants])

    @torch.no_grad()
    def predict_states(self, images: Sequence[Tensor], sizes: Optional[Sequence[Tuple[int, int]]],
                       states: Sequence[Any]) -> List[List[Prediction]]:
        """:meth:`predict_variants` with the variants' states already built by :meth:`variant_state` (a segmentor
        builds them once, not per batch)."""
        sizes = list(sizes) if sizes is not None else [tuple(img.shape[-2:]) for img in images]
        per_image = self.image_scores_variants(images, states)
        out: List[List[Prediction]] = []
        for scores, img, size in zip(per_image, images, sizes):
            preds = []
            for k, state in enumerate(states):
                with self.use_variant(state):
                    preds.append(self.predict_scores(self.scores_at(scores[k], img, size)))
                scores[k] = None  # free this variant's sums once no other variant shares them
            out.append(preds)
        return out

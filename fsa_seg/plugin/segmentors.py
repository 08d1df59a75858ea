"""The mmseg segmentors: thin adapters from mmseg's ``BaseSegmentor`` API to the package's plain-torch models.

Each segmentor builds its model (:class:`~fsa_seg.clip_model.CLIPSegModel`, the SAM3 model) from the config's
keyword arguments and keeps it as ``segmentor.model``; mmseg's ``predict`` becomes the model's
:meth:`~fsa_seg.open_vocab.OpenVocabModel.predict` on the images of the batch (each cut back to its own size),
with the class probabilities and labels stored in the ``SegDataSample`` outputs.

One pass, many settings: ``variants=[dict(top_p=0.3), dict(fsa=False, prob_thd=0.2), ...]`` (config keys of the
model, each variant applied on top of the config's model) makes ``predict`` run the model's
:meth:`~fsa_seg.open_vocab.OpenVocabModel.predict_variants` and store variant ``k``'s probabilities and labels
as ``variant<k>_seg_logits`` / ``variant<k>_pred_sem_seg`` (:func:`variant_field`; variant 0's also as
``seg_logits`` / ``pred_sem_seg``). ``PerClassIoUMetric(variant=k)`` scores variant ``k``.

Registered names: ``FSASegmentor``, ``FSAProxySegmentation`` (the released class name and keys),
``SAM3Segmentor`` and ``FSASegDataPreProcessor``.
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Type

import torch
from mmengine.structures import PixelData
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.utils import stack_batch
from torch import Tensor

from ..clip_model import CLIPSegModel
from ..open_vocab import OpenVocabModel
from ..settings import rename_deprecated, setting_defaults, setting_keys


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


def init_arguments(cls: type) -> Set[str]:
    """Keyword arguments a class's ``__init__`` accepts over its MRO (``**kwargs`` passes them on), with a
    model's settings (the fields of its ``SETTINGS``) and their deprecated names (``RENAMED_SETTINGS``)."""
    names: Set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters
            names |= {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    if hasattr(cls, "SETTINGS"):
        names |= setting_keys(cls.SETTINGS) | set(getattr(cls, "RENAMED_SETTINGS", {}))
    return names - {"self"}


def init_defaults(cls: type) -> Dict[str, Any]:
    """Default values of the keyword arguments of a class's ``__init__`` over its MRO (the subclass's win), with
    a model's settings' defaults (its ``SETTINGS``)."""
    out: Dict[str, Any] = setting_defaults(cls.SETTINGS) if hasattr(cls, "SETTINGS") else {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass):
            for name, p in inspect.signature(klass.__init__).parameters.items():
                if p.default is not p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    out[name] = p.default
    return out


def variant_field(index: int, name: str) -> str:
    """The data-sample field of variant ``index``'s output ``name`` (``seg_logits`` or ``pred_sem_seg``)."""
    return f"variant{index}_{name}"


def _same(a: Any, b: Any) -> bool:
    """Equal config values; lists and tuples alike (a config may spell a tuple either way)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # e.g. tensors
        return a is b


class OpenVocabSegmentor(BaseSegmentor):
    """mmseg segmentor around an :class:`~fsa_seg.open_vocab.OpenVocabModel` (inference only).

    Subclasses name the model class (:meth:`model_class`); every config key other than
    ``data_preprocessor`` and ``init_cfg`` is passed to it.
    """

    @classmethod
    def model_class(cls) -> Type[OpenVocabModel]:
        raise NotImplementedError

    @classmethod
    def option_names(cls) -> Set[str]:
        """Config keys the segmentor accepts (``type`` included): a typo in an override is caught early."""
        return init_arguments(cls.model_class()) | {"type", "data_preprocessor", "init_cfg", "variants"}

    @classmethod
    def model_kwargs(cls, **config: Any) -> Dict[str, Any]:
        """The model class's keyword arguments for the config's model keys (the same names here)."""
        return dict(config)

    def build_model(self, **kwargs) -> OpenVocabModel:
        return self.model_class()(**self.model_kwargs(**kwargs))

    @classmethod
    def variant_changes(cls, config: Mapping[str, Any], variant: Mapping[str, Any]) -> Dict[str, Any]:
        """The model arguments that ``variant`` (model config keys applied on top of ``config``, the model
        config without ``type``) changes; :class:`~fsa_seg.open_vocab.VariantError` (one line) when one of them
        cannot differ within one pass."""
        model_cls = cls.model_class()
        defaults = init_defaults(model_cls)
        # A variant's deprecated names warn here; the config's (and model_kwargs' warnings) once, when the model
        # is built.
        variant = rename_deprecated(variant, model_cls.RENAMED_SETTINGS, cls.__name__, prefix="model.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = rename_deprecated(config, model_cls.RENAMED_SETTINGS, cls.__name__, prefix="model.")
            own = {**defaults, **cls.model_kwargs(**config)}
            merged = {**defaults, **cls.model_kwargs(**{**config, **variant})}
        changes = {k: v for k, v in merged.items() if k not in own or not _same(own[k], v)}
        model_cls.check_variant({k: own.get(k) for k in model_cls.VARIANT_KEYS}, changes)
        return changes

    def __init__(self, data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None,
                 variants: Optional[Sequence[Mapping[str, Any]]] = None, **kwargs: Any) -> None:
        variants = [dict(v) for v in variants or []]
        # Each variant's model arguments, checked before the model is built (a bad one fails the build, not the
        # first batch); their states are built once the model is there.
        variant_changes = [self.variant_changes(kwargs, v) for v in variants]
        model = self.build_model(**kwargs)
        if data_preprocessor is None:
            data_preprocessor = dict(type=FSASegDataPreProcessor, mean=list(model.pixel_mean),
                                     std=list(model.pixel_std), bgr_to_rgb=True)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.model = model
        self.variants: List[Dict[str, Any]] = variants
        self._variant_states = [model.variant_state(changes) for changes in variant_changes]

    def predict(self, inputs: Tensor, data_samples: Optional[list] = None):
        metas = ([s.metainfo for s in data_samples] if data_samples is not None else
                 [dict(img_shape=inputs.shape[-2:], ori_shape=inputs.shape[-2:])] * inputs.shape[0])
        images = [img[:, :meta["img_shape"][0], :meta["img_shape"][1]] for img, meta in zip(inputs, metas)]
        sizes = [tuple(meta["ori_shape"][:2]) for meta in metas]
        if self.variants:
            per_image = self.model.predict_states(images, sizes, self._variant_states)
        else:
            per_image = [[pred] for pred in self.model.predict(images, sizes)]
        if data_samples is None:
            return torch.stack([preds[0].labels[None] for preds in per_image])
        for sample, preds in zip(data_samples, per_image):
            sample.set_data({"seg_logits": PixelData(data=preds[0].probabilities),
                             "pred_sem_seg": PixelData(data=preds[0].labels[None])})
            if self.variants:
                for k, pred in enumerate(preds):
                    sample.set_data({variant_field(k, "seg_logits"): PixelData(data=pred.probabilities),
                                     variant_field(k, "pred_sem_seg"): PixelData(data=pred.labels[None])})
        return data_samples

    # mmseg's abstract training/tensor-mode API: this is an inference-only, training-free model.
    def _forward(self, inputs, data_samples=None):
        return torch.stack(self.model.image_scores(list(inputs)))

    def encode_decode(self, inputs, batch_img_metas):
        return self._forward(inputs)

    def extract_feat(self, inputs):
        raise NotImplementedError("training-free segmentor: use predict()")

    def loss(self, inputs, data_samples):
        raise NotImplementedError("training-free segmentor: there is nothing to train")


@MODELS.register_module()
class FSASegmentor(OpenVocabSegmentor):
    """CLIP + a base method's last block (+ FSA): :class:`~fsa_seg.clip_model.CLIPSegModel` in mmseg."""

    @classmethod
    def model_class(cls) -> Type[OpenVocabModel]:
        return CLIPSegModel


# The released configs' keys and ours (FSAProxySegmentation).
_RELEASED_KEYS: Dict[str, str] = {"clip_type": "clip_pretrained", "model_type": "clip_model",
                                  "vfm_model": "vfm", "checkpoint": "vfm_checkpoint", "FSA": "fsa"}


@MODELS.register_module()
class FSAProxySegmentation(FSASegmentor):
    """The released class name and keyword arguments (``clip_type``, ``model_type``, ``vfm_model``,
    ``checkpoint``, ``FSA``), mapped onto :class:`FSASegmentor`. As in the released code, ``vfm_model=None``
    runs vanilla CLIP (its unmodified last block) without FSA, whatever ``FSA`` says (with a warning)."""

    @classmethod
    def option_names(cls) -> Set[str]:
        return super().option_names() | set(_RELEASED_KEYS)

    @classmethod
    def model_kwargs(cls, clip_type: str = "openai", model_type: str = "ViT-B-16", vfm_model: Optional[str] = "sam",
                     name_path: str = "voc21", checkpoint: Optional[str] = None, device=None, FSA: bool = True,
                     **kwargs) -> Dict[str, Any]:
        for ours in _RELEASED_KEYS.values():
            kwargs.pop(ours, None)  # the released names win when a config sets both
        if not vfm_model and FSA:
            warnings.warn("FSAProxySegmentation with vfm_model=None runs plain CLIP and ignores FSA=True, as the "
                          "released code does; for FSA on vanilla CLIP use type='FSASegmentor', "
                          "base_method='vanilla', fsa=True")
            FSA = False
        return dict(name_path=name_path, clip_model=model_type.replace("/", "-"), clip_pretrained=clip_type,
                    vfm=vfm_model, vfm_checkpoint=checkpoint, fsa=FSA,
                    base_method="proxyclip" if vfm_model else "vanilla",
                    device=str(device) if device is not None else None, **kwargs)


@MODELS.register_module()
class SAM3Segmentor(OpenVocabSegmentor):
    """SAM3 (+ FSA): :class:`~fsa_seg.sam3.model.SAM3SegModel` in mmseg (transformers is imported on use)."""

    @classmethod
    def model_class(cls) -> Type[OpenVocabModel]:
        from ..sam3.model import SAM3SegModel

        return SAM3SegModel

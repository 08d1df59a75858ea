"""The CLIP segmentation model: a base method's last block, optionally with FSA, on an open_clip ViT.

Plain torch (open_clip, timm, segment-anything; no mmseg). The mmseg segmentor ``FSASegmentor``
(``fsa_seg.plugin``) wraps it. A crop is scored in two stages so that work can be shared and inspected:

* :meth:`CLIPSegModel.crop_features` - the expensive part that no FSA or last-block setting changes:
  CLIP up to (not through) its last block, and the proxy model's features;
* :meth:`CLIPSegModel.logits_from_features` - the base method's last block, FSA, the logits head.

The settings of the second stage and of the post-processing (``CLIPSegModel.VARIANT_KEYS``: FSA and its
parameters, the base method and its options, PAMR, the thresholds and the logit scale) can therefore differ
between the variants of one pass (:meth:`~fsa_seg.open_vocab.OpenVocabModel.predict_variants`): the first stage
runs once per crop batch for all of them.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor

from .clip_backbone import CLIPBackbone, create_clip
from .fsa import FeedbackSelfAdaptiveAttention, FSATrace, LogitHead, attend, merge_heads
from .last_block import LAST_BLOCKS, LastBlockAttention, build_last_block
from .open_vocab import CLIP_MEAN, CLIP_STD, OpenVocabModel, VariantError
from .pamr import PAMR
from .progress import Progress
from .vfm import build_vfm

# ImageNet statistics in 0..1, used by the proxy VFMs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Prompt template sets: the 80 ImageNet templates of CLIP (the papers' protocol), or one (fast checks).
PROMPT_TEMPLATES = {
    "openai_imagenet": tuple(open_clip.OPENAI_IMAGENET_TEMPLATES),
    "single": ("a photo of a {}.",),
}


def _text_cache_path(key: str) -> str:
    root = os.environ.get("FSA_SEG_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "fsa_seg"))
    return os.path.join(root, "text_embeddings", hashlib.sha256(key.encode()).hexdigest()[:24] + ".pt")


def lcm(*values: int) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


@dataclass
class CropFeatures:
    """What the last block needs from a batch of crops: the tokens entering CLIP's last block
    ``[n, 1 + h*w, D]``, their patch grid ``(h, w)`` and the proxy features ``[n, C, H, W]`` (or None)."""

    tokens: Tensor
    grid: Tuple[int, int]
    proxy: Optional[Tensor]


class CLIPSegModel(OpenVocabModel):
    """Training-free open-vocabulary segmentation with CLIP, a base method and (optionally) FSA.

    Args (beyond :class:`~fsa_seg.open_vocab.OpenVocabModel`'s):
        clip_model / clip_pretrained / clip_checkpoint: the open_clip model, its pretrained tag, or a local
            checkpoint file (which wins over the tag).
        base_method: the last-block method (see ``fsa_seg.last_block.list_base_methods()``).
        vfm / vfm_checkpoint: proxy model for ProxyCLIP (``sam``, ``dino``, ``dinov2``, ``mae``).
        beta, gamma: ProxyCLIP's attention shift and scale.
        fsa, top_p, lamda: FSA on/off, pruning mass and sharpening (paper Sec. 3).
        base_scale, uniform_scale: FSA's logit scales of the base and the uniform-attention outputs in its
            attention isolation (paper Eq. 3-4; released 20 and 35).
        fsa_ensemble: FSA's adaptation ensemble (paper Eq. 8) on (default) or off (``A_fb V``, an ablation).
        random_weights: random CLIP/VFM weights, for pipeline checks only.
        templates: prompt templates, ``openai_imagenet`` (80, as in the papers) or ``single``.
        cache_text: keep text embeddings of real weights under ``$FSA_SEG_CACHE`` (~/.cache/fsa_seg).
        text_embeddings: precomputed L2-normalised query embeddings ``[Q, E]``; the text encoder is then
            not run (e.g. embeddings computed elsewhere, or stand-ins for timing runs).
        base_method_cfg: extra options for the base method (e.g. NACLIP's window).
        patch_fit: how a window whose sides are not multiples of the patch size meets the patch grid:
            ``'pad'`` (zero-padded, centred, and the scores cut back to the window) or ``'floor'`` (the patch
            embedding drops the remainder and the logits are stretched over the whole window, as NACLIP's
            released code does, e.g. on its whole-image VOC protocol).
        pamr, pamr_steps, pamr_dilations: optional PAMR post-refinement (see :meth:`refine_scores`).
    """

    #: the settings of the last block, FSA and the post-processing (see the module docstring)
    VARIANT_KEYS = OpenVocabModel.VARIANT_KEYS | frozenset({
        "base_method", "base_method_cfg", "beta", "gamma", "fsa", "top_p", "lamda", "base_scale",
        "uniform_scale", "pamr", "pamr_steps", "pamr_dilations", "fsa_ensemble"})
    VARIANT_ATTRIBUTES = OpenVocabModel.VARIANT_ATTRIBUTES + ("method", "base_method", "fsa", "pamr")
    # PAMR refines the scores at the original size (refine_scores), after the crop scores
    POST_SCORE_KEYS = OpenVocabModel.POST_SCORE_KEYS | frozenset({"pamr", "pamr_steps", "pamr_dilations"})

    def __init__(self, name_path: str, clip_model: str = "ViT-B-16", clip_pretrained: Optional[str] = "openai",
                 clip_checkpoint: Optional[str] = None, base_method: str = "proxyclip",
                 vfm: Optional[str] = "sam", vfm_checkpoint: Optional[str] = None, beta: float = 1.2,
                 gamma: float = 3.0, fsa: bool = True, top_p: float = 0.45, lamda: float = 3.0,
                 base_scale: float = 20.0, uniform_scale: float = 35.0,
                 base_method_cfg: Optional[dict] = None, random_weights: bool = False,
                 templates: str = "openai_imagenet", cache_text: bool = True,
                 text_embeddings: Optional[Tensor] = None, pamr: bool = False, pamr_steps: int = 10,
                 pamr_dilations: Sequence[int] = (8, 16), patch_fit: str = "pad", fsa_ensemble: bool = True,
                 **kwargs) -> None:
        super().__init__(name_path=name_path, **kwargs)
        if patch_fit not in ("pad", "floor"):
            raise ValueError(f"patch_fit must be 'pad' or 'floor', got '{patch_fit}'")
        self.patch_fit = patch_fit
        self._set_head_settings(base_method, base_method_cfg, beta, gamma, fsa, top_p, lamda, base_scale,
                                uniform_scale, pamr, pamr_steps, pamr_dilations)
        self._set_fsa_ensemble(fsa_ensemble)
        if self.method.needs_proxy and not vfm:
            raise ValueError(f"base_method '{base_method}' needs a proxy model: set model.vfm to one of "
                             f"sam, dino, dinov2, mae")
        if templates not in PROMPT_TEMPLATES:
            raise ValueError(f"unknown templates '{templates}'; choose one of {list(PROMPT_TEMPLATES)}")

        clip = create_clip(clip_model, clip_pretrained, clip_checkpoint, random_weights)
        tokenizer = open_clip.get_tokenizer(clip_model)
        self.backbone = CLIPBackbone(clip, tokenizer)
        self.vfm = (build_vfm(vfm, vfm_checkpoint, random_weights, crop_size=self.slide_crop or 336)
                    if (vfm and self.method.needs_proxy) else None)
        self.requires_grad_(False)
        self.to(self.run_device, self.run_dtype)

        self._templates = templates
        self._text_cache = (clip_model, str(clip_checkpoint or clip_pretrained)) if cache_text and not random_weights \
            else None
        if text_embeddings is None:
            self.encode_queries()
        else:
            width = self.backbone.visual.proj.shape[1]
            if tuple(text_embeddings.shape) != (self.num_queries, width):
                raise ValueError(f"text_embeddings must be [{self.num_queries}, {width}] (queries x embedding "
                                 f"size), got {list(text_embeddings.shape)}")
            self.register_buffer("text_embeddings", text_embeddings.to(self.run_device, self.run_dtype),
                                 persistent=False)
        self._clip_mean_std = (torch.tensor(CLIP_MEAN) / 255.0, torch.tensor(CLIP_STD) / 255.0)

    def _set_head_settings(self, base_method: str, base_method_cfg: Optional[dict], beta: float, gamma: float,
                           fsa: bool, top_p: float, lamda: float, base_scale: float, uniform_scale: float,
                           pamr: bool, pamr_steps: int, pamr_dilations: Sequence[int]) -> None:
        """The last-block method, FSA and PAMR (what acts after :meth:`crop_features`)."""
        method_cfg = dict(base_method_cfg or {})
        if base_method == "proxyclip":
            method_cfg.setdefault("beta", beta)
            method_cfg.setdefault("gamma", gamma)
        self.method = build_last_block(base_method, **method_cfg)
        self.base_method = base_method
        self.fsa = (FeedbackSelfAdaptiveAttention(top_p=top_p, lamda=lamda, base_scale=base_scale,
                                                  uniform_scale=uniform_scale) if fsa else None)
        self.pamr = PAMR(pamr_steps, pamr_dilations) if pamr else None
        self._settings = {**self._settings, "base_method": base_method, "base_method_cfg": base_method_cfg,
                          "beta": beta, "gamma": gamma, "fsa": fsa, "top_p": top_p, "lamda": lamda,
                          "base_scale": base_scale, "uniform_scale": uniform_scale, "pamr": pamr,
                          "pamr_steps": pamr_steps, "pamr_dilations": pamr_dilations}

    def _set_fsa_ensemble(self, fsa_ensemble: bool) -> None:
        """FSA's adaptation ensemble on or off (set after :meth:`_set_head_settings` built ``self.fsa``)."""
        if self.fsa is not None:
            self.fsa.ensemble = bool(fsa_ensemble)
        self._settings = {**self._settings, "fsa_ensemble": bool(fsa_ensemble)}

    def apply_settings(self, settings: Mapping[str, Any]) -> None:
        super().apply_settings(settings)
        self._set_head_settings(*(settings[k] for k in (
            "base_method", "base_method_cfg", "beta", "gamma", "fsa", "top_p", "lamda", "base_scale",
            "uniform_scale", "pamr", "pamr_steps", "pamr_dilations")))
        self._set_fsa_ensemble(settings["fsa_ensemble"])

    @classmethod
    def check_variant(cls, settings: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        """Beyond the keys: a variant's base method must use the proxy features exactly when this model's does
        (a model of a method with a proxy builds the VFM, pads the crops to its patch multiple and computes
        its features; one without does none of that)."""
        super().check_variant(settings, changes)
        if "base_method" in changes:
            new, own = changes["base_method"], settings["base_method"]
            if new not in LAST_BLOCKS:
                raise VariantError(f"model.base_method={new!r}: unknown base method; choose one of "
                                   f"{sorted(LAST_BLOCKS)}")
            if LAST_BLOCKS[new].needs_proxy != LAST_BLOCKS[own].needs_proxy:
                uses = "needs" if LAST_BLOCKS[new].needs_proxy else "does not use"
                raise VariantError(f"model.base_method={new!r} {uses} the proxy (VFM) features that "
                                   f"base_method={own!r} {'does not compute' if uses == 'needs' else 'computes'}: "
                                   f"the crops and the backbone differ; use separate runs")

    def encode_queries(self) -> None:
        """The text embeddings ``[Q, E]`` of the queries (prompt-template ensemble)."""
        cache_key = "|".join([*self._text_cache, self._templates, *self.query_words]) if self._text_cache else None
        emb = self._text_embeddings(PROMPT_TEMPLATES[self._templates], cache_key)
        self.register_buffer("text_embeddings", emb.to(self.run_device, self.run_dtype), persistent=False)

    def _text_embeddings(self, templates, cache_key: Optional[str]) -> Tensor:
        """80-template prompt ensemble per query; cached on disk for real weights (slow on CPU)."""
        path = _text_cache_path(cache_key) if cache_key else None
        if path and os.path.isfile(path):
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("key") == cache_key:
                print(f"text embeddings: {self.num_queries} queries from the cache ({path})", flush=True)
                return cached["embeddings"]
        print(f"text embeddings: encoding {self.num_queries} queries x {len(templates)} prompt templates with "
              f"the text tower" + (f" (cached afterwards in {path})" if path else ""), flush=True)
        progress = Progress(self.num_queries, "queries") if self.num_queries > 1 else None
        emb = self.backbone.encode_text(self.query_words, templates,
                                        progress=(lambda word: progress.update(1)) if progress else None).cpu()
        if progress is not None:
            progress.close()
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.save({"key": cache_key, "embeddings": emb}, path)
        return emb

    def crop_memory_bytes(self) -> int:
        """Estimated peak memory (bytes) of scoring one ``slide_crop`` crop (336 for whole images), what
        ``crop_batch_size=None`` divides the available memory by. Per token of a transformer block, about
        ``BLOCK_ACTIVATIONS`` x its width values are alive at once (input, norm, q/k/v, attention output, residual
        sum, the MLP's 4x hidden layer before and after its activation), for CLIP and for the proxy; the last block
        keeps ``LAST_BLOCK_SQUARES`` fp32 ``[N, N]`` maps of its N attention tokens (the proxy attention, its
        temporaries, FSA). Attention scores are never whole (SDPA / query chunks). ``tools/benchmark.py
        --crop-memory`` prints this next to the measured peak per crop."""
        crop = self.slide_crop or 336
        elt = torch.finfo(self.run_dtype).bits // 8
        ph, pw = self.backbone.patch_size
        clip_tokens = 1 + (crop // ph) * (crop // pw)
        values = clip_tokens * self.backbone.visual.transformer.width * self.BLOCK_ACTIVATIONS
        attention_tokens = clip_tokens
        shape = self.vfm.token_shape(crop, crop) if self.vfm is not None else None
        if shape is not None:
            values += shape[0] * shape[1] * self.BLOCK_ACTIVATIONS
            attention_tokens = shape[2]
        return int(elt * values + 4 * self.LAST_BLOCK_SQUARES * attention_tokens ** 2)

    #: see :meth:`crop_memory_bytes`
    BLOCK_ACTIVATIONS = 16
    LAST_BLOCK_SQUARES = 6

    @property
    def pad_multiple(self) -> int:
        if self.patch_fit == "floor":  # windows go in as they are; the patch grid floors them
            return 1
        return lcm(self.backbone.patch_size[0], self.vfm.patch_multiple if self.vfm is not None else 1)

    def _proxy_input(self, crops: Tensor) -> Tensor:
        """CLIP-normalised crops -> ImageNet-normalised, as the VFMs expect."""
        mean, std = (t.to(crops.device, crops.dtype).view(1, 3, 1, 1) for t in self._clip_mean_std)
        in_mean = crops.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        in_std = crops.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (crops * std + mean - in_mean) / in_std

    # -- the two stages of a crop ---------------------------------------------------------------------
    def crop_features(self, crops: Tensor) -> CropFeatures:
        """CLIP up to its last block and the proxy features (what no last-block setting changes)."""
        tokens, grid = self.backbone.forward_to_last_block(crops)
        proxy = self.vfm(self._proxy_input(crops)) if self.vfm is not None else None
        return CropFeatures(tokens, grid, proxy)

    def last_block(self, features: CropFeatures) -> Tuple[LastBlockAttention, LogitHead]:
        """The base method's last-block attention ``A0``, values ``V`` and the head that maps attended
        values (heads merged) to unscaled query logits; FSA acts between them."""
        block = self.backbone.last_block
        out = self.method.attention(block, features.tokens, features.grid, features.proxy)
        text_t = self.text_embeddings.t()

        def head(attended: Tensor) -> Tensor:
            tokens = out.finish(block.attn.out_proj(attended))
            return self.backbone.project(tokens) @ text_t

        return out, head

    def logits_from_features(self, features: CropFeatures, trace: Optional[FSATrace] = None) -> Tensor:
        """Unscaled query logits ``[n, Q, h, w]`` on the output grid of the last block; ``trace`` (optional)
        records the query rows of the base attention and of FSA's maps (:class:`~fsa_seg.fsa.FSATrace`)."""
        out, head = self.last_block(features)
        if trace is not None:
            trace.on_grid(out.grid, out.patch_tokens)
            if self.fsa is None:
                trace.record_base(out.a0)
        attended = (self.fsa(out.a0, out.v, head, trace=trace) if self.fsa is not None
                    else attend(out.a0, out.v))
        logits = head(merge_heads(attended))[:, out.patch_tokens]
        h, w = out.grid
        return logits.transpose(1, 2).reshape(logits.shape[0], -1, h, w)

    def patch_logits(self, crops: Tensor) -> Tensor:
        """Unscaled query logits ``[n, Q, h, w]`` of normalised crops on the last block's output grid."""
        return self.logits_from_features(self.crop_features(crops))

    def scores_from_features(self, features: CropFeatures, crops: Tensor, trace: Optional[FSATrace] = None) -> Tensor:
        """The query logits of :meth:`logits_from_features` resized to the crops (``crop_scores`` is this of
        :meth:`crop_features`); ``trace`` as there."""
        return F.interpolate(self.logits_from_features(features, trace), size=crops.shape[-2:], mode="bilinear")

    def refine_scores(self, scores: Tensor, image: Tensor) -> Tensor:
        """With ``pamr``, as SCLIP/NACLIP do: the query scores at the original size are refined by PAMR,
        guided by the (normalised) image resized to that size, before the softmax."""
        if self.pamr is None:
            return scores
        guide = F.interpolate(image[None].to(scores), size=scores.shape[-2:], mode="bilinear")
        with torch.no_grad():
            return self.pamr(guide, scores[None])[0]

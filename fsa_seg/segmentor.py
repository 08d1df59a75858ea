"""The CLIP segmentor: a base method's last block, optionally with FSA, on an open_clip ViT.

``FSASegmentor`` is registered in mmseg's MODELS; the released class name ``FSAProxySegmentation`` is
registered too and accepts the released configs' keys.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional, Sequence, Tuple

import open_clip
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from .clip_backbone import CLIPBackbone, create_clip
from .fsa import FeedbackSelfAdaptiveAttention, attend, merge_heads
from .last_block import build_last_block
from .pamr import PAMR
from .segmentor_base import CLIP_MEAN, CLIP_STD, OpenVocabSegmentor, lcm
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


@MODELS.register_module()
class FSASegmentor(OpenVocabSegmentor):
    """Training-free open-vocabulary segmentation with CLIP, a base method and (optionally) FSA.

    Args (beyond :class:`OpenVocabSegmentor`'s):
        clip_model / clip_pretrained / clip_checkpoint: the open_clip model, its pretrained tag, or a local
            checkpoint file (which wins over the tag).
        base_method: the last-block method (see ``fsa_seg.last_block.list_base_methods()``).
        vfm / vfm_checkpoint: proxy model for ProxyCLIP (``sam``, ``dino``, ``dinov2``, ``mae``).
        beta, gamma: ProxyCLIP's attention shift and scale.
        fsa, top_p, lamda: FSA on/off, pruning mass and sharpening (paper Sec. 3).
        random_weights: random CLIP/VFM weights, for pipeline checks only.
        templates: prompt templates, ``openai_imagenet`` (80, as in the papers) or ``single``.
        cache_text: keep text embeddings of real weights under ``$FSA_SEG_CACHE`` (~/.cache/fsa_seg).
        base_method_cfg: extra options for the base method (e.g. NACLIP's window).
        pamr, pamr_steps, pamr_dilations: optional PAMR post-refinement (see :meth:`refine_scores`).
    """

    def __init__(self, name_path: str, clip_model: str = "ViT-B-16", clip_pretrained: Optional[str] = "openai",
                 clip_checkpoint: Optional[str] = None, base_method: str = "proxyclip",
                 vfm: Optional[str] = "sam", vfm_checkpoint: Optional[str] = None, beta: float = 1.2,
                 gamma: float = 3.0, fsa: bool = True, top_p: float = 0.45, lamda: float = 3.0,
                 base_method_cfg: Optional[dict] = None, random_weights: bool = False,
                 templates: str = "openai_imagenet", cache_text: bool = True, pamr: bool = False, pamr_steps: int = 10,
                 pamr_dilations: Sequence[int] = (8, 16), **kwargs) -> None:
        super().__init__(name_path=name_path, **kwargs)
        method_cfg = dict(base_method_cfg or {})
        if base_method == "proxyclip":
            method_cfg.setdefault("beta", beta)
            method_cfg.setdefault("gamma", gamma)
        self.method = build_last_block(base_method, **method_cfg)
        self.base_method = base_method
        if self.method.needs_proxy and not vfm:
            raise ValueError(f"base_method '{base_method}' needs a proxy model: set model.vfm to one of "
                             f"sam, dino, dinov2, mae")
        self.fsa = FeedbackSelfAdaptiveAttention(top_p=top_p, lamda=lamda) if fsa else None
        self.pamr = PAMR(pamr_steps, pamr_dilations) if pamr else None

        clip = create_clip(clip_model, clip_pretrained, clip_checkpoint, random_weights)
        tokenizer = open_clip.get_tokenizer(clip_model)
        self.backbone = CLIPBackbone(clip, tokenizer)
        self.vfm = (build_vfm(vfm, vfm_checkpoint, random_weights, crop_size=self.slide_crop or 336)
                    if (vfm and self.method.needs_proxy) else None)
        self.requires_grad_(False)
        self.to(self.run_device, self.run_dtype)

        if templates not in PROMPT_TEMPLATES:
            raise ValueError(f"unknown templates '{templates}'; choose one of {list(PROMPT_TEMPLATES)}")
        cache_key = None
        if cache_text and not random_weights:
            cache_key = "|".join([clip_model, str(clip_checkpoint or clip_pretrained), templates,
                                  *self.query_words])
        templates = PROMPT_TEMPLATES[templates]
        self.register_buffer("text_embeddings", self._text_embeddings(templates, cache_key).to(
            self.run_device, self.run_dtype), persistent=False)
        self._clip_mean_std = (torch.tensor(CLIP_MEAN) / 255.0, torch.tensor(CLIP_STD) / 255.0)

    def _text_embeddings(self, templates, cache_key: Optional[str]) -> Tensor:
        """80-template prompt ensemble per query; cached on disk for real weights (slow on CPU)."""
        path = _text_cache_path(cache_key) if cache_key else None
        if path and os.path.isfile(path):
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("key") == cache_key:
                return cached["embeddings"]
        emb = self.backbone.encode_text(self.query_words, templates).cpu()
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.save({"key": cache_key, "embeddings": emb}, path)
        return emb

    @property
    def pad_multiple(self) -> int:
        return lcm(self.backbone.patch_size[0], self.vfm.patch_multiple if self.vfm is not None else 1)

    def _proxy_input(self, crops: Tensor) -> Tensor:
        """CLIP-normalised crops -> ImageNet-normalised, as the VFMs expect."""
        mean, std = (t.to(crops.device, crops.dtype).view(1, 3, 1, 1) for t in self._clip_mean_std)
        in_mean = crops.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        in_std = crops.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (crops * std + mean - in_mean) / in_std

    def patch_logits(self, crops: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Unscaled query logits ``[n, Q, h, w]`` on the output grid of the last block."""
        x, grid = self.backbone.forward_to_last_block(crops)
        proxy = self.vfm(self._proxy_input(crops)) if self.vfm is not None else None
        block = self.backbone.last_block
        out = self.method.attention(block, x, grid, proxy)
        text_t = self.text_embeddings.t()

        def head(attended: Tensor) -> Tensor:
            tokens = out.finish(block.attn.out_proj(attended))
            return self.backbone.project(tokens) @ text_t

        attended = self.fsa(out.a0, out.v, head) if self.fsa is not None else attend(out.a0, out.v)
        logits = head(merge_heads(attended))[:, out.patch_tokens]
        h, w = out.grid
        return logits.transpose(1, 2).reshape(logits.shape[0], -1, h, w), out.grid

    def crop_scores(self, crops: Tensor) -> Tensor:
        logits, _ = self.patch_logits(crops)
        return F.interpolate(logits, size=crops.shape[-2:], mode="bilinear")

    def refine_scores(self, scores: Tensor, image: Tensor) -> Tensor:
        """With ``pamr``, as SCLIP/NACLIP do: the query scores at the original size are refined by PAMR,
        guided by the (preprocessed) image resized to that size, before the softmax."""
        if self.pamr is None:
            return scores
        guide = F.interpolate(image[None].to(scores), size=scores.shape[-2:], mode="bilinear")
        with torch.no_grad():
            return self.pamr(guide, scores[None])[0]


@MODELS.register_module()
class FSAProxySegmentation(FSASegmentor):
    """The released class name and keyword arguments (``clip_type``, ``model_type``, ``vfm_model``,
    ``checkpoint``, ``FSA``), mapped onto :class:`FSASegmentor`. As in the released code, ``vfm_model=None``
    runs vanilla CLIP (its unmodified last block)."""

    def __init__(self, clip_type: str = "openai", model_type: str = "ViT-B-16", vfm_model: Optional[str] = "sam",
                 name_path: str = "voc21", checkpoint: Optional[str] = None, device=None,
                 FSA: bool = True, **kwargs) -> None:
        for ours in ("clip_pretrained", "clip_model", "vfm", "vfm_checkpoint", "fsa"):
            kwargs.pop(ours, None)  # the released names win when a config sets both
        super().__init__(name_path=name_path, clip_model=model_type.replace("/", "-"), clip_pretrained=clip_type,
                         vfm=vfm_model, vfm_checkpoint=checkpoint, fsa=FSA,
                         base_method="proxyclip" if vfm_model else "vanilla",
                         device=str(device) if device is not None else None, **kwargs)

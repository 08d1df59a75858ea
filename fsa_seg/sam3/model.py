"""``SAM3SegModel``: training-free open-vocabulary semantic segmentation with SAM3, optionally with FSA.

Plain torch and transformers (no mmseg); the mmseg segmentor ``SAM3Segmentor`` (``fsa_seg.plugin``) wraps it.

SAM3 (Meta, 2025) segments every instance of a text concept and scores, with its presence head, whether the
concept is in the image. Per crop: the vision backbone runs once; every class prompt is decoded against the
same features, ``query_batch_size`` prompts at a time; the per-prompt probability maps (semantic head,
instance masks, or both, times presence) are the segmentor's scores. With ``fsa=True`` the feedback
attention ``A_fb`` built from those maps (``feedback.py``) is ensembled with the self-attention of the last
DETR-encoder layer, ``(A_fb A0 + A0 A_fb + A_fb) V / 3`` per head (paper Eq. 8), that layer is re-run and the
decoder, mask and presence heads run again (``fsa_mode='attention'``); ``fsa_mode='output'`` only propagates
the maps with ``A_fb``.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import fsa as fsa_core
from ..open_vocab import OpenVocabModel
from . import decode
from .feedback import Sam3FeedbackParams, propagate_scores, sam3_feedback_attention, token_grid_scores
from .loading import HUB_ID, build_sam3, build_tokenizer

# Sam3ImageProcessor normalises 0..1 pixels with mean = std = 0.5, i.e. 127.5 on the 0..255 scale.
SAM3_MEAN = (127.5, 127.5, 127.5)
SAM3_STD = (127.5, 127.5, 127.5)

SCORE_SOURCES = ("semantic", "instances", "both")
FSA_MODES = ("attention", "output")


class SAM3SegModel(OpenVocabModel):
    """SAM3 (+ FSA) as an open-vocabulary segmentation model.

    Args (beyond :class:`~fsa_seg.open_vocab.OpenVocabModel`'s; its ``logit_scale`` is unused: SAM3 scores
    are probabilities):
        checkpoint: hub id (``facebook/sam3``, gated) or a local folder with the SAM3 weights.
        random_weights / sam3_config: random weights (pipeline checks only) with the tiny test config, or
            ``Sam3Config(**sam3_config)`` (``dict()`` = SAM3's full architecture).
        score_source: ``semantic`` | ``instances`` | ``both``; ``both_reduce``: ``mean`` | ``max``.
        presence_weighting: multiply each map by its prompt's presence probability.
        query_batch_size: prompts decoded together against one crop's vision features.
        fsa, fsa_mode: FSA on/off; ``attention`` (re-run the last encoder layer and the heads) or ``output``.
        presence_pruning, presence_thd, isolation, feedback_scale, isolation_scale, top_p, lamda: the
            feedback signal and FSA's pruning/sharpening (``feedback.Sam3FeedbackParams``).
        fsa_batch_size: prompts per re-run of the adapted layer (each holds ``heads x N x N`` attention).
    """

    pixel_mean = SAM3_MEAN
    pixel_std = SAM3_STD

    def __init__(self, name_path: str, checkpoint: Optional[str] = HUB_ID, random_weights: bool = False,
                 sam3_config: Optional[dict] = None, score_source: str = "semantic", both_reduce: str = "mean",
                 presence_weighting: bool = True, query_batch_size: int = 16, fsa: bool = False,
                 fsa_mode: str = "attention", presence_pruning: bool = True, presence_thd: float = 0.5,
                 isolation: bool = True, feedback_scale: float = 10.0, isolation_scale: float = 10.0,
                 top_p: float = 0.45, lamda: float = 3.0, fsa_batch_size: int = 4, slide_crop: int = 0,
                 slide_stride: int = 672, crop_batch_size: int = 1, **kwargs) -> None:
        super().__init__(name_path=name_path, slide_crop=slide_crop, slide_stride=slide_stride,
                         crop_batch_size=crop_batch_size, **kwargs)
        if score_source not in SCORE_SOURCES:
            raise ValueError(f"score_source must be one of {SCORE_SOURCES}, got '{score_source}'")
        if both_reduce not in ("mean", "max"):
            raise ValueError(f"both_reduce must be 'mean' or 'max', got '{both_reduce}'")
        if fsa_mode not in FSA_MODES:
            raise ValueError(f"fsa_mode must be one of {FSA_MODES}, got '{fsa_mode}'")
        if query_batch_size < 1 or fsa_batch_size < 1:
            raise ValueError("query_batch_size and fsa_batch_size must be positive")
        self.score_source = score_source
        self.both_reduce = both_reduce
        self.presence_weighting = bool(presence_weighting)
        self.query_batch_size = int(query_batch_size)
        self.fsa = bool(fsa)
        self.fsa_mode = fsa_mode
        self.fsa_batch_size = int(fsa_batch_size)
        self.feedback = Sam3FeedbackParams(presence_pruning=bool(presence_pruning), presence_thd=float(presence_thd),
                                           isolation=bool(isolation), feedback_scale=float(feedback_scale),
                                           isolation_scale=float(isolation_scale), top_p=float(top_p),
                                           lamda=float(lamda))
        self.feedback.core_params()  # validates top_p now rather than at the first image

        self.sam3 = build_sam3(checkpoint, random_weights, sam3_config, self.run_dtype).to(self.run_device)
        self.image_size = int(self.sam3.config.vision_config.backbone_config.image_size)
        self._tokenize = build_tokenizer(checkpoint, random_weights)
        self.encode_queries()

    def encode_queries(self) -> None:
        """Prompt features, computed once: every crop reuses them."""
        ids, mask = self._tokenize(list(self.query_words))
        self.register_buffer("text_features", self._encode_text(ids, mask), persistent=False)
        self.register_buffer("text_mask", mask.bool().to(self.run_device), persistent=False)

    @torch.no_grad()
    def _encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        chunks = [decode.encode_text(self.sam3, ids[i:i + self.query_batch_size].to(self.run_device),
                                     mask[i:i + self.query_batch_size].to(self.run_device))
                  for i in range(0, ids.shape[0], self.query_batch_size)]
        return torch.cat(chunks)

    # -- OpenVocabModel --------------------------------------------------------------------------------
    # crop_scores = scores_from_features(crop_features(crops), crops). The split lets one pass evaluate the base
    # class's variant keys (prob_thd, area_thd, renormalize) on one backbone run; SAM3's own settings (fsa, its
    # mode and feedback, the score source) are not variant keys yet.
    def crop_features(self, crops: Tensor) -> decode.VisionFeatures:
        """SAM3's vision backbone (ViT + FPN neck, geometry token) on SAM3-normalised crops ``[n, 3, h, w]``."""
        return decode.encode_vision(self.sam3, decode.resize_for_sam3(crops, self.image_size))

    def scores_from_features(self, vision: decode.VisionFeatures, crops: Tensor) -> Tensor:
        """Per-prompt probabilities ``[n, Q, h, w]`` of the crops whose vision features are ``vision``."""
        maps = torch.stack([self.crop_query_scores(vision, i) for i in range(crops.shape[0])])
        return F.interpolate(maps, size=tuple(crops.shape[-2:]), mode="bilinear", align_corners=False)

    def class_probabilities(self, scores: Tensor) -> Tensor:
        """SAM3 scores are already per-prompt probabilities (independent sigmoids): max over synonyms only."""
        return self.max_over_synonyms(scores)

    # -- SAM3 ----------------------------------------------------------------------------------------
    def _decode(self, vision: decode.VisionFeatures, index: int, prompts: slice,
                attend_fn: Optional[decode.AttendFn] = None, state: Optional[decode.EncoderState] = None):
        """Scores ``[B, H, W]`` and presence ``[B]`` of ``prompts`` on crop ``index``, and the last layer's input.

        Without ``attend_fn`` the last encoder layer is transformers' own; with it, the re-implemented layer
        with that attention (``state`` then gives the stored input of the layer).
        """
        text, mask = self.text_features[prompts], self.text_mask[prompts]
        vis = vision.expand(index, text.shape[0])
        text, mask = decode.prompt_features(vis, text, mask)  # + the crop's geometry token, as the reference
        layer = self.sam3.detr_encoder.layers[-1]
        if state is None:
            state = decode.encode_to_last_layer(self.sam3, vis, text, mask)
        if attend_fn is None:
            encoded = decode.original_last_layer(layer, state, text)
        else:
            encoded = decode.last_layer_forward(layer, state, text, attend_fn)
        out = decode.run_heads(self.sam3, encoded, state, vis, text, mask)
        scores = decode.query_scores(out, self.score_source, self.both_reduce, self.presence_weighting)
        return scores, out.presence_logits.float().sigmoid().flatten(), state

    def crop_query_scores(self, vision: decode.VisionFeatures, index: int) -> Tensor:
        """Probability maps ``[Q, H, W]`` (SAM3's mask resolution) of all prompts on crop ``index``."""
        keep_states = self.fsa and self.fsa_mode == "attention"
        scores, presence, states = [], [], []
        for start in range(0, self.num_queries, self.query_batch_size):
            s, p, state = self._decode(vision, index, slice(start, start + self.query_batch_size))
            scores.append(s)
            presence.append(p)
            if keep_states:
                states.append(state)
        scores, presence = torch.cat(scores), torch.cat(presence)
        if not self.fsa:
            return scores
        grid = vision.token_grid
        a_fb = sam3_feedback_attention(token_grid_scores(scores, grid), presence, self.feedback)
        if a_fb is None:
            return scores
        if self.fsa_mode == "output":
            return propagate_scores(scores, a_fb, grid)
        return self._rerun_adapted(vision, index, states, a_fb)

    def _rerun_adapted(self, vision: decode.VisionFeatures, index: int, states: List[decode.EncoderState],
                       a_fb: Tensor) -> Tensor:
        """Last encoder layer with ``(A_fb A0 + A0 A_fb + A_fb) V / 3`` (shared core), then the heads again."""
        a_fb = a_fb.to(self.run_dtype)  # once, not in every product of the ensemble
        out = []
        start = 0
        for state in states:
            for sub in range(0, state.hidden.shape[0], self.fsa_batch_size):
                part = slice(sub, sub + self.fsa_batch_size)
                sub_state = decode.EncoderState(state.hidden[part], state.pos[part],
                                                None if state.cross_mask is None else state.cross_mask[part],
                                                state.spatial_shapes)
                batch = sub_state.hidden.shape[0]
                fb = a_fb.expand(batch, -1, -1)

                def attend_fn(a0: Tensor, v: Tensor, fb: Tensor = fb) -> Tensor:
                    return fsa_core.ensemble_attend(fb, a0, v)

                prompts = slice(start + sub, start + sub + batch)
                scores, _, _ = self._decode(vision, index, prompts, attend_fn, sub_state)
                out.append(scores)
            start += state.hidden.shape[0]
        return torch.cat(out)

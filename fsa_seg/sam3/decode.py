"""SAM3's text-prompted forward, split so the vision backbone runs once and the last DETR-encoder layer can be
re-run with another attention.

Follows ``Sam3Model.forward`` (text prompts, no geometry prompts), ``Sam3DetrEncoder.forward`` and
``Sam3DetrEncoderLayer.forward`` of ``transformers/models/sam3/modeling_sam3.py`` (transformers 5.x) by calling
their submodules; only the last encoder layer's self-attention is re-implemented, with the attention map
explicit so it can be replaced (``last_layer_forward``). ``tests/test_sam3_model.py`` checks that the split
reproduces ``Sam3Model.forward``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import Sam3Model
from transformers.models.sam3 import modeling_sam3

from .. import fsa as fsa_core

# ``(a0 [B, h, N, N], v [B, h, N, d]) -> attended values [B, h, N, d]``.
AttendFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class VisionFeatures:
    """FPN levels the detector uses (all but the coarsest, as in ``Sam3Model.forward``), ``[n, C, h_l, w_l]``."""

    fpn: Tuple[Tensor, ...]
    pos: Tuple[Tensor, ...]

    def expand(self, index: int, batch: int) -> "VisionFeatures":
        """Crop ``index`` repeated (as a view) for ``batch`` prompts."""
        return VisionFeatures(tuple(f[index:index + 1].expand(batch, -1, -1, -1) for f in self.fpn),
                              tuple(p[index:index + 1].expand(batch, -1, -1, -1) for p in self.pos))

    @property
    def token_grid(self) -> Tuple[int, int]:
        """``(h, w)`` of the detector-encoder tokens (the finest level kept is the one encoded)."""
        return tuple(self.fpn[-1].shape[-2:])


@dataclass
class EncoderState:
    """Input of the last DETR-encoder layer, and what that layer needs besides it."""

    hidden: Tensor            # [B, N, D]
    pos: Tensor               # [B, N, D] position encoding of the tokens
    cross_mask: Optional[Tensor]
    spatial_shapes: Tensor    # [levels, 2]


@dataclass
class HeadOutputs:
    """SAM3's outputs per prompt (logits): masks ``[B, M, H, W]``, instance scores ``[B, M]``, presence ``[B, 1]``,
    semantic map ``[B, 1, H, W]``."""

    pred_masks: Tensor
    pred_logits: Tensor
    presence_logits: Tensor
    semantic_seg: Tensor


def encode_vision(model: Sam3Model, pixel_values: Tensor) -> VisionFeatures:
    """ViT + FPN neck, once per crop (``Sam3Model.get_vision_features``)."""
    out = model.get_vision_features(pixel_values)
    return VisionFeatures(tuple(out.fpn_hidden_states[:-1]), tuple(out.fpn_position_encoding[:-1]))


def encode_text(model: Sam3Model, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Prompt token features ``[Q, L, D]`` (CLIP text encoder + ``text_projection``)."""
    return model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def encode_to_last_layer(model: Sam3Model, vision: VisionFeatures, text: Tensor,
                         text_mask: Tensor) -> EncoderState:
    """All DETR-encoder layers but the last (``Sam3DetrEncoder.forward``)."""
    encoder = model.detr_encoder
    hidden, pos, spatial_shapes = encoder._prepare_multilevel_features([vision.fpn[-1]], [vision.pos[-1]])
    # Every prompt of the batch sees the same crop: keep one copy of the position encoding (it may be stored
    # for FSA's re-run).
    pos = pos[:1].clone().expand_as(pos)
    cross_mask = modeling_sam3.create_bidirectional_mask(
        config=encoder.config, inputs_embeds=hidden, attention_mask=text_mask, encoder_hidden_states=text)
    for layer in encoder.layers[:-1]:
        hidden = layer(hidden, prompt_feats=text, vision_pos_encoding=pos, prompt_cross_attn_mask=cross_mask)
    return EncoderState(hidden, pos, cross_mask, spatial_shapes)


def base_attention(layer: torch.nn.Module, state: EncoderState) -> Tuple[Tensor, Tensor]:
    """The last layer's self-attention map ``A0 [B, h, N, N]`` and values ``V [B, h, N, d]``.

    As ``Sam3Attention.forward`` with ``query = key = LN1(x) + pos`` and ``value = LN1(x)``
    (``Sam3DetrEncoderLayer.forward``), softmax in fp32.
    """
    attn = layer.self_attn
    x = layer.layer_norm1(state.hidden)
    qk = x + state.pos
    q = fsa_core.split_heads(attn.q_proj(qk), attn.num_attention_heads)
    k = fsa_core.split_heads(attn.k_proj(qk), attn.num_attention_heads)
    v = fsa_core.split_heads(attn.v_proj(x), attn.num_attention_heads)
    a0 = (q @ k.transpose(-1, -2)).mul_(attn.scaling).softmax(dim=-1, dtype=torch.float32).to(v.dtype)
    return a0, v


def last_layer_forward(layer: torch.nn.Module, state: EncoderState, text: Tensor,
                       attend_fn: Optional[AttendFn] = None) -> Tensor:
    """``Sam3DetrEncoderLayer.forward`` with an injectable self-attention; ``text`` is ``[B, L, D]``.

    ``attend_fn(a0, v)`` replaces ``A0 V`` (e.g. FSA's ensemble); ``None`` is the layer itself. Everything
    else (output projection, residuals, cross-attention to the prompt, MLP) calls the layer's own submodules.
    """
    a0, v = base_attention(layer, state)
    attended = attend_fn(a0, v) if attend_fn is not None else fsa_core.attend(a0, v)
    hidden = layer.dropout(layer.self_attn.o_proj(fsa_core.merge_heads(attended))) + state.hidden
    residual = hidden
    cross, _ = layer.cross_attn(query=layer.layer_norm2(hidden), key=text, value=text,
                                attention_mask=state.cross_mask)
    hidden = layer.dropout(cross) + residual
    return layer.dropout(layer.mlp(layer.layer_norm3(hidden))) + hidden


def original_last_layer(layer: torch.nn.Module, state: EncoderState, text: Tensor) -> Tensor:
    """The last encoder layer as transformers runs it (its own attention kernel)."""
    return layer(state.hidden, prompt_feats=text, vision_pos_encoding=state.pos,
                 prompt_cross_attn_mask=state.cross_mask)


def run_heads(model: Sam3Model, encoded: Tensor, state: EncoderState, vision: VisionFeatures, text: Tensor,
              text_mask: Tensor) -> HeadOutputs:
    """DETR decoder (with presence token), dot-product scoring and mask decoder (``Sam3Model.forward``)."""
    decoded = model.detr_decoder(vision_features=encoded, text_features=text, vision_pos_encoding=state.pos,
                                 text_mask=text_mask, spatial_shapes=state.spatial_shapes)
    queries = decoded.intermediate_hidden_states
    pred_logits = model.dot_product_scoring(decoder_hidden_states=queries[-1:], text_features=text,
                                            text_mask=text_mask).squeeze(-1)[-1]
    masks = model.mask_decoder(decoder_queries=queries[-1], backbone_features=list(vision.fpn),
                               encoder_hidden_states=encoded, prompt_features=text, prompt_mask=text_mask)
    return HeadOutputs(masks.pred_masks, pred_logits, decoded.presence_logits[-1], masks.semantic_seg)


def query_scores(out: HeadOutputs, source: str = "semantic", both_reduce: str = "mean",
                 presence_weighting: bool = True) -> Tensor:
    """Per-prompt probability maps ``[B, H, W]`` (fp32) from SAM3's outputs.

    ``semantic``: the semantic head, ``sigmoid(semantic_seg)``; ``instances``: each instance mask weighted by its
    score, ``max_m sigmoid(logit_m) sigmoid(mask_m)`` (soft form of SAM3's instance post-processing);
    ``both``: their mean or max (``both_reduce``). Times the prompt's presence probability unless disabled.
    """
    maps = []
    if source in ("semantic", "both"):
        maps.append(out.semantic_seg[:, 0].float().sigmoid())
    if source in ("instances", "both"):
        weights = out.pred_logits.float().sigmoid()[:, :, None, None]
        maps.append((out.pred_masks.float().sigmoid() * weights).amax(dim=1))
    if not maps:
        raise ValueError(f"score_source must be 'semantic', 'instances' or 'both', got '{source}'")
    if len(maps) == 1:
        scores = maps[0]
    elif both_reduce == "mean":
        scores = (maps[0] + maps[1]) / 2
    elif both_reduce == "max":
        scores = torch.maximum(maps[0], maps[1])
    else:
        raise ValueError(f"both_reduce must be 'mean' or 'max', got '{both_reduce}'")
    if presence_weighting:
        scores = scores * out.presence_logits.float().sigmoid()[:, :, None]
    return scores


def resize_for_sam3(crops: Tensor, size: int) -> Tensor:
    """Crops (already SAM3-normalised) to SAM3's square input (bilinear, as ``Sam3ImageProcessor``)."""
    if tuple(crops.shape[-2:]) == (size, size):
        return crops
    return F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=bool(max(crops.shape[-2:]) > size))

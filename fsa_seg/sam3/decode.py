"""SAM3's text-prompted forward, as Meta's reference code runs it, split so the vision backbone (and the geometry
token) run once per crop and the last DETR-encoder layer can be re-run with another attention.

Follows ``Sam3Model.forward`` (``transformers/models/sam3/modeling_sam3.py``, transformers 5.x) by calling its
submodules, with the two differences that make it the reference forward (``sam3`` package,
``Sam3Image.forward_grounding`` with an empty geometric prompt, as ``Sam3Processor.set_text_prompt`` runs it):

* the prompt is the text tokens *and* the geometry encoder's CLS token: the reference always runs its geometry
  encoder, which with no boxes or points encodes one learned CLS token that cross-attends to the image (so it
  depends on the crop, not on the prompt) and appends it after the 32 text tokens (33 prompt tokens). Sam3Model
  skips the geometry encoder without boxes. The token enters the DETR encoder's and decoder's cross-attention,
  the mean-pooled prompt of the dot-product scoring and the mask decoder's prompt cross-attention;
* presence logits are not clamped: the reference's clamp to +-10 is not in place (its result is discarded),
  Sam3Model's is. The raw logits are read from the presence head's output.

(The third difference, the ViT's LayerNorm eps, is a weight-loading matter: ``loading.use_reference_layer_norm_eps``.)
Only the last encoder layer's self-attention is re-implemented, so it can be replaced: with the attention map
explicit (``last_layer_forward``) or from ``q, k, v`` (``adapted_layer_forward``). ``tests/test_sam3_model.py``
checks the split against ``Sam3Model.forward`` and ``tests/test_sam3_parity.py`` against the reference forward
(``tools/sam3_parity.py`` at full size).
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
from . import scores

# ``(a0 [B, h, N, N], v [B, h, N, d]) -> attended values [B, h, N, d]``.
AttendFn = Callable[[Tensor, Tensor], Tensor]
# ``(q, k, v [B, h, N, d]) -> attended values [B, h, N, d]`` (no attention map needed).
QKVAttendFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class VisionFeatures:
    """FPN levels the detector uses (all but the coarsest, as in ``Sam3Model.forward``), ``[n, C, h_l, w_l]``, and
    the crop's geometry token ``[n, 1, D]`` (``None``: Sam3Model's text-only forward, without it)."""

    fpn: Tuple[Tensor, ...]
    pos: Tuple[Tensor, ...]
    geometry: Optional[Tensor] = None

    def expand(self, index: int, batch: int) -> "VisionFeatures":
        """Crop ``index`` repeated (as a view) for ``batch`` prompts."""
        geometry = None if self.geometry is None else self.geometry[index:index + 1].expand(batch, -1, -1)
        return VisionFeatures(tuple(f[index:index + 1].expand(batch, -1, -1, -1) for f in self.fpn),
                              tuple(p[index:index + 1].expand(batch, -1, -1, -1) for p in self.pos), geometry)

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
    semantic map ``[B, 1, H, W]``, boxes ``[B, M, 4]`` (xyxy, normalised to the input)."""

    pred_masks: Tensor
    pred_logits: Tensor
    presence_logits: Tensor
    semantic_seg: Tensor
    pred_boxes: Optional[Tensor] = None


def geometry_token(model: Sam3Model, fpn: Tuple[Tensor, ...], pos: Tuple[Tensor, ...]) -> Tensor:
    """The geometry encoder's output for an empty geometric prompt: its CLS token after cross-attending to each
    crop's finest detector level, ``[n, 1, D]`` (``Sam3GeometryEncoder.forward`` with zero boxes)."""
    n = fpn[-1].shape[0]
    device = fpn[-1].device
    out = model.geometry_encoder(box_embeddings=fpn[-1].new_zeros(n, 0, 4),
                                 box_mask=torch.zeros(n, 0, dtype=torch.bool, device=device),
                                 box_labels=torch.zeros(n, 0, dtype=torch.long, device=device),
                                 img_feats=fpn, img_pos_embeds=pos)
    return out.last_hidden_state


def encode_vision(model: Sam3Model, pixel_values: Tensor, with_geometry: bool = True) -> VisionFeatures:
    """ViT + FPN neck (``Sam3Model.get_vision_features``) and the geometry token, once per crop.

    ``with_geometry=False`` gives Sam3Model's text-only forward (no geometry token) instead of the reference's.
    """
    out = model.get_vision_features(pixel_values)
    fpn, pos = tuple(out.fpn_hidden_states[:-1]), tuple(out.fpn_position_encoding[:-1])
    return VisionFeatures(fpn, pos, geometry_token(model, fpn, pos) if with_geometry else None)


def prompt_features(vision: VisionFeatures, text: Tensor, text_mask: Tensor) -> Tuple[Tensor, Tensor]:
    """The prompt the detector attends to: text tokens ``[B, L, D]``, then the crop's geometry token (always
    valid), as the reference concatenates them; ``vision`` is already expanded to the ``B`` prompts."""
    if vision.geometry is None:
        return text, text_mask
    geometry = vision.geometry.to(text.dtype)
    valid = torch.ones(text_mask.shape[0], geometry.shape[1], dtype=text_mask.dtype, device=text_mask.device)
    return torch.cat([text, geometry], dim=1), torch.cat([text_mask, valid], dim=1)


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


def layer_qkv(layer: torch.nn.Module, state: EncoderState) -> Tuple[Tensor, Tensor, Tensor]:
    """The last layer's self-attention inputs ``q, k, v [B, h, N, d]`` (``Sam3DetrEncoderLayer.forward``:
    ``query = key = LN1(x) + pos``, ``value = LN1(x)``)."""
    attn = layer.self_attn
    x = layer.layer_norm1(state.hidden)
    qk = x + state.pos
    return (fsa_core.split_heads(attn.q_proj(qk), attn.num_attention_heads),
            fsa_core.split_heads(attn.k_proj(qk), attn.num_attention_heads),
            fsa_core.split_heads(attn.v_proj(x), attn.num_attention_heads))


def base_attention(layer: torch.nn.Module, state: EncoderState) -> Tuple[Tensor, Tensor]:
    """The last layer's self-attention map ``A0 [B, h, N, N]`` (materialised, softmax in fp32) and values ``V``."""
    q, k, v = layer_qkv(layer, state)
    a0 = (q @ k.transpose(-1, -2)).mul_(layer.self_attn.scaling).softmax(dim=-1, dtype=torch.float32).to(v.dtype)
    return a0, v


def _finish_layer(layer: torch.nn.Module, state: EncoderState, text: Tensor, attended: Tensor) -> Tensor:
    """The rest of ``Sam3DetrEncoderLayer.forward`` after attention: output projection, residual,
    cross-attention to the prompt, MLP (the layer's own submodules)."""
    hidden = layer.dropout(layer.self_attn.o_proj(fsa_core.merge_heads(attended))) + state.hidden
    residual = hidden
    cross, _ = layer.cross_attn(query=layer.layer_norm2(hidden), key=text, value=text,
                                attention_mask=state.cross_mask)
    hidden = layer.dropout(cross) + residual
    return layer.dropout(layer.mlp(layer.layer_norm3(hidden))) + hidden


def last_layer_forward(layer: torch.nn.Module, state: EncoderState, text: Tensor,
                       attend_fn: Optional[AttendFn] = None) -> Tensor:
    """``Sam3DetrEncoderLayer.forward`` with an injectable self-attention; ``text`` is ``[B, L, D]``.

    ``attend_fn(a0, v)`` replaces ``A0 V`` (e.g. FSA's ensemble); ``None`` is the layer itself. ``A0`` is
    materialised (``h x N x N`` per prompt); :func:`adapted_layer_forward` is the form that need not.
    """
    a0, v = base_attention(layer, state)
    attended = attend_fn(a0, v) if attend_fn is not None else fsa_core.attend(a0, v)
    return _finish_layer(layer, state, text, attended)


def adapted_layer_forward(layer: torch.nn.Module, state: EncoderState, text: Tensor,
                          attend_qkv: Optional[QKVAttendFn] = None) -> Tensor:
    """``Sam3DetrEncoderLayer.forward`` with ``attend_qkv(q, k, v)`` in place of its self-attention (default:
    SDPA with the layer's scaling, i.e. the layer itself). E.g. ``fsa_core.ensemble_attend_sdpa`` with a fixed
    ``A_fb``, or :func:`uniform_attend_qkv`."""
    q, k, v = layer_qkv(layer, state)
    if attend_qkv is None:
        attended = F.scaled_dot_product_attention(q, k, v, scale=layer.self_attn.scaling)
    else:
        attended = attend_qkv(q, k, v)
    return _finish_layer(layer, state, text, attended)


def uniform_attend_qkv(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Uniform attention (every weight ``1 / N``): each token receives the token mean of ``v`` ``[B, h, N, d]``.

    FSA's attention isolation (paper Eq. 3) scores the output of the hooked block run with this attention; with
    it in SAM3's last encoder layer the residual, cross-attention and MLP still act per token.
    """
    return fsa_core.uniform_attend(v).expand_as(v)


def original_last_layer(layer: torch.nn.Module, state: EncoderState, text: Tensor) -> Tensor:
    """The last encoder layer as transformers runs it (its own attention kernel)."""
    return layer(state.hidden, prompt_feats=text, vision_pos_encoding=state.pos,
                 prompt_cross_attn_mask=state.cross_mask)


def run_heads(model: Sam3Model, encoded: Tensor, state: EncoderState, vision: VisionFeatures, text: Tensor,
              text_mask: Tensor) -> HeadOutputs:
    """DETR decoder (with presence token), boxes, dot-product scoring and mask decoder (``Sam3Model.forward``);
    ``text`` / ``text_mask`` are the whole prompt (:func:`prompt_features`). Presence logits are the presence
    head's raw output of the last decoder layer (not clamped, as in the reference)."""
    decoder = model.detr_decoder
    raw_presence = []
    hook = decoder.presence_head.register_forward_hook(lambda _m, _i, out: raw_presence.append(out))
    try:
        decoded = decoder(vision_features=encoded, text_features=text, vision_pos_encoding=state.pos,
                          text_mask=text_mask, spatial_shapes=state.spatial_shapes)
    finally:
        hook.remove()
    queries = decoded.intermediate_hidden_states
    boxes = (modeling_sam3.inverse_sigmoid(decoded.reference_boxes[-1]) + decoder.box_head(queries[-1])).sigmoid()
    pred_logits = model.dot_product_scoring(decoder_hidden_states=queries[-1:], text_features=text,
                                            text_mask=text_mask).squeeze(-1)[-1]
    masks = model.mask_decoder(decoder_queries=queries[-1], backbone_features=list(vision.fpn),
                               encoder_hidden_states=encoded, prompt_features=text, prompt_mask=text_mask)
    return HeadOutputs(masks.pred_masks, pred_logits, raw_presence[-1].squeeze(-1), masks.semantic_seg,
                       modeling_sam3.box_cxcywh_to_xyxy(boxes))


@torch.no_grad()
def forward_prompts(model: Sam3Model, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor,
                    with_geometry: bool = True) -> HeadOutputs:
    """The whole split forward of ``Q`` tokenised prompts on one normalised image ``[1, 3, S, S]``.

    The composition the segmentor runs per crop (backbone and geometry token once, then every prompt), for parity
    checks: ``with_geometry=True`` is the reference forward, ``False`` Sam3Model's text-only one.
    """
    vision = encode_vision(model, pixel_values, with_geometry).expand(0, input_ids.shape[0])
    text = encode_text(model, input_ids, attention_mask)
    prompt, prompt_mask = prompt_features(vision, text, attention_mask.bool())
    state = encode_to_last_layer(model, vision, prompt, prompt_mask)
    encoded = original_last_layer(model.detr_encoder.layers[-1], state, prompt)
    return run_heads(model, encoded, state, vision, prompt, prompt_mask)


def query_scores(out: HeadOutputs, source: str = "semantic", both_reduce: str = "mean",
                 presence_weighting: bool = True) -> Tensor:
    """Per-prompt probability maps ``[B, H, W]`` (fp32) with the earlier recipe (:meth:`ScoreRecipe.legacy`).

    ``semantic``: ``sigmoid(semantic_seg)``; ``instances``: ``max_m sigmoid(logit_m) sigmoid(mask_m)`` over every
    instance; ``both``: their mean or max; times presence unless disabled. The SegEarth-OV-3 recipe and the
    logit output for resizing are in :mod:`fsa_seg.sam3.scores`.
    """
    return scores.probabilities(out, scores.ScoreRecipe.legacy(source, both_reduce, presence_weighting))


def resize_for_sam3(crops: Tensor, size: int) -> Tensor:
    """Crops (already SAM3-normalised) to SAM3's square input (bilinear, as ``Sam3ImageProcessor``)."""
    if tuple(crops.shape[-2:]) == (size, size):
        return crops
    return F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=bool(max(crops.shape[-2:]) > size))

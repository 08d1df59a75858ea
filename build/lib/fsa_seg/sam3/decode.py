"""SAM3's text-prompted forward, as Meta's reference code runs it, split so the vision backbone (and the geometry
token) run once per crop and any DETR-encoder layer can be re-run with another self-attention.

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
The encoder runs layer by layer (:func:`encoder_input`, :func:`run_encoder_layers`) so FSA can start from the
stored input of any layer; a layer's self-attention is re-implemented from ``q, k, v`` so it can be replaced
(:func:`adapted_layer_forward`, never materialising the ``h x N x N`` map). ``tests/test_sam3_model.py`` checks
the split against ``Sam3Model.forward`` and ``tests/test_sam3_parity.py`` against the reference forward
(``tools/sam3_parity.py`` at full size).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import Sam3Model
from transformers.models.sam3 import modeling_sam3

from .. import fsa as fsa_core

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
    """Input of a DETR-encoder layer (``hidden``), and what the layers need besides it."""

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


def encoder_input(model: Sam3Model, vision: VisionFeatures, text: Tensor, text_mask: Tensor) -> EncoderState:
    """The DETR encoder's input: the tokens of the detector level, their position encoding and the prompt
    cross-attention mask (``Sam3DetrEncoder.forward`` before its layers)."""
    encoder = model.detr_encoder
    hidden, pos, spatial_shapes = encoder._prepare_multilevel_features([vision.fpn[-1]], [vision.pos[-1]])
    # Every prompt of the batch sees the same crop: keep one copy of the position encoding.
    pos = pos[:1].clone().expand_as(pos)
    return EncoderState(hidden, pos, prompt_cross_mask(model, hidden, text, text_mask), spatial_shapes)


def prompt_cross_mask(model: Sam3Model, hidden: Tensor, text: Tensor, text_mask: Tensor) -> Optional[Tensor]:
    """The encoder's mask for its cross-attention from ``hidden [B, N, D]`` to the prompt ``text [B, L, D]``."""
    return modeling_sam3.create_bidirectional_mask(config=model.detr_encoder.config, inputs_embeds=hidden,
                                                   attention_mask=text_mask, encoder_hidden_states=text)


def run_encoder_layers(model: Sam3Model, state: EncoderState, text: Tensor, layers: range,
                       attend_qkv: Optional[QKVAttendFn] = None) -> EncoderState:
    """The encoder ``layers`` (indices, in order) from ``state``: transformers' own layers, or, with ``attend_qkv``,
    the same layers with that self-attention (:func:`adapted_layer_forward`). Returns the state after them."""
    hidden = state.hidden
    for index in layers:
        layer = model.detr_encoder.layers[index]
        current = replace(state, hidden=hidden)
        hidden = (original_layer(layer, current, text) if attend_qkv is None
                  else adapted_layer_forward(layer, current, text, attend_qkv))
    return replace(state, hidden=hidden)


def layer_qkv(layer: torch.nn.Module, state: EncoderState) -> Tuple[Tensor, Tensor, Tensor]:
    """An encoder layer's self-attention inputs ``q, k, v [B, h, N, d]`` (``Sam3DetrEncoderLayer.forward``:
    ``query = key = LN1(x) + pos``, ``value = LN1(x)``)."""
    attn = layer.self_attn
    x = layer.layer_norm1(state.hidden)
    qk = x + state.pos
    return (fsa_core.split_heads(attn.q_proj(qk), attn.num_attention_heads),
            fsa_core.split_heads(attn.k_proj(qk), attn.num_attention_heads),
            fsa_core.split_heads(attn.v_proj(x), attn.num_attention_heads))


def _finish_layer(layer: torch.nn.Module, state: EncoderState, text: Tensor, attended: Tensor) -> Tensor:
    """The rest of ``Sam3DetrEncoderLayer.forward`` after attention: output projection, residual,
    cross-attention to the prompt, MLP (the layer's own submodules)."""
    hidden = layer.dropout(layer.self_attn.o_proj(fsa_core.merge_heads(attended))) + state.hidden
    residual = hidden
    cross, _ = layer.cross_attn(query=layer.layer_norm2(hidden), key=text, value=text,
                                attention_mask=state.cross_mask)
    hidden = layer.dropout(cross) + residual
    return layer.dropout(layer.mlp(layer.layer_norm3(hidden))) + hidden


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
    it in a SAM3 encoder layer the residual, cross-attention and MLP still act per token.
    """
    return fsa_core.uniform_attend(v).expand_as(v)


def original_layer(layer: torch.nn.Module, state: EncoderState, text: Tensor) -> Tensor:
    """An encoder layer as transformers runs it (its own attention kernel)."""
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


def semantic_logits(model: Sam3Model, encoded: Tensor, vision: VisionFeatures, text: Tensor,
                    text_mask: Tensor) -> Tensor:
    """The semantic head alone, ``[B, H, W]`` logits: the mask decoder (prompt cross-attention, pixel decoder,
    semantic projection) without object queries, so without the DETR decoder. The semantic map does not depend
    on the queries (``Sam3MaskDecoder.forward``)."""
    no_queries = encoded.new_zeros(encoded.shape[0], 0, encoded.shape[-1])
    out = model.mask_decoder(decoder_queries=no_queries, backbone_features=list(vision.fpn),
                             encoder_hidden_states=encoded, prompt_features=text, prompt_mask=text_mask)
    return out.semantic_seg[:, 0]


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
    state = run_encoder_layers(model, encoder_input(model, vision, prompt, prompt_mask), prompt,
                               range(len(model.detr_encoder.layers)))
    return run_heads(model, state.hidden, state, vision, prompt, prompt_mask)


def resize_for_sam3(crops: Tensor, size: int) -> Tensor:
    """Crops (already SAM3-normalised) to SAM3's square input (bilinear, as ``Sam3ImageProcessor``)."""
    if tuple(crops.shape[-2:]) == (size, size):
        return crops
    return F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=bool(max(crops.shape[-2:]) > size))

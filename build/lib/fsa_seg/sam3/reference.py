"""Meta's reference SAM3 (the ``sam3`` package on PyPI) beside transformers' ``Sam3Model``, for parity checks.

Test-only: nothing in the segmentor imports this module, and ``sam3`` is imported inside the functions (it is a
test dependency, see ``requirements.txt``). What is here:

* :func:`official_to_hf` converts a reference state dict to ``Sam3Model`` keys. transformers has such a mapping
  in ``models/sam3/convert_sam3_to_hf.py`` of its repository, but its wheels do not ship ``convert_*`` scripts
  (transformers 5.24 has none installed), so it cannot be imported; this is our own table, derived from the two
  module trees, and checked by a strict load (every key mapped, every shape equal).
* :func:`cpu_device_mode`: the reference code hard-codes ``device="cuda"`` in factory calls (position-encoding
  and box-RPB caches built in ``__init__``); inside this mode those calls land on the CPU instead.
* :func:`build_official_full` (the reference builder itself) and :func:`build_official` (the reference modules
  assembled at any :class:`~transformers.Sam3Config` size, so a tiny model runs in the test suite).
* :func:`official_forward`: the reference text-prompted forward (``Sam3Image.forward_grounding`` with an empty
  geometric prompt, as ``Sam3Processor.set_text_prompt`` runs it) for ``Q`` prompts on one image.
* ``randomize_`` (:func:`fsa_seg.sam3.loading.randomize_parameters_`): seeded random weights at every
  parameter's shape (the reference init leaves some ``torch.empty`` and zeroes others, e.g. the last box-head
  layer, which would hide differences).
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .loading import randomize_parameters_

# Seeded random weights for the parity checks (re-exported under the name the checks use).
randomize_ = randomize_parameters_

# -- key mapping ------------------------------------------------------------------------------------------------
# (official regex, Sam3Model replacement); the first rule that matches a key wins. Names of the reference
# modules on the left, of transformers' on the right; ``{attn}`` marks an nn.MultiheadAttention whose fused
# ``in_proj_*`` is split into q/k/v and whose ``out_proj`` becomes ``o_proj`` (see ``_put``).
_VIT = r"backbone\.vision_backbone\.trunk\."
_TEXT = r"backbone\.language_backbone\.encoder\."
_DEC = r"transformer\.decoder\."
_MLP3 = {"0": "layer1", "1": "layer2", "2": "layer3"}

_RULES: List[Tuple[str, str]] = [
    # ViT backbone and FPN neck
    (_VIT + r"patch_embed\.proj\.", "vision_encoder.backbone.embeddings.patch_embeddings.projection."),
    (_VIT + r"pos_embed$", "vision_encoder.backbone.embeddings.position_embeddings"),
    (_VIT + r"ln_pre\.", "vision_encoder.backbone.layer_norm."),
    (_VIT + r"blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.backbone.layers.\1.layer_norm\2."),
    (_VIT + r"blocks\.(\d+)\.attn\.qkv\.", r"vision_encoder.backbone.layers.\1.attention.qkv."),
    (_VIT + r"blocks\.(\d+)\.attn\.proj\.", r"vision_encoder.backbone.layers.\1.attention.o_proj."),
    (_VIT + r"blocks\.(\d+)\.mlp\.", r"vision_encoder.backbone.layers.\1.mlp."),
    (r"backbone\.vision_backbone\.convs\.(\d+)\.(?:dconv_2x2|dconv_2x2_0)\.",
     r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (r"backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2_1\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.2."),
    (r"backbone\.vision_backbone\.convs\.(\d+)\.conv_1x1\.", r"vision_encoder.neck.fpn_layers.\1.proj1."),
    (r"backbone\.vision_backbone\.convs\.(\d+)\.conv_3x3\.", r"vision_encoder.neck.fpn_layers.\1.proj2."),
    # CLIP text encoder, and the resizer to the detector width
    (_TEXT + r"token_embedding\.", "text_encoder.text_model.embeddings.token_embedding."),
    (_TEXT + r"positional_embedding$", "text_encoder.text_model.embeddings.position_embedding.weight"),
    (_TEXT + r"ln_final\.", "text_encoder.text_model.final_layer_norm."),
    (_TEXT + r"text_projection$", "text_encoder.text_projection.weight"),
    (_TEXT + r"transformer\.resblocks\.(\d+)\.attn\.", r"text_encoder.text_model.encoder.layers.\1.self_attn.{clip}"),
    (_TEXT + r"transformer\.resblocks\.(\d+)\.ln_(\d)\.", r"text_encoder.text_model.encoder.layers.\1.layer_norm\2."),
    (_TEXT + r"transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"text_encoder.text_model.encoder.layers.\1.mlp.fc1."),
    (_TEXT + r"transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"text_encoder.text_model.encoder.layers.\1.mlp.fc2."),
    (r"backbone\.language_backbone\.resizer\.", "text_projection."),
    # geometry encoder (point prompts have no counterpart in Sam3Model: dropped)
    (r"geometry_encoder\.points_", None),
    (r"geometry_encoder\.encode\.(\d+)\.self_attn\.", r"geometry_encoder.layers.\1.self_attn.{attn}"),
    (r"geometry_encoder\.encode\.(\d+)\.cross_attn_image\.", r"geometry_encoder.layers.\1.cross_attn.{attn}"),
    (r"geometry_encoder\.encode\.(\d+)\.linear(\d)\.", r"geometry_encoder.layers.\1.mlp.fc\2."),
    (r"geometry_encoder\.encode\.(\d+)\.norm(\d)\.", r"geometry_encoder.layers.\1.layer_norm\2."),
    (r"geometry_encoder\.img_pre_norm\.", "geometry_encoder.vision_layer_norm."),
    (r"geometry_encoder\.norm\.", "geometry_encoder.prompt_layer_norm."),
    (r"geometry_encoder\.encode_norm\.", "geometry_encoder.output_layer_norm."),
    (r"geometry_encoder\.", "geometry_encoder."),
    # DETR encoder
    (r"transformer\.encoder\.layers\.(\d+)\.self_attn\.", r"detr_encoder.layers.\1.self_attn.{attn}"),
    (r"transformer\.encoder\.layers\.(\d+)\.cross_attn_image\.", r"detr_encoder.layers.\1.cross_attn.{attn}"),
    (r"transformer\.encoder\.layers\.(\d+)\.linear(\d)\.", r"detr_encoder.layers.\1.mlp.fc\2."),
    (r"transformer\.encoder\.layers\.(\d+)\.norm(\d)\.", r"detr_encoder.layers.\1.layer_norm\2."),
    # DETR decoder
    (_DEC + r"layers\.(\d+)\.self_attn\.", r"detr_decoder.layers.\1.self_attn.{attn}"),
    (_DEC + r"layers\.(\d+)\.ca_text\.", r"detr_decoder.layers.\1.text_cross_attn.{attn}"),
    (_DEC + r"layers\.(\d+)\.cross_attn\.", r"detr_decoder.layers.\1.vision_cross_attn.{attn}"),
    (_DEC + r"layers\.(\d+)\.linear(\d)\.", r"detr_decoder.layers.\1.mlp.fc\2."),
    (_DEC + r"layers\.(\d+)\.norm1\.", r"detr_decoder.layers.\1.vision_cross_attn_layer_norm."),
    (_DEC + r"layers\.(\d+)\.catext_norm\.", r"detr_decoder.layers.\1.text_cross_attn_layer_norm."),
    (_DEC + r"layers\.(\d+)\.norm2\.", r"detr_decoder.layers.\1.self_attn_layer_norm."),
    (_DEC + r"layers\.(\d+)\.norm3\.", r"detr_decoder.layers.\1.mlp_layer_norm."),
    (_DEC + r"bbox_embed\.layers\.(\d)\.", "detr_decoder.box_head.{mlp}."),
    (_DEC + r"ref_point_head\.layers\.(\d)\.", "detr_decoder.ref_point_head.{mlp}."),
    (_DEC + r"boxRPB_embed_x\.layers\.(\d)\.", "detr_decoder.box_rpb_embed_x.{mlp}."),
    (_DEC + r"boxRPB_embed_y\.layers\.(\d)\.", "detr_decoder.box_rpb_embed_y.{mlp}."),
    (_DEC + r"presence_token_head\.layers\.(\d)\.", "detr_decoder.presence_head.{mlp}."),
    (_DEC + r"presence_token_out_norm\.", "detr_decoder.presence_layer_norm."),
    (_DEC + r"norm\.", "detr_decoder.output_layer_norm."),
    (_DEC + r"(query_embed|reference_points|presence_token)\.", r"detr_decoder.\1."),
    # dot-product scoring
    (r"dot_prod_scoring\.prompt_mlp\.layers\.(\d)\.", "dot_product_scoring.text_mlp.{mlp}."),
    (r"dot_prod_scoring\.prompt_mlp\.out_norm\.", "dot_product_scoring.text_mlp_out_norm."),
    (r"dot_prod_scoring\.prompt_proj\.", "dot_product_scoring.text_proj."),
    (r"dot_prod_scoring\.hs_proj\.", "dot_product_scoring.query_proj."),
    # segmentation head
    (r"segmentation_head\.pixel_decoder\.", "mask_decoder.pixel_decoder."),
    (r"segmentation_head\.mask_predictor\.mask_embed\.layers\.", "mask_decoder.mask_embedder.layers."),
    (r"segmentation_head\.instance_seg_head\.", "mask_decoder.instance_projection."),
    (r"segmentation_head\.semantic_seg_head\.", "mask_decoder.semantic_projection."),
    (r"segmentation_head\.cross_attend_prompt\.", "mask_decoder.prompt_cross_attn.{attn}"),
    (r"segmentation_head\.cross_attn_norm\.", "mask_decoder.prompt_cross_attn_norm."),
]
_COMPILED = [(re.compile("^" + pattern), target) for pattern, target in _RULES]
# Reference buffers with no Sam3Model counterpart (recomputed there): the ViT's RoPE tables.
_DROPPED_SUFFIXES = (".attn.freqs_cis",)


def _rename(key: str) -> Optional[str]:
    """The Sam3Model name of one reference key (``None``: no counterpart); raises on an unknown key."""
    if key.endswith(_DROPPED_SUFFIXES):
        return None
    for pattern, target in _COMPILED:
        match = pattern.match(key)
        if match is None:
            continue
        if target is None:
            return None
        rest = key[match.end():]
        if "{mlp}" in target:  # reference MLP layers.i -> layer{i+1}; the index is the last group
            return match.expand(target.replace("{mlp}", _MLP3[match.group(match.re.groups)])) + rest
        return match.expand(target) + rest
    raise KeyError(f"no Sam3Model counterpart known for the reference SAM3 key '{key}'")


def _split_qkv(prefix: str, suffix: str, value: Tensor, out: Dict[str, Tensor]) -> None:
    """A fused projection (rows stacked q, k, v) as ``{prefix}{q,k,v}_proj.{suffix}``."""
    for proj, part in zip("qkv", value.chunk(3, dim=0)):
        out[f"{prefix}{proj}_proj.{suffix}"] = part


def _put(name: str, value: Tensor, out: Dict[str, Tensor]) -> None:
    """Store one renamed entry; attention modules (``{attn}`` / ``{clip}`` marks, the ViT's ``qkv``) are split."""
    mark = re.search(r"\{(attn|clip)\}", name)
    if mark is not None:
        module, param = name[:mark.start()], name[mark.end():]
        if param.startswith("in_proj_"):
            _split_qkv(module, param[len("in_proj_"):], value, out)
        elif param.startswith("out_proj."):
            # nn.MultiheadAttention's out_proj is Sam3Attention's o_proj; CLIP's keeps the name out_proj
            out[module + ("out_proj." if mark.group(1) == "clip" else "o_proj.") + param[len("out_proj."):]] = value
        else:
            raise KeyError(f"unexpected attention parameter '{name}'")
    elif ".attention.qkv." in name:
        module, suffix = name.split("qkv.")
        _split_qkv(module, suffix, value, out)
    else:
        out[name] = value


def official_to_hf(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """A reference SAM3 detector state dict (``Sam3Image``, keys without ``detector.``) in ``Sam3Model`` keys.

    Besides renaming: fused q/k/v projections are split, the ViT's absolute position embedding loses its
    (unused) CLS row, and CLIP's text projection, stored ``[width, out]`` in the reference, is transposed.
    """
    out: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        name = _rename(key)
        if name is None:
            continue
        if name == "vision_encoder.backbone.embeddings.position_embeddings":
            value = value[:, 1:]
        elif name == "text_encoder.text_projection.weight":
            value = value.t()
        _put(name, value, out)
    return out


def load_into_hf(hf_model: torch.nn.Module, official_state: Mapping[str, Tensor]) -> None:
    """Load a reference state dict into ``Sam3Model`` strictly: every key present, every shape equal."""
    converted = official_to_hf(official_state)
    expected = hf_model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted) if expected[k].shape != converted[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"reference -> Sam3Model mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"shape {[(k, tuple(converted[k].shape), tuple(expected[k].shape)) for k in wrong[:5]]}")
    hf_model.load_state_dict(converted, strict=True)


# -- building the reference on the CPU ---------------------------------------------------------------------------
class cpu_device_mode(TorchFunctionMode):  # noqa: N801 (used as a context manager, like torch's modes)
    """Rewrites ``device='cuda'`` in torch calls to the CPU (the reference hard-codes it in a few factories), and
    makes ``Tensor.pin_memory`` (needs a CUDA driver; the box encoder calls it) a no-op without CUDA."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.pin_memory and not torch.cuda.is_available():
            return args[0]
        kwargs = dict(kwargs or {})
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def clip_bpe_path() -> str:
    """open_clip's copy of CLIP's BPE vocabulary (the reference package looks for one it does not ship)."""
    import open_clip

    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"open_clip's BPE vocabulary not found at {path}")
    return path


def build_official_full() -> torch.nn.Module:
    """The reference image model at its real size (840.5M parameters), random init, eval mode, on the CPU."""
    from sam3.model_builder import build_sam3_image_model

    with cpu_device_mode():
        model = build_sam3_image_model(bpe_path=clip_bpe_path(), device="cpu", checkpoint_path=None,
                                       load_from_HF=False)
    return model.eval()


def build_official(config) -> torch.nn.Module:
    """The reference image model assembled from its own modules at the sizes of a ``Sam3Config``.

    Same module choices and options as ``sam3.model_builder.build_sam3_image_model`` (which fixes the sizes);
    ``tools/sam3_parity.py`` checks that at the default (full) config both give the same module tree and
    parameter shapes, and ``tests/test_sam3_parity.py`` runs this at the tiny test size.
    The reference fixes a few sizes the config must follow: CLIP's text MLP ratio 4 and its output projection
    512, and 8 groups in the pixel decoder's GroupNorm.
    """
    from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
    from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
    from sam3.model.model_misc import MLP, DotProductScoring, MultiheadAttentionWrapper, TransformerWrapper
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer
    from sam3.model.vitdet import ViT
    from sam3.model.vl_combiner import SAM3VLBackbone

    vit_cfg = config.vision_config.backbone_config
    text_cfg = config.text_config
    geo_cfg, enc_cfg = config.geometry_encoder_config, config.detr_encoder_config
    dec_cfg, mask_cfg = config.detr_decoder_config, config.mask_decoder_config
    d_model = enc_cfg.hidden_size
    if text_cfg.intermediate_size != 4 * text_cfg.hidden_size or text_cfg.projection_dim != 512:
        raise ValueError("the reference text encoder fixes intermediate_size = 4 x hidden_size and projection 512")
    image_size, patch = int(vit_cfg.image_size), int(vit_cfg.patch_size)

    def attention(heads: int, dim: int, batch_first: bool = False) -> torch.nn.Module:
        return MultiheadAttentionWrapper(num_heads=heads, dropout=0.1, embed_dim=dim, batch_first=batch_first)

    with cpu_device_mode():
        vit = ViT(img_size=image_size, pretrain_img_size=int(vit_cfg.pretrain_image_size), patch_size=patch,
                  embed_dim=vit_cfg.hidden_size, depth=vit_cfg.num_hidden_layers,
                  num_heads=vit_cfg.num_attention_heads, mlp_ratio=vit_cfg.intermediate_size / vit_cfg.hidden_size,
                  norm_layer="LayerNorm", drop_path_rate=0.1, qkv_bias=True, use_abs_pos=True, tile_abs_pos=True,
                  global_att_blocks=tuple(vit_cfg.global_attn_indexes), rel_pos_blocks=(), use_rope=True,
                  use_interp_rope=True, window_size=vit_cfg.window_size, pretrain_use_cls_token=True,
                  retain_cls_token=False, ln_pre=True, ln_post=False, return_interm_layers=False,
                  bias_patch_embed=False)
        position = PositionEmbeddingSine(num_pos_feats=config.vision_config.fpn_hidden_size, normalize=True,
                                         precompute_resolution=image_size)
        neck = Sam3DualViTDetNeck(trunk=vit, position_encoding=position, d_model=config.vision_config.fpn_hidden_size,
                                  scale_factors=list(config.vision_config.scale_factors), add_sam2_neck=False)
        text = VETextEncoder(d_model=d_model, tokenizer=SimpleTokenizer(bpe_path=clip_bpe_path()),
                             width=text_cfg.hidden_size, heads=text_cfg.num_attention_heads,
                             layers=text_cfg.num_hidden_layers, context_length=text_cfg.max_position_embeddings)
        backbone = SAM3VLBackbone(visual=neck, text=text, scalp=1)

        encoder_layer = TransformerEncoderLayer(
            activation="relu", d_model=d_model, dim_feedforward=enc_cfg.intermediate_size, dropout=0.1,
            pos_enc_at_attn=True, pos_enc_at_cross_attn_keys=False, pos_enc_at_cross_attn_queries=False,
            pre_norm=True, self_attention=attention(enc_cfg.num_attention_heads, d_model, True),
            cross_attention=attention(enc_cfg.num_attention_heads, d_model, True))
        encoder = TransformerEncoderFusion(layer=encoder_layer, num_layers=enc_cfg.num_layers, d_model=d_model,
                                           num_feature_levels=1, frozen=False, use_act_checkpoint=False,
                                           add_pooled_text_to_img_feat=False, pool_text_with_mask=True)
        decoder_layer = TransformerDecoderLayer(
            activation="relu", d_model=d_model, dim_feedforward=dec_cfg.intermediate_size, dropout=0.1,
            cross_attention=attention(dec_cfg.num_attention_heads, d_model), n_heads=dec_cfg.num_attention_heads,
            use_text_cross_attention=True)
        decoder = TransformerDecoder(
            layer=decoder_layer, num_layers=dec_cfg.num_layers, num_queries=dec_cfg.num_queries,
            return_intermediate=True, box_refine=True, num_o2m_queries=0, dac=True, boxRPB="log", d_model=d_model,
            frozen=False, interaction_layer=None, dac_use_selfatt_ln=True, resolution=image_size, stride=patch,
            use_act_checkpoint=False, presence_token=True)
        transformer = TransformerWrapper(encoder=encoder, decoder=decoder, d_model=d_model)

        prompt_mlp = MLP(input_dim=d_model, hidden_dim=dec_cfg.intermediate_size, output_dim=d_model, num_layers=2,
                         dropout=0.1, residual=True, out_norm=torch.nn.LayerNorm(d_model))
        scoring = DotProductScoring(d_model=d_model, d_proj=d_model, prompt_mlp=prompt_mlp)
        segmentation = UniversalSegmentationHead(
            hidden_dim=mask_cfg.hidden_size, upsampling_stages=mask_cfg.num_upsampling_stages, aux_masks=False,
            presence_head=False, dot_product_scorer=None, act_ckpt=False,
            cross_attend_prompt=MultiheadAttentionWrapper(num_heads=mask_cfg.num_attention_heads, dropout=0,
                                                          embed_dim=mask_cfg.hidden_size),
            pixel_decoder=PixelDecoder(num_upsampling_stages=mask_cfg.num_upsampling_stages,
                                       interpolation_mode="nearest", hidden_dim=mask_cfg.hidden_size))
        geo_layer = TransformerEncoderLayer(
            activation="relu", d_model=geo_cfg.hidden_size, dim_feedforward=geo_cfg.intermediate_size, dropout=0.1,
            pos_enc_at_attn=False, pre_norm=True, pos_enc_at_cross_attn_queries=False,
            pos_enc_at_cross_attn_keys=True,
            self_attention=attention(geo_cfg.num_attention_heads, geo_cfg.hidden_size),
            cross_attention=attention(geo_cfg.num_attention_heads, geo_cfg.hidden_size))
        geometry = SequenceGeometryEncoder(
            pos_enc=PositionEmbeddingSine(num_pos_feats=geo_cfg.hidden_size, normalize=True),
            encode_boxes_as_points=False, points_direct_project=True, points_pool=True, points_pos_enc=True,
            boxes_direct_project=True, boxes_pool=True, boxes_pos_enc=True, d_model=geo_cfg.hidden_size,
            num_layers=geo_cfg.num_layers, layer=geo_layer, use_act_ckpt=False, add_cls=True,
            add_post_encode_proj=True, roi_size=geo_cfg.roi_size)
        model = Sam3Image(backbone=backbone, transformer=transformer, input_geometry_encoder=geometry,
                          segmentation_head=segmentation, num_feature_levels=1, o2m_mask_predict=True,
                          dot_prod_scoring=scoring, use_instance_query=False, multimask_output=True,
                          inst_interactive_predictor=None, matcher=None)
    return model.eval()


# -- the reference forward ---------------------------------------------------------------------------------------
@torch.no_grad()
def official_forward(model: torch.nn.Module, pixel_values: Tensor, prompts: List[str]) -> Dict[str, Tensor]:
    """The reference text-prompted forward of ``prompts`` on one normalised image ``[1, 3, S, S]``.

    As ``Sam3Processor.set_image`` + ``set_text_prompt`` (backbone once, then ``forward_grounding`` with an empty
    geometric prompt), all prompts in one batch. Returns, per prompt: ``pred_logits [Q, M]``, ``pred_boxes``
    (xyxy, normalised) ``[Q, M, 4]``, ``pred_masks [Q, M, h, w]``, ``semantic_seg [Q, 1, h, w]``,
    ``presence_logits [Q, 1]`` and the ``prompt`` the encoder saw ``[Q, L + 1, D]`` (text tokens, then the
    geometry token).
    """
    from sam3.model.data_misc import FindStage

    num = len(prompts)
    with cpu_device_mode():
        backbone_out = model.backbone.forward_image(pixel_values)
        backbone_out.update(model.backbone.forward_text(prompts, device=pixel_values.device))
        find = FindStage(img_ids=torch.zeros(num, dtype=torch.long), text_ids=torch.arange(num),
                         input_boxes=None, input_boxes_mask=None, input_boxes_label=None, input_points=None,
                         input_points_mask=None)
        out = model.forward_grounding(backbone_out=backbone_out, find_input=find, find_target=None,
                                      geometric_prompt=model._get_dummy_prompt(num))
    prompt = out["prev_encoder_out"]["encoder_out"]["prompt_before_enc"]
    return dict(pred_logits=out["pred_logits"][..., 0], pred_boxes=out["pred_boxes_xyxy"],
                pred_masks=out["pred_masks"], semantic_seg=out["semantic_seg"],
                presence_logits=out["presence_logit_dec"].reshape(num, 1), prompt=prompt.transpose(0, 1))


def official_tokens(model: torch.nn.Module, prompts: List[str]) -> Tensor:
    """The reference tokenizer's ids ``[Q, L]`` of ``prompts`` (to check ours gives the same)."""
    encoder = model.backbone.language_backbone
    return encoder.tokenizer(prompts, context_length=encoder.context_length)


PARITY_KEYS = ("pred_logits", "pred_boxes", "pred_masks", "semantic_seg", "presence_logits")


def parity_metrics(ours, ref: Mapping[str, Tensor]) -> Dict[str, Dict[str, float]]:
    """Per output (``PARITY_KEYS``): max abs diff, max abs of the reference, their ratio and the cosine, fp64.

    ``ours`` is a :class:`~fsa_seg.sam3.decode.HeadOutputs` (or anything with those attributes).
    """
    metrics = {}
    for key in PARITY_KEYS:
        a, b = getattr(ours, key).double(), ref[key].double()
        if a.shape != b.shape:
            raise ValueError(f"{key}: shape {tuple(a.shape)} vs reference {tuple(b.shape)}")
        diff = (a - b).abs().max().item()
        scale = b.abs().max().item()
        cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
        metrics[key] = dict(max_abs_diff=diff, ref_max_abs=scale, rel=diff / max(scale, 1e-30), cosine=cosine)
    return metrics

"""Building SAM3 (``transformers.Sam3Model``) and its tokenizer: hub id, local folder or random weights.

A missing, gated or offline checkpoint raises :class:`~fsa_seg.weights.WeightsUnavailableError` that says
how to get access, instead of a network traceback.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, List, Mapping, Optional, Tuple

import torch
from torch import Tensor
from transformers import Sam3Config, Sam3Model

from ..weights import WeightsUnavailableError, hub_offline, missing_weights, warn_random_weights

HUB_ID = "facebook/sam3"
# SAM3's processor pads every prompt to 32 tokens (transformers processing_sam3.py, Sam3Processor.__call__).
TEXT_LENGTH = 32

# Tokenizes a list of prompts into ``(input_ids [Q, L], attention_mask [Q, L])``.
Tokenizer = Callable[[List[str]], Tuple[Tensor, Tensor]]


def tiny_sam3_config() -> dict:
    """A SAM3 small enough for CPU tests (112 x 112 input, 8 x 8 detector tokens, width 32).

    Same architecture as ``facebook/sam3`` (ViT + FPN neck, CLIP text encoder with the CLIP BPE vocabulary,
    DETR encoder/decoder, mask decoder, presence head), every part shrunk.
    """
    width, heads, ffn = 32, 2, 64
    return dict(
        vision_config=dict(
            backbone_config=dict(model_type="sam3_vit_model", hidden_size=width, intermediate_size=ffn,
                                 num_hidden_layers=2, num_attention_heads=heads, image_size=112, patch_size=14,
                                 window_size=4, global_attn_indexes=[1], pretrain_image_size=56),
            fpn_hidden_size=width, backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]]),
        # The reference text encoder fixes CLIP's MLP ratio (4) and output projection (512): kept so the official
        # modules can be built at this size too (fsa_seg/sam3/reference.py).
        text_config=dict(hidden_size=width, intermediate_size=4 * width, projection_dim=512, num_hidden_layers=1,
                         num_attention_heads=heads, max_position_embeddings=TEXT_LENGTH, hidden_act="gelu"),
        geometry_encoder_config=dict(hidden_size=width, num_layers=1, num_attention_heads=heads,
                                     intermediate_size=ffn),
        detr_encoder_config=dict(hidden_size=width, num_layers=2, num_attention_heads=heads, intermediate_size=ffn),
        detr_decoder_config=dict(hidden_size=width, num_layers=2, num_attention_heads=heads, intermediate_size=ffn,
                                 num_queries=10),
        mask_decoder_config=dict(hidden_size=width, num_attention_heads=heads),
    )


@torch.no_grad()
def randomize_parameters_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Seeded random values in every parameter, in place: weights ``N(0, 1 / fan_in)``, 1-D scales (norm
    weights) ``1 + N(0, 0.1^2)``, biases ``N(0, 0.1^2)``.

    For checks on random weights: activations stay O(1) through the depth and no term of the forward is zero
    (transformers' init, N(0, 0.02^2), leaves a tiny SAM3's per-prompt maps within 1e-4 of each other; the
    reference's leaves some tensors uninitialised and zeroes others).
    """
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float64)
        if param.dim() >= 2:
            value = noise / (param[0].numel() ** 0.5)
        elif name.endswith("bias"):
            value = 0.1 * noise
        else:
            value = 1.0 + 0.1 * noise
        param.copy_(value.to(param.dtype))
    return model


def _access_hint(checkpoint: str) -> str:
    return (f"SAM3 weights are gated on the Hugging Face hub: accept the licence at "
            f"https://huggingface.co/{HUB_ID}, then log in once with network access (`huggingface-cli login`, "
            f"or set HF_TOKEN) and run again to download them into the HF cache; or download the repository "
            f"(`huggingface-cli download {HUB_ID} --local-dir /path/to/sam3`) and pass the local folder "
            f"(--cfg-options model.checkpoint=/path/to/sam3). Checkpoint given: '{checkpoint}'.")


def _looks_local(checkpoint: str) -> bool:
    """A path, not a hub id (``owner/name``): absolute, relative with ./ or ../, ~, or more than one '/'."""
    return (checkpoint.startswith((os.sep, ".", "~")) or checkpoint.count("/") > 1
            or (os.sep != "/" and os.sep in checkpoint))


def resolve_checkpoint(checkpoint: str) -> str:
    """The local folder (expanded) or the hub id; a local path that is not a folder raises."""
    expanded = os.path.expanduser(os.path.expandvars(checkpoint))
    if os.path.isdir(expanded):
        return expanded
    if _looks_local(checkpoint):
        raise missing_weights("SAM3", f"the local folder '{checkpoint}' (not found)", _access_hint(checkpoint))
    return checkpoint


def load_pretrained(checkpoint: str, dtype: torch.dtype) -> Sam3Model:
    """``Sam3Model.from_pretrained`` with readable errors for offline, gated and missing checkpoints."""
    source = resolve_checkpoint(checkpoint)
    if not os.path.isdir(source):
        hub_offline()  # offline: fail at once from the cache, not after minutes of download retries
    try:
        return Sam3Model.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as err:
        text = str(err).lower()
        if "gated" in text or "401" in text or "403" in text:
            looked_for = f"the gated hub repo '{source}' (access denied)"
        elif os.path.isdir(source):
            looked_for = f"SAM3 weights in the local folder '{source}'"
        else:
            looked_for = f"the hub repo '{source}' (not in the HF cache and not downloadable: offline?)"
        raise missing_weights("SAM3", looked_for, _access_hint(checkpoint), err) from err


# The reference ViT builds its LayerNorms with eps 1e-5 (sam3/model/vitdet.py: norm_layer "LayerNorm" ->
# partial(nn.LayerNorm, eps=1e-5)); Sam3ViTConfig defaults to 1e-6, which moves full-size outputs measurably
# (tools/sam3_parity.py). Every other LayerNorm of Sam3Model already uses torch's default 1e-5.
REFERENCE_VIT_LAYER_NORM_EPS = 1e-5


def use_reference_layer_norm_eps(model: Sam3Model, eps: float = REFERENCE_VIT_LAYER_NORM_EPS) -> Sam3Model:
    """Set the ViT backbone's LayerNorm eps (config and modules) to the reference's (or ``eps``), in place."""
    model.config.vision_config.backbone_config.layer_norm_eps = eps
    for module in model.vision_encoder.backbone.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = eps
    return model


def build_sam3(checkpoint: Optional[str] = HUB_ID, random_weights: bool = False,
               sam3_config: Optional[Mapping] = None, dtype: torch.dtype = torch.float32) -> Sam3Model:
    """SAM3 in eval mode: pretrained from ``checkpoint``, or random with ``sam3_config`` (default tiny).

    ``sam3_config=dict()`` gives SAM3's full architecture with random weights (timing runs). Either way the ViT's
    LayerNorm eps is the reference's (:func:`use_reference_layer_norm_eps`).
    """
    if random_weights:
        cfg = Sam3Config(**dict(tiny_sam3_config() if sam3_config is None else sam3_config))
        warn_random_weights(f"SAM3 ({'tiny test config' if sam3_config is None else 'given Sam3Config'})")
        model = Sam3Model(cfg).to(dtype)
    else:
        if sam3_config is not None:
            raise ValueError("sam3_config only applies with random_weights=True (a checkpoint brings its own)")
        if not checkpoint:
            raise WeightsUnavailableError(f"model.checkpoint is empty. {_access_hint(str(checkpoint))}")
        model = load_pretrained(checkpoint, dtype)
    return use_reference_layer_norm_eps(model).eval().requires_grad_(False)


def _clip_bpe_tokenizer(length: int) -> Tokenizer:
    """open_clip's CLIP BPE tokenizer (vocabulary shipped with open_clip, no download)."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(context_length=length)

    def tokenize(texts: List[str]) -> Tuple[Tensor, Tensor]:
        ids = tok(texts)
        return ids, (ids != 0).long()  # SimpleTokenizer pads with 0 after <end_of_text>

    return tokenize


def build_tokenizer(checkpoint: Optional[str], random_weights: bool, length: int = TEXT_LENGTH) -> Tokenizer:
    """The checkpoint's tokenizer (CLIP BPE, padded to 32 as Sam3Processor does).

    Random weights, or a checkpoint folder without tokenizer files, use open_clip's copy of the same CLIP BPE
    vocabulary: SAM3's text encoder is CLIP's, so the token ids of a prompt are the same.
    """
    if random_weights or not checkpoint:
        return _clip_bpe_tokenizer(length)
    from transformers import AutoTokenizer

    try:
        hf_tok = AutoTokenizer.from_pretrained(resolve_checkpoint(checkpoint))
    except (OSError, ValueError) as err:
        warnings.warn(f"no tokenizer in '{checkpoint}' ({type(err).__name__}); using open_clip's CLIP BPE "
                      f"tokenizer (same vocabulary)")
        return _clip_bpe_tokenizer(length)

    def tokenize(texts: List[str]) -> Tuple[Tensor, Tensor]:
        out = hf_tok(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        return out["input_ids"], out["attention_mask"]

    return tokenize

"""The CLIP side: an open_clip model run up to its last block, its text embeddings, and its output head.

No fork of open_clip: the model comes from ``open_clip.create_model`` and this module only reaches into
``model.visual`` (patch embedding, positional embedding, the blocks, ``ln_post``, ``proj``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resources import MODEL_CONFIG_DIR
from .weights import WeightsUnavailableError, check_file, hub_offline, missing_weights, warn_random_weights

# The paper's backbones (open_clip name -> pretrained tag).
PAPER_CLIP_MODELS = {"ViT-B-16": "openai", "ViT-L-14": "openai", "ViT-H-14": "laion2b_s32b_b79k"}

# A tiny architecture ('tiny-ViT-16', random weights only) for fast pipeline checks and tests.
open_clip.add_model_config(MODEL_CONFIG_DIR)


def _clip_download_hint(model_name: str, pretrained: str) -> Tuple[str, str]:
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
    sources = [s for s in (cfg.get("hf_hub") and f"the HF hub repo '{cfg['hf_hub'].rstrip('/')}'",
                           cfg.get("url") and f"the URL {cfg['url']}") if s]
    looked_for = " or ".join(sources) or f"open_clip's pretrained tag '{pretrained}'"
    how = (f"Run once with network access (python -c \"import open_clip; open_clip.create_model('{model_name}', "
           f"pretrained='{pretrained}')\") to fill the cache, or download the checkpoint and pass "
           f"--cfg-options model.clip_checkpoint=/path/to/file.")
    return looked_for + " (cached under ~/.cache/huggingface or ~/.cache/clip)", how


def create_clip(model_name: str = "ViT-B-16", pretrained: Optional[str] = "openai",
                checkpoint: Optional[str] = None, random_weights: bool = False) -> nn.Module:
    """Build an open_clip model: from a local ``checkpoint`` file, a ``pretrained`` tag, or random weights."""
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model '{model_name}'; the paper uses {sorted(PAPER_CLIP_MODELS)} "
                         f"(see open_clip.list_models() for all)")
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    # OpenAI weights were trained with QuickGELU; keep the architecture of the tag even without its weights.
    quick_gelu = bool((tag_cfg or {}).get("quick_gelu", False))
    what = f"CLIP {model_name} ({checkpoint or pretrained})"
    if random_weights:
        warn_random_weights(f"CLIP {model_name}")
        return open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu).eval()
    if checkpoint:
        path = check_file(checkpoint, what, "Pass an existing file with model.clip_checkpoint.")
        try:
            return open_clip.create_model(model_name, pretrained=path, force_quick_gelu=quick_gelu).eval()
        except (RuntimeError, KeyError, ValueError, AssertionError) as err:  # open_clip asserts on some shapes
            raise WeightsUnavailableError(
                f"the checkpoint '{checkpoint}' does not match CLIP {model_name}: {str(err).splitlines()[0]}. "
                f"Check model.clip_model / model.clip_checkpoint.") from err
    if not pretrained:
        raise ValueError("model.clip_pretrained or model.clip_checkpoint is required (or random_weights=True)")
    if not tag_cfg:
        tags = [t for m, t in open_clip.list_pretrained() if m == model_name]
        raise ValueError(f"open_clip has no pretrained tag '{pretrained}' for {model_name}; known tags: {tags}")
    hub_offline()  # offline: fail at once from the cache, not after minutes of download retries
    try:
        return open_clip.create_model(model_name, pretrained=pretrained).eval()
    except (OSError, FileNotFoundError, RuntimeError, ValueError) as err:
        looked_for, how = _clip_download_hint(model_name, pretrained)
        raise missing_weights(what, looked_for, how, err) from err


def interpolate_pos_embed(pos_embed: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Resize ``[1 + n*n, D]`` positional embeddings to a ``grid`` of patches.

    Bicubic with ``scale_factor = (g + 0.1) / n``, as in the DINO/SCLIP/ProxyCLIP/FSA code, so the same
    weights give the same numbers as those implementations.
    """
    n_old = pos_embed.shape[0] - 1
    if n_old == grid[0] * grid[1] and grid[0] == grid[1]:
        return pos_embed
    side = int(math.sqrt(n_old))
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    patch_pos = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos.float(), scale_factor=((grid[0] + 0.1) / side, (grid[1] + 0.1) / side),
                              mode="bicubic")
    assert tuple(patch_pos.shape[-2:]) == tuple(grid), (patch_pos.shape, grid)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos], dim=0)


class CLIPBackbone(nn.Module):
    """An open_clip ViT run up to (not through) its last block, plus its text side and output head."""

    def __init__(self, clip: nn.Module, tokenizer) -> None:
        super().__init__()
        visual = clip.visual
        if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
            raise ValueError(f"{type(visual).__name__} is not an open_clip VisionTransformer (ResNet/timm towers "
                             "have no last attention block to adapt)")
        last = visual.transformer.resblocks[-1]
        if not isinstance(getattr(last, "attn", None), nn.MultiheadAttention):
            raise ValueError("the last block of this CLIP tower does not use nn.MultiheadAttention")
        self.clip = clip
        self.tokenizer = tokenizer

    @property
    def visual(self) -> nn.Module:
        return self.clip.visual

    @property
    def last_block(self) -> nn.Module:
        return self.visual.transformer.resblocks[-1]

    @property
    def patch_size(self) -> Tuple[int, int]:
        ps = self.visual.conv1.kernel_size
        return (ps, ps) if isinstance(ps, int) else tuple(ps)

    def forward_to_last_block(self, img: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Tokens ``[B, 1 + h*w, D]`` entering the last block (batch-first), and the patch grid ``(h, w)``."""
        visual = self.visual
        x = visual.conv1(img.to(visual.conv1.weight.dtype))
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + interpolate_pos_embed(visual.positional_embedding, grid).to(x.dtype)
        x = visual.ln_pre(visual.patch_dropout(x))
        batch_first = getattr(visual.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        if not batch_first:
            x = x.transpose(0, 1)
        return x, grid

    def project(self, tokens: Tensor) -> Tensor:
        """``ln_post`` then ``proj``: tokens ``[B, N, D]`` into the joint embedding space, L2-normalised."""
        x = self.visual.ln_post(tokens) @ self.visual.proj
        return F.normalize(x, dim=-1)

    @torch.no_grad()
    def encode_text(self, queries: Sequence[str], templates: Sequence, batch_size: int = 256,
                    progress: Optional[Callable[[str], None]] = None) -> Tensor:
        """Prompt-ensembled, L2-normalised text embeddings ``[Q, E]`` (mean over normalised templates);
        ``progress(query)`` (optional) after each query."""
        if not queries:
            raise ValueError("no class names to encode (empty class list)")
        device = self.visual.proj.device
        out = []
        for query in queries:
            prompts = [t(query) if callable(t) else t.format(query) for t in templates]
            feats = []
            for start in range(0, len(prompts), batch_size):
                tokens = self.tokenizer(prompts[start:start + batch_size]).to(device)
                feats.append(F.normalize(self.clip.encode_text(tokens).float(), dim=-1))
            out.append(F.normalize(torch.cat(feats).mean(dim=0), dim=-1))
            if progress is not None:
                progress(query)
        return torch.stack(out)

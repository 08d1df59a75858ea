"""How each base method runs the last CLIP block: a registry of small named pieces.

A method turns the tokens entering the last block into

* ``a0``: its attention, ``[B, N, N]`` when head-independent or ``[B, h, N, N]``;
* ``v``: the values it attends, ``[B, h, N, d]``;
* ``finish``: what the block does after ``a0 V`` and the output projection (a residual, an FFN, or
  nothing), mapping ``[B, M, D]`` to the tokens that ``ln_post``/``proj`` turn into embeddings (``M`` is
  ``N``, or 1 for the uniform-attention output, which broadcasts against a residual);
* ``grid`` and ``patch_tokens``: where the patch tokens sit in the output, and on which grid.

FSA (``fsa.py``) then needs nothing else: the head that maps attended values to class logits is
``finish`` followed by the CLIP projection and the text embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fsa import split_heads


@dataclass
class LastBlockAttention:
    a0: Tensor
    v: Tensor
    finish: Callable[[Tensor], Tensor]
    grid: Tuple[int, int]
    patch_tokens: slice


class LastBlockMethod:
    """Base class: one base method's last block. Subclasses set ``name`` and implement ``attention``."""

    name: str = ""
    needs_proxy: bool = False

    def __init__(self, **kwargs) -> None:
        if kwargs:
            raise TypeError(f"base method '{self.name}' takes no options {sorted(kwargs)}")

    def attention(self, block: nn.Module, x: Tensor, grid: Tuple[int, int],
                  proxy: Optional[Tensor] = None) -> LastBlockAttention:
        raise NotImplementedError


LAST_BLOCKS: Dict[str, Type[LastBlockMethod]] = {}


def register_last_block(cls: Type[LastBlockMethod]) -> Type[LastBlockMethod]:
    if not cls.name or cls.name in LAST_BLOCKS:
        raise ValueError(f"last-block method needs a new unique name, got '{cls.name}'")
    LAST_BLOCKS[cls.name] = cls
    return cls


def list_base_methods() -> Tuple[str, ...]:
    return tuple(sorted(LAST_BLOCKS))


def build_last_block(name: str, **kwargs) -> LastBlockMethod:
    try:
        cls = LAST_BLOCKS[name]
    except KeyError:
        raise ValueError(f"unknown base_method '{name}'; choose one of {list(list_base_methods())}") from None
    return cls(**kwargs)


def qkv(block: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-head ``q, k, v`` ``[B, h, N, d]`` of the block's attention on ``ln_1(x)``."""
    attn: nn.MultiheadAttention = block.attn
    y = block.ln_1(x)
    q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    heads = attn.num_heads
    return split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)


def values(block: nn.Module, x: Tensor) -> Tensor:
    """Per-head values ``[B, h, N, d]`` of ``ln_1(x)`` (only the value third of the input projection)."""
    attn: nn.MultiheadAttention = block.attn
    dim = attn.embed_dim
    v = F.linear(block.ln_1(x), attn.in_proj_weight[2 * dim:], attn.in_proj_bias[2 * dim:])
    return split_heads(v, attn.num_heads)


def no_residual(tokens: Tensor) -> Tensor:
    return tokens


def proxy_attention(proxy: Tensor, beta: float = 1.2, gamma: float = 3.0) -> Tensor:
    """ProxyCLIP's attention (Lan et al., ECCV 2024, Eq. 4): cosine similarity of the proxy (VFM) patch
    features, shifted by ``beta`` times its mean and scaled by ``gamma``; negatives are masked out.

    ``proxy`` is ``[B, C, H, W]``; returns ``[B, HW, HW]``, shared by all heads. The mean is taken per
    image (the released code takes it over the whole batch, which only agrees at batch size 1).
    """
    feats = F.normalize(proxy.flatten(2).float(), dim=1)
    sim = torch.bmm(feats.transpose(1, 2), feats)
    sim = (sim - sim.mean(dim=(1, 2), keepdim=True) * beta) * gamma
    sim.masked_fill_(sim < 0.0, float("-inf"))
    return sim.softmax(dim=-1).to(proxy.dtype)


@register_last_block
class ProxyCLIPBlock(LastBlockMethod):
    """ProxyCLIP (Lan et al., ECCV 2024): CLIP values of the patch tokens, resized to the proxy grid and
    mixed by :func:`proxy_attention` of a vision foundation model; no residual, no FFN."""

    name = "proxyclip"
    needs_proxy = True

    def __init__(self, beta: float = 1.2, gamma: float = 3.0) -> None:
        super().__init__()
        self.beta, self.gamma = beta, gamma

    def attention(self, block, x, grid, proxy=None):
        if proxy is None:
            raise ValueError("base_method 'proxyclip' needs proxy features: set model.vfm (sam, dino, dinov2, mae)")
        v = values(block, x)[:, :, 1:]                                       # drop the class token
        b, h, _, d = v.shape
        out_grid = tuple(proxy.shape[-2:])
        v = v.transpose(2, 3).reshape(b * h, d, *grid)
        v = F.interpolate(v, size=out_grid, mode="bilinear", align_corners=False)
        v = v.reshape(b, h, d, -1).transpose(2, 3)
        a0 = proxy_attention(proxy, self.beta, self.gamma).to(v.dtype)
        return LastBlockAttention(a0=a0, v=v, finish=no_residual, grid=out_grid, patch_tokens=slice(None))

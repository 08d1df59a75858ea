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
    """Base class: one base method's last block. Subclasses set ``name`` and implement ``attention``.

    The class is the method's registry entry; besides the model it tells the tools (config generator, tables,
    listings) its ``title``, its released evaluation ``protocol`` and the one it follows with FSA
    (``fsa_protocol``; None: the same). A protocol is the name of one in :mod:`fsa_seg.zoo.protocols` or a
    :class:`fsa_seg.zoo.protocols.Protocol`; None: FSA's released protocol. ``short_title`` names it in tables
    (default: ``title``). ``testing``: a test-only method, usable by name but left out of listings, messages and
    generated configs.
    """

    name: str = ""
    needs_proxy: bool = False
    title: str = ""
    short_title: str = ""
    protocol: object = None
    fsa_protocol: object = None
    testing: bool = False

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


def list_base_methods(include_testing: bool = False) -> Tuple[str, ...]:
    """Registered base-method names, sorted (test-only ones with ``include_testing``)."""
    return tuple(sorted(n for n, cls in LAST_BLOCKS.items() if include_testing or not cls.testing))


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
    # in place (the same operations): one [B, N, N] fp32 map alive besides the softmax's output, not three
    sim.sub_(sim.mean(dim=(1, 2), keepdim=True) * beta).mul_(gamma)
    sim.masked_fill_(sim < 0.0, float("-inf"))
    return sim.softmax(dim=-1).to(proxy.dtype)


@register_last_block
class ProxyCLIPBlock(LastBlockMethod):
    """ProxyCLIP (Lan et al., ECCV 2024): CLIP values of the patch tokens, resized to the proxy grid and
    mixed by :func:`proxy_attention` of a vision foundation model; no residual, no FFN."""

    name = "proxyclip"
    needs_proxy = True
    title = "ProxyCLIP"
    protocol = "proxyclip"
    fsa_protocol = "fsa"   # FSA-ProxyCLIP follows the released FSA configs

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


# --- CLIP-native base methods: the last block re-mixes CLIP's own tokens ----------------------------------
#
# CLS handling (all of them): the attention runs over the 1 + N tokens entering the block, the class
# token included, exactly as the released code of each method does; FSA therefore scores, and builds its
# feedback attention over, the same 1 + N tokens. Only the output drops the class token
# (``patch_tokens = slice(1, None)``).


def block_finish(block: nn.Module, x: Tensor, residual: bool, ffn: bool) -> Callable[[Tensor], Tensor]:
    """What follows ``out_proj(A V)`` in the block: ``x + out`` (residual), then ``y + FFN(ln_2(y))``.

    The FFN keeps its own skip connection when on (as CLIP's block does); ``residual`` only concerns the
    attention branch's skip from ``x``. ``out`` is ``[B, M, D]`` with ``M`` = 1 + N, or 1 for FSA's uniform
    attention output, which broadcasts against ``x``. open_clip's layer scales (``ls_1``, ``ls_2``;
    identities for the paper's models) scale the two branches.
    """
    if not residual and not ffn:
        return no_residual

    def finish(out: Tensor) -> Tensor:
        y = block.ls_1(out)
        if residual:
            y = x + y
        if ffn:
            y = y + block.ls_2(block.mlp(block.ln_2(y)))
        return y

    return finish


class CLIPNativeBlock(LastBlockMethod):
    """Base class of the methods that mix CLIP's own tokens (no proxy model).

    Subclasses set ``residual``/``ffn`` (their published choice) and implement :meth:`mix`; both switches
    may be overridden for ablations, e.g. ``base_method_cfg=dict(residual=False)``.
    """

    residual: bool = True
    ffn: bool = True

    def __init__(self, residual: Optional[bool] = None, ffn: Optional[bool] = None) -> None:
        super().__init__()
        if residual is not None:
            self.residual = bool(residual)
        if ffn is not None:
            self.ffn = bool(ffn)

    def mix(self, block: nn.Module, x: Tensor, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """``(a0, v)``: the attention over the 1 + N tokens and the per-head values."""
        raise NotImplementedError

    def attention(self, block, x, grid, proxy=None):
        a0, v = self.mix(block, x, grid)
        return LastBlockAttention(a0=a0, v=v, finish=block_finish(block, x, self.residual, self.ffn),
                                  grid=tuple(grid), patch_tokens=slice(1, None))


def scaled_similarity(a: Tensor, b: Tensor) -> Tensor:
    """``a b^T / sqrt(d)`` per head: ``[B, h, N, d]`` x ``[B, h, N, d]`` -> ``[B, h, N, N]``."""
    return (a @ b.transpose(-2, -1)) * (a.shape[-1] ** -0.5)


@register_last_block
class VanillaBlock(CLIPNativeBlock):
    """CLIP as trained (Radford et al., ICML 2021): per-head ``softmax(q k^T / sqrt(d))`` over the 1 + N
    tokens, residual kept, FFN kept; then ``ln_post``/``proj`` on every token."""

    name = "vanilla"
    title = "vanilla CLIP"
    short_title = "CLIP"

    def mix(self, block, x, grid):
        q, k, v = qkv(block, x)
        return scaled_similarity(q, k).softmax(dim=-1), v


@register_last_block
class MaskCLIPBlock(CLIPNativeBlock):
    """MaskCLIP (Zhou et al., ECCV 2022): the last block's query/key path is dropped and each token keeps
    its own value (no token mixing): ``A0`` is the identity, shared by the heads. The value then goes
    through the output projection and, as in the released ViT code (``v += x``, then the block's FFN),
    the residual and the FFN are kept; then ``ln_post``/``proj``. (ClearCLIP's re-implementation of
    MaskCLIP also drops the residual and FFN: ``base_method_cfg=dict(residual=False, ffn=False)``.)
    MaskCLIP's optional key smoothing and prompt denoising post-processing are not part of this block."""

    name = "maskclip"
    title = "MaskCLIP"

    def mix(self, block, x, grid):
        v = values(block, x)
        b, _, n, _ = v.shape
        eye = torch.eye(n, dtype=v.dtype, device=v.device).expand(b, n, n)
        return eye, v


@register_last_block
class SCLIPBlock(CLIPNativeBlock):
    """SCLIP (Wang et al., ECCV 2024): correlative self-attention, per head
    ``softmax(q q^T / sqrt(d)) + softmax(k k^T / sqrt(d))`` (a sum of two row-stochastic maps, rows sum
    to 2, as released), over the 1 + N tokens; residual kept, FFN kept."""

    name = "sclip"
    title = "SCLIP"
    protocol = "sclip"

    def mix(self, block, x, grid):
        q, k, v = qkv(block, x)
        return scaled_similarity(q, q).softmax(dim=-1) + scaled_similarity(k, k).softmax(dim=-1), v


@register_last_block
class ClearCLIPBlock(CLIPNativeBlock):
    """ClearCLIP (Lan et al., ECCV 2024): self-self (query-query) attention, per head
    ``softmax(q q^T / sqrt(d))`` over the 1 + N tokens; residual removed, FFN removed (the block's output
    is ``out_proj(A V)``, then ``ln_post``/``proj``)."""

    name = "clearclip"
    title = "ClearCLIP"
    protocol = "clearclip"
    residual = False
    ffn = False

    def mix(self, block, x, grid):
        q, _, v = qkv(block, x)
        return scaled_similarity(q, q).softmax(dim=-1), v


def neighbourhood_prior(grid: Tuple[int, int], std: float, with_cls: bool = True) -> Tensor:
    """NACLIP's additive attention prior: ``exp(-|p_i - p_j|^2 / (2 std^2))`` between the grid positions
    of patches ``i`` and ``j`` (a Gaussian window as large as the grid, peak 1, unnormalised); the class
    token's row and column are 0. Returns ``[1 + N, 1 + N]`` (``[N, N]`` without the class token), computed
    in fp64."""
    rows = torch.arange(grid[0], dtype=torch.float64).repeat_interleave(grid[1])
    cols = torch.arange(grid[1], dtype=torch.float64).repeat(grid[0])
    dist2 = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    prior = torch.exp(-dist2 / (2.0 * std * std))
    return F.pad(prior, (1, 0, 1, 0)) if with_cls else prior


@register_last_block
class NACLIPBlock(CLIPNativeBlock):
    """NACLIP (Hajimiri et al., WACV 2025): neighbourhood-aware key-key attention, per head
    ``softmax(k k^T / sqrt(d) + omega)`` with ``omega`` the Gaussian neighbourhood prior of
    :func:`neighbourhood_prior` (std 5 patches, released default; 0 for the class token) over the 1 + N
    tokens; its "reduced" architecture: residual removed, FFN removed (output ``out_proj(A V)``)."""

    name = "naclip"
    title = "NACLIP"
    protocol = "naclip"
    residual = False
    ffn = False

    def __init__(self, gaussian_std: float = 5.0, residual: Optional[bool] = None,
                 ffn: Optional[bool] = None) -> None:
        super().__init__(residual=residual, ffn=ffn)
        if gaussian_std <= 0:
            raise ValueError(f"NACLIP gaussian_std must be positive, got {gaussian_std}")
        self.gaussian_std = float(gaussian_std)
        self._priors: Dict[tuple, Tensor] = {}

    def prior(self, grid: Tuple[int, int], like: Tensor) -> Tensor:
        key = (tuple(grid), like.device, like.dtype)
        if key not in self._priors:
            self._priors[key] = neighbourhood_prior(grid, self.gaussian_std).to(like.device, like.dtype)
        return self._priors[key]

    def mix(self, block, x, grid):
        _, k, v = qkv(block, x)
        logits = scaled_similarity(k, k)
        return (logits + self.prior(grid, logits)).softmax(dim=-1), v

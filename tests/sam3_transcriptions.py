"""Plain transcriptions the SAM3 tests compare the lean code with (a helper module next to the tests)."""
from __future__ import annotations

from typing import Callable, Tuple

import torch


def materialised_eq8(a_fb: torch.Tensor, q, k, v, scale: float) -> torch.Tensor:
    """Paper Eq. 8 as written: ``(A_fb A0 + A0 A_fb + A_fb) V / 3``, ``A0 = softmax(q k^T scale)`` per head;
    ``a_fb`` ``[B or 1, N, N]``."""
    a0 = (q @ k.transpose(-1, -2) * scale).softmax(dim=-1)
    fb = a_fb[:, None]
    return (fb @ a0 + a0 @ fb + fb) @ v / 3


def eq8_mix(a_fb: torch.Tensor) -> Callable:
    """``mix(a0, v)`` of :func:`transcribed_layer` for the adaptation ensemble with a fixed ``A_fb``."""
    return lambda a0, v: (a_fb[:, None] @ a0 + a0 @ a_fb[:, None] + a_fb[:, None]) @ v / 3


def transcribed_layer(layer, state, text, mix: Callable) -> torch.Tensor:
    """``Sam3DetrEncoderLayer.forward`` written out, with ``mix(a0 [B, h, N, N], v [B, h, N, d])`` in place of
    ``A0 V`` (``A0`` materialised: the plain form the lean path must equal)."""
    attn = layer.self_attn
    b, n, width = state.hidden.shape
    heads = attn.num_attention_heads
    x = layer.layer_norm1(state.hidden)

    def split(t):
        return t.reshape(b, n, heads, width // heads).transpose(1, 2)

    q, k, v = split(attn.q_proj(x + state.pos)), split(attn.k_proj(x + state.pos)), split(attn.v_proj(x))
    a0 = (q @ k.transpose(-1, -2) * attn.scaling).softmax(dim=-1)
    hidden = attn.o_proj(mix(a0, v).transpose(1, 2).reshape(b, n, width)) + state.hidden
    cross, _ = layer.cross_attn(query=layer.layer_norm2(hidden), key=text, value=text,
                                attention_mask=state.cross_mask)
    hidden = hidden + cross
    return hidden + layer.mlp(layer.layer_norm3(hidden))


def pooled_by_loops(maps: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """``[Q, H, W]`` maps averaged over the cells of an ``(h, w)`` grid that divides them, as ``[N, Q]`` with
    token ``r * w + c`` = row ``r``, column ``c`` (the encoder's row-major order), written as loops."""
    q, height, width = maps.shape
    h, w = grid
    ch, cw = height // h, width // w
    out = torch.empty(h * w, q, dtype=torch.float64)
    for r in range(h):
        for c in range(w):
            out[r * w + c] = maps[:, r * ch:(r + 1) * ch, c * cw:(c + 1) * cw].double().mean(dim=(1, 2))
    return out


def row_stochastic(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """A random, clearly asymmetric row-stochastic matrix ``[1, n, n]``."""
    gen = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(1, n, n, generator=gen, dtype=dtype)).softmax(dim=-1)

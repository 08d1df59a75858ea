"""PAMR: Pixel-Adaptive Mask Refinement (Araslanov & Roth, "Single-Stage Semantic Segmentation from Image
Labels", CVPR 2020, Sec. 3.2), as used as optional post-processing by SCLIP and NACLIP.

Each pixel's scores are replaced, ``steps`` times, by an average of its 8 neighbours at each dilation
``d`` (offsets ``(±d | 0, ±d | 0)``, replicate padding at the border). The weights come from the image only:

* per image channel ``c``: ``-|I_c(p) - I_c(n)| / (1e-8 + 0.1 * sigma_c(p))``, where ``sigma_c(p)`` is the
  (unbiased) standard deviation of ``I_c`` over the 3 x 3 neighbourhoods of ``p`` (centre included) at all
  the dilations together;
* averaged over channels, then a softmax over all the ``8 * len(dilations)`` neighbours.

The refinement is a convex combination, so it never leaves the range of the input scores. The weighted sum
is accumulated neighbour by neighbour (no ``[B, C, P, H, W]`` stack), over chunks of at most
``chunk_elems`` score elements.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The 8 neighbour offsets (dy, dx) of a 3 x 3 window, in units of the dilation.
_NEIGHBOURS: Tuple[Tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                                                 if (dy, dx) != (0, 0))


def shifted(x: Tensor, offsets: Sequence[Tuple[int, int]], dilation: int) -> List[Tensor]:
    """``x`` ``[B, C, H, W]`` read at ``p + dilation * offset`` for each offset (replicate padding)."""
    h, w = x.shape[-2:]
    d = dilation
    padded = F.pad(x, (d, d, d, d), mode="replicate")
    return [padded[..., d + dy * d: d + dy * d + h, d + dx * d: d + dx * d + w] for dy, dx in offsets]


def pamr_affinity(image: Tensor, dilations: Sequence[int]) -> Tensor:
    """Neighbour weights ``[B, P, H, W]`` (softmax over the ``P = 8 * len(dilations)`` neighbours)."""
    image = image.float()
    diffs, windows = [], []
    for d in dilations:
        neigh = shifted(image, _NEIGHBOURS, d)
        diffs += [(image - n).abs() for n in neigh]
        windows += neigh + [image]
    diff = torch.stack(diffs, dim=2)                                        # [B, K, P, H, W]
    sigma = torch.stack(windows, dim=2).std(dim=2, keepdim=True)            # [B, K, 1, H, W]
    aff = (-diff / (1e-8 + 0.1 * sigma)).mean(dim=1)                        # [B, P, H, W]
    return aff.softmax(dim=1)


class PAMR(nn.Module):
    """``PAMR(steps, dilations)(image, scores)``: ``image`` ``[B, K, H, W]``, ``scores`` ``[B, C, h, w]``
    (resized to ``H x W`` bilinearly, corners aligned, if needed) -> refined ``[B, C, H, W]`` (fp32)."""

    def __init__(self, steps: int = 10, dilations: Sequence[int] = (8, 16), chunk_elems: int = 1 << 24) -> None:
        super().__init__()
        dilations = tuple(int(d) for d in dilations)
        if steps < 0 or not dilations or min(dilations) < 1:
            raise ValueError(f"PAMR needs steps >= 0 and dilations >= 1, got {steps} / {dilations}")
        self.steps, self.dilations, self.chunk_elems = int(steps), dilations, int(chunk_elems)

    def extra_repr(self) -> str:
        return f"steps={self.steps}, dilations={self.dilations}"

    def forward(self, image: Tensor, scores: Tensor) -> Tensor:
        size = tuple(image.shape[-2:])
        scores = scores.float()
        if tuple(scores.shape[-2:]) != size:
            scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=True)
        if self.steps == 0:
            return scores
        weights = pamr_affinity(image, self.dilations)                       # [B, P, H, W]
        b, _, h, w = scores.shape
        step = max(1, self.chunk_elems // max(1, b * h * w))
        out = []
        for chunk in scores.split(step, dim=1):
            for _ in range(self.steps):
                refined = torch.zeros_like(chunk)
                p = 0
                for d in self.dilations:
                    for neighbour in shifted(chunk, _NEIGHBOURS, d):
                        refined.addcmul_(neighbour, weights[:, p:p + 1])
                        p += 1
                chunk = refined
            out.append(chunk)
        return torch.cat(out, dim=1)

"""FSA's feedback signal for SAM3: per-token class distributions from SAM3's own score maps.

FSA (ICCV 2025, Sec. 3) builds the feedback attention ``A_fb`` from per-token class distributions of the
model's output. For SAM3 the output is one probability map per prompt; here

* the maps (presence-weighted, as the segmentor outputs them) are average-pooled to the detector-encoder
  token grid, ``p [N, Q]``;
* *presence-based pruning*: prompts whose presence probability is below ``presence_thd`` are dropped
  (a concept SAM3 judges absent only adds noise to the distributions), and one ``rest`` column,
  ``1 - max_c p_c``, is appended so tokens that no kept prompt claims form their own group (with a single
  kept prompt the distribution would otherwise be the constant 1);
* *isolation*: the image-global response, the token mean of each column, is subtracted (analogue of the
  paper's uniform-attention output: with a linear head, uniform attention yields the mean of the token
  outputs);
* ``A_fb`` then comes from the shared core, :func:`fsa_seg.fsa.feedback_attention` (KL affinity, top-p
  pruning, sharpening), with ``p`` as the logits and ``feedback_scale`` / ``isolation_scale`` as its scales.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import fsa as fsa_core


@dataclass(frozen=True)
class Sam3FeedbackParams:
    """Switches of the SAM3 feedback signal (see module docstring)."""

    presence_pruning: bool = True
    presence_thd: float = 0.5
    isolation: bool = True
    # SAM3 scores are probabilities in [0, 1]: a scale of 10 turns a confident 0.9 against 0.05 into a margin
    # of ~8.5 nats. Equal scales make isolation a per-prompt centring (CLIP's 20/35 were set for cosines).
    feedback_scale: float = 10.0
    isolation_scale: float = 10.0
    top_p: float = 0.45
    lamda: float = 3.0

    def core_params(self) -> fsa_core.FSAParams:
        return fsa_core.FSAParams(top_p=self.top_p, lamda=self.lamda, base_scale=self.feedback_scale,
                                  uniform_scale=self.isolation_scale)


def token_grid_scores(scores: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Score maps ``[Q, H, W]`` -> ``[N, Q]`` on the ``grid`` of encoder tokens (row-major, as flattened)."""
    pooled = F.adaptive_avg_pool2d(scores.float()[None], grid)[0]
    return pooled.flatten(1).t()


def kept_prompts(presence: Tensor, params: Sam3FeedbackParams) -> Tensor:
    """Indices of the prompts that enter the distributions: presence ``>= presence_thd`` (or all)."""
    if not params.presence_pruning:
        return torch.arange(presence.numel(), device=presence.device)
    return torch.nonzero(presence.flatten() >= params.presence_thd).flatten()


def feedback_logits(token_scores: Tensor, presence: Tensor, params: Sam3FeedbackParams
                    ) -> Tuple[Tensor, Tensor, Tensor]:
    """The core's inputs: token logits ``[1, N, K + 1]``, global response ``[1, 1, K + 1]`` and the ``K`` kept
    prompt indices. Columns: the kept prompts in order, then ``rest``."""
    kept = kept_prompts(presence, params)
    p = token_scores[:, kept]
    rest = 1.0 - (p.amax(dim=1, keepdim=True) if p.shape[1] else torch.zeros_like(token_scores[:, :1]))
    logits = torch.cat([p, rest.clamp_(min=0.0)], dim=1)[None]
    glob = logits.mean(dim=1, keepdim=True) if params.isolation else torch.zeros_like(logits[:, :1])
    return logits, glob, kept


def sam3_feedback_attention(token_scores: Tensor, presence: Tensor, params: Sam3FeedbackParams,
                            out_dtype: Optional[torch.dtype] = None) -> Optional[Tensor]:
    """``A_fb [1, N, N]`` of one crop from its token scores ``[N, Q]`` and presence ``[Q]``, via the shared core.

    ``None`` when presence pruning keeps no prompt (nothing is present: there is nothing to adapt to).
    """
    logits, glob, kept = feedback_logits(token_scores, presence, params)
    if kept.numel() == 0:
        return None
    return fsa_core.feedback_attention(logits, glob, params.core_params(), out_dtype=out_dtype)


def propagate_scores(scores: Tensor, a_fb: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Output-level FSA: the token-grid scores propagated with ``A_fb``; detail finer than the grid is kept.

    ``S' = S + up(A_fb S_tok - S_tok)`` for maps ``S [Q, H, W]``, ``A_fb [1, N, N]``.
    """
    tok = token_grid_scores(scores, grid)                                  # [N, Q]
    delta = torch.mm(a_fb[0].to(tok.dtype), tok) - tok
    delta = delta.t().reshape(-1, *grid)[None]
    delta = F.interpolate(delta, size=tuple(scores.shape[-2:]), mode="bilinear", align_corners=False)[0]
    return (scores.float() + delta).clamp_(0.0, 1.0)

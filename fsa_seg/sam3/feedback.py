"""FSA's feedback signal for SAM3: per-token distributions over the present prompts, from SAM3's own outputs.

FSA (ICCV 2025, Sec. 3) builds the feedback attention ``A_fb`` from per-token class distributions of the model's
output. For SAM3 (one map per prompt, independent sigmoids, a presence probability per prompt):

* the signal is each *present* prompt's log-odds, ``semantic logit + log presence``, average-pooled to the
  DETR-encoder token grid (:func:`token_log_odds`; ``log p`` of SAM3's presence-weighted semantic map where
  ``p`` is small, its logit where ``p`` is large). A prompt is present if ``sigmoid(presence) >= presence_thd``
  (:func:`present_prompts`); absent prompts stay out of the distributions (a concept SAM3 judges absent only
  adds noise) and are not re-run. A softmax over prompts of log-odds is a normalisation of their odds, so the
  natural scale is 1 (a signal such as ``10 x probability`` saturates: with lamda 3 each ``A_fb`` row becomes a
  near-uniform average over every token of the same top prompt, image-wide);
* a ``rest`` column at log-odds 0 (p = 0.5) lets tokens that no present prompt claims form their own group
  (with a single present prompt the distribution would otherwise be constant);
* *isolation* (paper Eq. 3): subtract, per token, the log-odds of the placement run with uniform attention at
  the isolation scale (the default: what FSA subtracts, the logits uniform attention produces at their own
  scale, 35 against the feedback's 20 in the released code, i.e. ``isolation_scale / feedback_scale = 1.75``); or the
  token mean of each column (an approximation of it: the mean of the logits, where FSA takes the logits of the
  mean value; no extra pass); or nothing;
* ``A_fb`` comes from the shared core :func:`fsa_seg.fsa.feedback_attention` (KL affinity, top-p pruning,
  sharpening). The three-strategy ensemble (isolation only, pruning only, both) has two forms:
  ``strategies='ensemble_results'`` gives one ``A_fb`` per strategy (:func:`feedback_maps`) and the segmentor
  averages the three strategies' results (their probabilities); ``strategies='ensemble'`` averages the three
  ``A_fb`` into one map. ``both`` is the paper's single ``A_fb``.

:func:`propagate_logits` is the output-level variant (``fsa_mode='output'``): the score logits propagated with
``A_fb`` on the token grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import fsa as fsa_core
from ..settings import accepts_renamed
from .scores import _wide


ISOLATION_MODES = ("none", "mean", "uniform")
STRATEGIES = ("both", "ensemble", "ensemble_results")
# The released FSA scores the base output at logit scale 20 and the uniform-attention output at 35.
RELEASED_ISOLATION_RATIO = fsa_core.FSAParams.isolation_scale / fsa_core.FSAParams.feedback_scale
#: the deprecated spelling of LogOddsFeedback's feedback scale -> its name
RENAMED_FEEDBACK = {"scale": "feedback_scale"}


@accepts_renamed(RENAMED_FEEDBACK)

@dataclass(frozen=True)
class LogOddsFeedback:
    """The log-odds feedback signal and FSA's modules on it.

    presence_thd: a prompt is *present* (enters the distributions, and is re-run) if ``sigmoid(presence) >=``
        this.
    isolation: ``uniform`` (default) subtracts, per token, the log-odds of the hooked placement run with uniform
        attention (the paper's Eq. 3: ``decode.uniform_attend_qkv``; one semantic-head pass per present prompt);
        ``mean`` subtracts the token mean of each column (an approximation of ``uniform``: the mean of the
        log-odds instead of the log-odds of the mean value; no extra pass); ``none`` subtracts nothing.
    feedback_scale / isolation_scale: the logit scales of paper Eq. 3, of the feedback signal and of the
        subtracted isolation signal (:class:`fsa_seg.fsa.FSAParams`' names; ``scale`` is the deprecated name of
        ``feedback_scale``). The released 20 / 35 are for CLIP's cosines; on log-odds the feedback scale is 1 and
        the isolation scale keeps the released ratio, 1.75.
    rest: append a column at log-odds 0 (p = 0.5): tokens that no present prompt claims form their own group
        (with a single present prompt the distribution would otherwise be constant).
    top_p, lamda: pruning and sharpening (paper Eq. 6-7); ``top_p = 1`` prunes nothing.
    strategies: ``both`` is the paper's single ``A_fb`` (isolation and pruning together); ``ensemble_results``
        the three-strategy ensemble (isolation only, pruning only, both) of results: one ``A_fb`` per strategy
        (:func:`feedback_maps`), each run, their results averaged; ``ensemble`` averages the three ``A_fb`` maps
        into one (cheaper; not the same, the heads are nonlinear).
    """

    presence_thd: float = 0.5
    isolation: str = "uniform"
    feedback_scale: float = 1.0
    isolation_scale: float = RELEASED_ISOLATION_RATIO
    rest: bool = True
    top_p: float = fsa_core.FSAParams.top_p
    lamda: float = fsa_core.FSAParams.lamda
    strategies: str = "both"

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATION_MODES:
            raise ValueError(f"isolation must be one of {ISOLATION_MODES}, got '{self.isolation}'")
        if self.strategies not in STRATEGIES:
            raise ValueError(f"strategies must be one of {STRATEGIES}, got '{self.strategies}'")
        if not 0.0 <= self.presence_thd <= 1.0:
            raise ValueError(f"presence_thd must be in [0, 1], got {self.presence_thd}")
        self.core_params()  # validates top_p

    def core_params(self, top_p: Optional[float] = None) -> fsa_core.FSAParams:
        return fsa_core.FSAParams(top_p=self.top_p if top_p is None else top_p, lamda=self.lamda,
                                  feedback_scale=self.feedback_scale, isolation_scale=self.isolation_scale)


def present_prompts(presence_logits: Tensor, presence_thd: float) -> Tensor:
    """Indices of the prompts SAM3 judges present, ``sigmoid(presence) >= presence_thd``, in order."""
    return torch.nonzero(presence_logits.float().flatten().sigmoid() >= presence_thd).flatten()


def pool_to_tokens(maps: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Maps ``[Q, H, W]`` averaged over the cells of the encoder token grid ``(h, w)``, as ``[N, Q]`` with the
    tokens in the encoder's order (row-major: token ``r * w + c`` is row ``r``, column ``c``); fp32, or fp64 for
    fp64 maps."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be [Q, H, W], got shape {tuple(maps.shape)}")
    pooled = F.adaptive_avg_pool2d(_wide(maps)[None], grid)[0]             # [Q, h, w]
    return pooled.flatten(1).t()


def token_log_odds(semantic_logits: Tensor, presence_logits: Tensor, grid: Tuple[int, int]) -> Tensor:
    """``[N, Q]``: each prompt's semantic logit pooled to the token grid, plus its log presence probability."""
    return pool_to_tokens(semantic_logits, grid) + F.logsigmoid(_wide(presence_logits).flatten())[None]


def log_odds_inputs(token_logits: Tensor, present: Tensor, params: LogOddsFeedback,
                    uniform_logits: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The core's inputs: base logits ``[1, N, K (+1)]`` and isolation logits ``[1, 1 or N, K (+1)]``.

    ``token_logits`` ``[N, Q]`` from :func:`token_log_odds`; ``present`` the ``K`` prompt indices (columns, in
    order), then the ``rest`` column at 0. ``uniform_logits`` ``[N, Q]`` (the same from the uniform-attention
    pass) is needed for ``isolation='uniform'``.
    """
    base = token_logits[:, present]
    if params.rest:
        base = torch.cat([base, base.new_zeros(base.shape[0], 1)], dim=1)
    if params.isolation == "none":
        glob = base.new_zeros(1, base.shape[1])
    elif params.isolation == "mean":
        glob = base.mean(dim=0, keepdim=True)
    else:
        if uniform_logits is None:
            raise ValueError("isolation='uniform' needs the uniform-attention pass's token log-odds")
        glob = uniform_logits[:, present]
        if params.rest:
            glob = torch.cat([glob, glob.new_zeros(glob.shape[0], 1)], dim=1)
    return base[None], glob[None]


def strategy_params(params: LogOddsFeedback) -> Tuple[Tuple[bool, fsa_core.FSAParams], ...]:
    """The three strategies of the ensemble as ``(isolated, core parameters)``: isolation only (no pruning),
    pruning only (no isolation), both."""
    return ((True, params.core_params(top_p=1.0)), (False, params.core_params()), (True, params.core_params()))


def feedback_maps(token_logits: Tensor, present: Tensor, params: LogOddsFeedback,
                  uniform_logits: Optional[Tensor] = None, out_dtype: Optional[torch.dtype] = None
                  ) -> List[Tensor]:
    """The ``A_fb [1, N, N]`` the segmentor runs, one per result it averages: ``[A_fb]`` for ``both`` and
    ``ensemble`` (:func:`log_odds_feedback_attention`), ``[isolation only, pruning only, both]`` for
    ``ensemble_results``; ``[]`` if no prompt is present."""
    if present.numel() == 0:
        return []
    if params.strategies != "ensemble_results":
        return [log_odds_feedback_attention(token_logits, present, params, uniform_logits, out_dtype)]
    base, glob = log_odds_inputs(token_logits, present, params, uniform_logits)
    return [fsa_core.feedback_attention(base, glob if isolated else torch.zeros_like(glob), core,
                                        out_dtype=out_dtype)
            for isolated, core in strategy_params(params)]


def log_odds_feedback_attention(token_logits: Tensor, present: Tensor, params: LogOddsFeedback,
                                uniform_logits: Optional[Tensor] = None,
                                out_dtype: Optional[torch.dtype] = None) -> Optional[Tensor]:
    """``A_fb [1, N, N]`` from the present prompts' token log-odds via the shared core; ``None`` if none is
    present. ``strategies='ensemble'`` averages the maps of isolation only (no pruning), pruning only (no
    isolation) and both; ``ensemble_results`` has no single map (:func:`feedback_maps`)."""
    if params.strategies == "ensemble_results":
        raise ValueError("strategies='ensemble_results' gives one A_fb per strategy: use feedback_maps")
    if present.numel() == 0:
        return None
    base, glob = log_odds_inputs(token_logits, present, params, uniform_logits)
    if params.strategies == "both":
        return fsa_core.feedback_attention(base, glob, params.core_params(), out_dtype=out_dtype)
    maps = [fsa_core.feedback_attention(base, glob if isolated else torch.zeros_like(glob), core)
            for isolated, core in strategy_params(params)]
    mean = sum(maps) / 3
    return mean if out_dtype is None else mean.to(out_dtype)


def propagate_logits(logits: Tensor, a_fb: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Output-level FSA: score logits ``z [K, H, W]`` propagated with ``A_fb [1, N, N]`` on the token ``grid``,
    detail finer than the grid kept: ``z' = z + up(A_fb z_tok - z_tok)``, ``z_tok`` = :func:`pool_to_tokens`
    (bilinear ``up`` back to ``H x W``). Where ``z`` is constant on each token's cell, ``z'_tok = A_fb z_tok``.
    fp32, or fp64 for fp64 logits (the dtype of the logits it replaces)."""
    tok = pool_to_tokens(logits, grid)                                     # [N, K]
    delta = torch.mm(a_fb[0].to(tok.dtype), tok) - tok
    delta = delta.t().reshape(-1, *grid)[None]
    delta = F.interpolate(delta, size=tuple(logits.shape[-2:]), mode="bilinear", align_corners=False)[0]
    return _wide(logits) + delta

"""Per-prompt score maps from SAM3's heads: the semantic map, the instance masks, or both, times presence.

The default recipe is the one of the strongest public SAM3 semantic-segmentation pipelines (SegEarth-OV-3's
``_inference_single_view`` on top of the reference ``Sam3Processor``): per prompt,

    p = presence * max(semantic, max_{m kept} sigmoid(mask_m) * w_m),

with ``semantic = sigmoid(semantic_seg)``, ``w_m = sigmoid(logit_m) * presence`` (the processor's instance
score) and an instance kept only if ``sigmoid(logit_m) * presence >= instance_thd`` (the processor's
``confidence_threshold``, 0.5), and, optionally, only the ``top_k`` best. As there, the instance term carries
presence twice (once in ``w_m``, once in the final weighting); ``instance_presence=False`` drops the first.
The earlier score sources stay available: ``semantic``, ``instances`` (every instance, ``w_m`` without presence
unless asked) and ``both`` with ``mean`` or ``max``.

Everything is composed in log space (``log sigmoid`` of the logits, sums and maxima), which is exact and stays
finite where probabilities underflow; :func:`score_logits` returns the logit of ``p`` (see its docstring).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

SOURCES = ("semantic", "instances", "both")
REDUCES = ("max", "mean")
# |logit| beyond this is not representable as a probability in fp32 (exp(-88) underflows); clamping keeps the
# maps finite for resizing without changing any comparison between fp32 probabilities.
LOGIT_LIMIT = 88.0


def _wide(x: Tensor) -> Tensor:
    """fp32 at least (fp16 / bf16 logits are widened; fp64 stays fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@dataclass(frozen=True)
class ScoreRecipe:
    """How SAM3's outputs become one score map per prompt (see module docstring). Defaults: SegEarth-OV-3."""

    source: str = "both"
    reduce: str = "max"
    instance_thd: float = 0.5
    top_k: int = 0                 # 0: every instance that passes instance_thd
    instance_presence: bool = True
    presence_weighting: bool = True

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"score source must be one of {SOURCES}, got '{self.source}'")
        if self.reduce not in REDUCES:
            raise ValueError(f"score reduce must be one of {REDUCES}, got '{self.reduce}'")
        if not 0.0 <= self.instance_thd <= 1.0:
            raise ValueError(f"instance_thd must be in [0, 1], got {self.instance_thd}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: no limit), got {self.top_k}")

    @classmethod
    def legacy(cls, source: str = "semantic", reduce: str = "mean", presence_weighting: bool = True
               ) -> "ScoreRecipe":
        """The earlier ``query_scores``: every instance, weighted by its score only."""
        return cls(source=source, reduce=reduce, instance_thd=0.0, top_k=0, instance_presence=False,
                   presence_weighting=presence_weighting)


def _log_instances(pred_masks: Tensor, pred_logits: Tensor, log_presence: Tensor, recipe: ScoreRecipe) -> Tensor:
    """``log max_{m kept} sigmoid(mask_m) w_m`` ``[B, H, W]`` (``-inf`` where no instance is kept).

    Only the kept instances' masks are touched: the ``K`` best by score (``K`` = most kept in any prompt of the
    batch, capped by ``top_k``), the others of those ``K`` masked out.
    """
    log_score = F.logsigmoid(_wide(pred_logits))                            # [B, M]
    criterion = log_score + log_presence[:, None]                            # log(score * presence)
    keep = criterion >= math.log(recipe.instance_thd) if recipe.instance_thd > 0 else \
        torch.ones_like(criterion, dtype=torch.bool)
    count = int(keep.sum(dim=1).max()) if keep.numel() else 0
    if recipe.top_k:
        count = min(count, recipe.top_k)
    batch, num, height, width = pred_masks.shape
    if count == 0:
        return log_score.new_full((batch, height, width), float("-inf"))
    log_weight = (criterion if recipe.instance_presence else log_score).masked_fill(~keep, float("-inf"))
    masks = pred_masks
    if count < num:  # only the K best by score x presence (ties at the K-th: either)
        best = criterion.topk(count, dim=1).indices
        log_weight = log_weight.gather(1, best)
        masks = pred_masks.gather(1, best[:, :, None, None].expand(-1, -1, height, width))
    return (F.logsigmoid(_wide(masks)) + log_weight[:, :, None, None]).amax(dim=1)


def log_scores(out, recipe: ScoreRecipe = ScoreRecipe()) -> Tensor:
    """``log p`` ``[B, H, W]`` (fp32, or fp64 for fp64 inputs) of each prompt's score map, from SAM3's logits.

    ``out`` has ``semantic_seg [B, 1, H, W]``, ``pred_masks [B, M, H, W]``, ``pred_logits [B, M]`` and
    ``presence_logits [B, 1]`` (:class:`~fsa_seg.sam3.decode.HeadOutputs`).
    """
    log_presence = F.logsigmoid(_wide(out.presence_logits)).flatten()       # [B]
    terms = []
    if recipe.source in ("semantic", "both"):
        terms.append(F.logsigmoid(_wide(out.semantic_seg[:, 0])))
    if recipe.source in ("instances", "both"):
        terms.append(_log_instances(out.pred_masks, out.pred_logits, log_presence, recipe))
    if len(terms) == 1:
        log_p = terms[0]
    elif recipe.reduce == "max":
        log_p = torch.maximum(terms[0], terms[1])
    else:
        log_p = torch.logaddexp(terms[0], terms[1]) - math.log(2.0)
    if recipe.presence_weighting:
        log_p = log_p + log_presence[:, None, None]
    return log_p


def probabilities(out, recipe: ScoreRecipe = ScoreRecipe()) -> Tensor:
    """Each prompt's score map as a probability ``[B, H, W]`` (fp32)."""
    return log_scores(out, recipe).exp()


def logit_from_log_prob(log_p: Tensor) -> Tensor:
    """``log(p / (1 - p))`` from ``log p``, stably (``1 - p`` as ``-expm1(log p)``), clamped to +-LOGIT_LIMIT."""
    return (log_p - torch.log(-torch.expm1(log_p))).clamp_(-LOGIT_LIMIT, LOGIT_LIMIT)


def mean_probability_logits(logits: Tensor) -> Tensor:
    """Score logits ``[S, ...]`` of ``S`` results -> the logit of their mean probability ``[...]``, in log space
    (``log mean_s sigmoid(z_s)`` by logsumexp; exact, finite where probabilities underflow)."""
    log_p = F.logsigmoid(_wide(logits))
    return logit_from_log_prob(torch.logsumexp(log_p, dim=0) - math.log(logits.shape[0]))


def score_logits(out, recipe: ScoreRecipe = ScoreRecipe()) -> Tensor:
    """Each prompt's score map as the logit of its probability, ``z = log(p / (1 - p))`` ``[B, H, W]`` (fp32).

    This is what the segmentor resizes, once per image, to the image size (its sigmoid then gives the class
    probabilities), for these reasons:

    * exact at SAM3's mask resolution: ``sigmoid(z) = p``;
    * monotone in ``p``: the argmax over prompts, the max over a class's synonyms and a probability threshold
      ``t`` (as ``z >= logit(t)``) give the same decisions on ``z`` as on ``p``, so nothing downstream needs
      probabilities;
    * resizing logits rather than probabilities follows SAM3's own post-processing (``Sam3Processor``
      interpolates mask logits bilinearly, then applies the sigmoid): a mask edge stays a sigmoid transition
      at the resized position instead of a linear ramp of probabilities;
    * one resize of the composed map per prompt, where SegEarth-OV-3 resizes the semantic map and every kept
      instance mask separately before composing. The two agree exactly at the mask resolution; in between
      pixels they differ only in where the interpolation sits relative to the max over instances.
    """
    return logit_from_log_prob(log_scores(out, recipe))

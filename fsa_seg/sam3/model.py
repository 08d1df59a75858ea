"""``SAM3SegModel``: training-free open-vocabulary semantic segmentation with SAM3, optionally with FSA.

Plain torch and transformers (no mmseg); the mmseg segmentor ``SAM3Segmentor`` (``fsa_seg.plugin``) wraps it.

SAM3 (Meta, 2025) segments every instance of a text concept and scores, with its presence head, whether the
concept is in the image. Per crop the vision backbone and the geometry token run once (``decode``); every
prompt is decoded against the same features, ``query_batch_size`` prompts at a time, as the reference forward
runs it; each prompt's heads become one score map by the :class:`~fsa_seg.sam3.scores.ScoreRecipe` (default:
SegEarth-OV-3's ``max(semantic, kept instances) x presence``), kept as logits (``scores.score_logits``).

Resizing: logits, never probabilities. A whole image (``slide_crop=0``) is resized once, from SAM3's mask
resolution straight to its original size (:meth:`image_scores` returns the mask-resolution logits and
:meth:`~fsa_seg.open_vocab.OpenVocabModel.scores_at` resizes them). Sliding windows: each window's logits are
resized to the window, overlapping windows average their logits, then the image is resized to its original size.
:meth:`class_probabilities` turns the final logits into probabilities (sigmoid; the max over synonyms commutes).

FSA (``fsa=True``, paper Sec. 3), after the first pass of a crop: the prompts SAM3 judges present
(``presence_thd``) give the feedback ``A_fb`` (``feedback``: their token log-odds, isolation by the placement
run with uniform attention, the shared core);
only those prompts are run again, from their hidden state stored at the placement (``placement``), with the
adaptation ensemble there, then SAM3's heads; their final maps are weighted by the first pass's presence.
Absent prompts keep their first-pass maps. ``fsa_mode='output'`` instead propagates the present prompts' score
logits with ``A_fb`` (no re-run).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..open_vocab import OpenVocabModel, OutputSettings
from ..settings import RENAMED_SCALES, set_fields
from . import decode
from .feedback import LogOddsFeedback, feedback_maps, present_prompts, propagate_logits, token_log_odds
from .loading import HUB_ID, build_sam3, build_tokenizer
from .placement import Placement
from .scores import ScoreRecipe, _wide, mean_probability_logits, score_logits

# Sam3ImageProcessor normalises 0..1 pixels with mean = std = 0.5, i.e. 127.5 on the 0..255 scale.
SAM3_MEAN = (127.5, 127.5, 127.5)
SAM3_STD = (127.5, 127.5, 127.5)

FSA_MODES = ("attention", "output")


@dataclass(frozen=True)
class SAM3HeadSettings(OutputSettings):
    """The settings of :class:`SAM3SegModel` that act after the vision backbone (see its arguments): the score
    recipe and FSA, and the pieces they stand for, :attr:`recipe` and :attr:`feedback` (built when the settings
    are, so a bad value fails there) and :meth:`placement`. The defaults are those of the pieces."""

    score_source: str = ScoreRecipe.source
    both_reduce: str = ScoreRecipe.reduce
    instance_thd: float = ScoreRecipe.instance_thd
    top_k: int = ScoreRecipe.top_k
    instance_presence: bool = ScoreRecipe.instance_presence
    presence_weighting: bool = ScoreRecipe.presence_weighting
    fsa: bool = False
    fsa_mode: str = "attention"
    fsa_placement: str = "encoder_output"
    fsa_layers: int = 1
    presence_thd: float = LogOddsFeedback.presence_thd
    isolation: str = LogOddsFeedback.isolation
    feedback_scale: float = LogOddsFeedback.feedback_scale
    isolation_scale: float = LogOddsFeedback.isolation_scale
    top_p: float = LogOddsFeedback.top_p
    lamda: float = LogOddsFeedback.lamda
    fsa_strategies: str = LogOddsFeedback.strategies
    fsa_batch_size: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fsa_mode not in FSA_MODES:
            raise ValueError(f"fsa_mode must be one of {FSA_MODES}, got '{self.fsa_mode}'")
        if self.fsa_batch_size < 1:
            raise ValueError("fsa_batch_size must be positive")
        set_fields(self, instance_thd=float(self.instance_thd), top_k=int(self.top_k),
                   instance_presence=bool(self.instance_presence), presence_weighting=bool(self.presence_weighting),
                   fsa=bool(self.fsa), fsa_layers=int(self.fsa_layers), presence_thd=float(self.presence_thd),
                   feedback_scale=float(self.feedback_scale), isolation_scale=float(self.isolation_scale),
                   top_p=float(self.top_p), lamda=float(self.lamda), fsa_batch_size=int(self.fsa_batch_size))
        for piece in ("recipe", "feedback"):  # built, and so checked, now
            getattr(self, piece)
        self.placement(None)  # the encoder's depth not known here: checked by the model (check_settings)

    @cached_property
    def recipe(self) -> ScoreRecipe:
        """How SAM3's outputs become one score map per prompt."""
        return ScoreRecipe(source=self.score_source, reduce=self.both_reduce, instance_thd=self.instance_thd,
                           top_k=self.top_k, instance_presence=self.instance_presence,
                           presence_weighting=self.presence_weighting)

    @cached_property
    def feedback(self) -> LogOddsFeedback:
        """FSA's feedback signal and its modules."""
        return LogOddsFeedback(presence_thd=self.presence_thd, isolation=self.isolation,
                               feedback_scale=self.feedback_scale, isolation_scale=self.isolation_scale,
                               top_p=self.top_p, lamda=self.lamda, strategies=self.fsa_strategies)

    def placement(self, num_layers: Optional[int]) -> Placement:
        """Where FSA acts in an encoder of ``num_layers`` layers (``None``: not known yet)."""
        return Placement.build(self.fsa_placement, self.fsa_layers, num_layers)


@dataclass
class FirstPass:
    """One crop's first pass: the segmentor's output without FSA, and what FSA needs of it.

    logits: ``[Q, H, W]`` score logits at SAM3's mask resolution; presence_logits: ``[Q]``;
    present: ``[K]`` indices of the prompts judged present (empty without FSA); token_log_odds: ``[N, K]`` their
    feedback signal on the encoder token grid; hidden: ``[K, N, D]`` their hidden states at the placement's
    start (``None`` when nothing is re-run).
    """

    logits: Tensor
    presence_logits: Tensor
    present: Tensor
    token_log_odds: Tensor
    hidden: Optional[Tensor] = None


@dataclass
class SharedCrops:
    """A crop batch's part that the variants of one pass share: the vision features, and the first passes
    computed so far (keyed by what a first pass depends on, :meth:`SAM3SegModel.first_pass_key`, and the crop)."""

    vision: decode.VisionFeatures
    first_passes: Dict[Tuple[Any, int], FirstPass] = field(default_factory=dict)


class SAM3SegModel(OpenVocabModel):
    """SAM3 (+ FSA) as an open-vocabulary segmentation model.

    Args (beyond :class:`~fsa_seg.open_vocab.OpenVocabModel`'s; its ``logit_scale`` is unused: SAM3's scores are
    independent per prompt):
        checkpoint: hub id (``facebook/sam3``, gated) or a local folder with the SAM3 weights.
        random_weights / sam3_config: random weights (pipeline checks only) with the tiny test config, or
            ``Sam3Config(**sam3_config)`` (``dict()`` = SAM3's full architecture).
        score_source, both_reduce, instance_thd, top_k, instance_presence, presence_weighting: the score recipe
            (:class:`~fsa_seg.sam3.scores.ScoreRecipe`; defaults: SegEarth-OV-3).
        query_batch_size: prompts decoded together against one crop's vision features.
        fsa, fsa_mode: FSA on/off; ``attention`` (re-run the present prompts with the ensemble at the placement)
            or ``output`` (propagate their score logits with ``A_fb``).
        fsa_placement, fsa_layers: ``last_layer`` | ``last_k`` (the last ``fsa_layers`` encoder layers) |
            ``encoder_output`` (:mod:`~fsa_seg.sam3.placement`).
        presence_thd: a prompt is present (feedback and re-run) if its presence probability reaches it.
        isolation: ``uniform`` | ``mean`` | ``none``; feedback_scale, isolation_scale: paper Eq. 3's scales on
            the log-odds (1 and 1.75, the released ratio), of the feedback and of the subtracted isolation signal
            (``base_scale`` / ``uniform_scale`` are deprecated names); top_p, lamda: pruning and sharpening;
            fsa_strategies: ``both`` (the paper's single ``A_fb``), ``ensemble_results`` (isolation only, pruning
            only and both, each run, their results averaged) or ``ensemble`` (their three ``A_fb`` averaged into
            one) (:class:`~.feedback.LogOddsFeedback`).
        fsa_batch_size: present prompts re-run together.

    The settings (every key above but checkpoint, random_weights, sam3_config and query_batch_size, and the output
    settings) are keyword arguments, :class:`SAM3HeadSettings` (their defaults there); the model holds them as
    ``settings``. Every variant shares
    the vision backbone (ViT, FPN neck, geometry token); variants with the same recipe and first-pass needs also
    share the first pass of the decoder (:class:`SharedCrops`).
    """

    pixel_mean = SAM3_MEAN
    pixel_std = SAM3_STD

    SETTINGS = SAM3HeadSettings
    RENAMED_SETTINGS = RENAMED_SCALES

    def __init__(self, name_path: str, checkpoint: Optional[str] = HUB_ID, random_weights: bool = False,
                 sam3_config: Optional[dict] = None, query_batch_size: int = 16, slide_crop: int = 0,
                 slide_stride: int = 672, crop_batch_size: int = 1, **kwargs) -> None:
        super().__init__(name_path=name_path, slide_crop=slide_crop, slide_stride=slide_stride,
                         crop_batch_size=crop_batch_size, **kwargs)
        if query_batch_size < 1:
            raise ValueError("query_batch_size must be positive")
        self.query_batch_size = int(query_batch_size)
        self.num_layers: Optional[int] = None  # the encoder's depth, known once it is built

        self.sam3 = build_sam3(checkpoint, random_weights, sam3_config, self.run_dtype).to(self.run_device)
        self.num_layers = len(self.sam3.detr_encoder.layers)
        self.check_settings(self.settings)
        self.image_size = int(self.sam3.config.vision_config.backbone_config.image_size)
        self._tokenize = build_tokenizer(checkpoint, random_weights)
        self.encode_queries()

    def check_settings(self, settings: SAM3HeadSettings) -> None:
        """FSA's placement must fit the encoder's depth."""
        settings.placement(self.num_layers)

    # The pieces of the current settings, as attributes.
    recipe = property(lambda self: self.settings.recipe, doc="The score recipe.")
    feedback = property(lambda self: self.settings.feedback, doc="FSA's feedback signal.")
    placement = property(lambda self: self.settings.placement(self.num_layers), doc="Where FSA acts.")
    fsa = property(lambda self: self.settings.fsa)
    fsa_mode = property(lambda self: self.settings.fsa_mode)
    fsa_batch_size = property(lambda self: self.settings.fsa_batch_size)

    def encode_queries(self) -> None:
        """Prompt features, computed once: every crop reuses them."""
        ids, mask = self._tokenize(list(self.query_words))
        self.register_buffer("text_features", self._encode_text(ids, mask), persistent=False)
        self.register_buffer("text_mask", mask.bool().to(self.run_device), persistent=False)

    @torch.no_grad()
    def _encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        chunks = [decode.encode_text(self.sam3, ids[i:i + self.query_batch_size].to(self.run_device),
                                     mask[i:i + self.query_batch_size].to(self.run_device))
                  for i in range(0, ids.shape[0], self.query_batch_size)]
        return torch.cat(chunks)

    # -- OpenVocabModel ------------------------------------------------------------------------------------------
    # crop_scores = scores_from_features(crop_features(crops), crops). The split lets one pass evaluate every
    # VARIANT_KEYS setting (thresholds, score recipe, FSA) on one run of the vision backbone.
    def crop_features(self, crops: Tensor) -> SharedCrops:
        """SAM3's vision backbone (ViT + FPN neck, geometry token) on SAM3-normalised windows ``[n, 3, h, w]``."""
        return SharedCrops(decode.encode_vision(self.sam3, decode.resize_for_sam3(crops, self.image_size)))

    def scores_from_features(self, shared: SharedCrops, crops: Tensor) -> Tensor:
        """Score logits ``[n, Q, h, w]`` of the windows ``crops`` whose shared part is ``shared`` (sliding
        window: each window's logits resized to the window)."""
        logits = self.logits_from_features(shared.vision, crops.shape[0], shared.first_passes)
        return F.interpolate(logits, size=tuple(crops.shape[-2:]), mode="bilinear", align_corners=False)

    def _whole_image_batches(self, images: Sequence[Tensor]) -> Iterator[Tensor]:
        """Whole images resized to SAM3's input size, ``crop_batch_size`` at a time."""
        for start in range(0, len(images), self.crop_batch_size):
            yield torch.cat([decode.resize_for_sam3(img[None].to(self.run_device, self.run_dtype), self.image_size)
                             for img in images[start:start + self.crop_batch_size]])

    def image_scores(self, images: Sequence[Tensor]) -> List[Tensor]:
        """Per-prompt score logits of each normalised image: at SAM3's mask resolution for whole images (resized
        once, by :meth:`scores_at`), at the image's size with sliding windows (window logits averaged)."""
        if self.slide_crop > 0:
            return super().image_scores(images)
        out: List[Tensor] = []
        for crops in self._whole_image_batches(images):
            with torch.no_grad():
                out += [logits.float() for logits in self.crop_logits(crops)]
        return out

    def image_scores_variants(self, images: Sequence[Tensor], states: Sequence[Mapping[str, Any]]
                              ) -> List[List[Tensor]]:
        """:meth:`image_scores` per variant state, the vision backbone once per batch and the decoder once per
        group of :meth:`scoring_groups` (whole images as in :meth:`image_scores`: logits at SAM3's mask
        resolution)."""
        if self.slide_crop > 0:
            return super().image_scores_variants(images, states)
        scoring, index = self.scoring_groups(states)
        out: List[List[Tensor]] = []
        for crops in self._whole_image_batches(images):
            with torch.no_grad():
                shared = SharedCrops(decode.encode_vision(self.sam3, crops))
                per_group = []
                for state in scoring:
                    with self.use_variant(state):
                        per_group.append(self.logits_from_features(shared.vision, crops.shape[0],
                                                                   shared.first_passes).float())
            out += [[per_group[g][i] for g in index] for i in range(crops.shape[0])]
        return out

    def class_probabilities(self, scores: Tensor) -> Tensor:
        """Score logits ``[Q, H, W]`` -> class probabilities ``[K, H, W]``: the max over synonyms, then sigmoid
        (SAM3's prompts are independent: no softmax over them)."""
        return self.max_over_synonyms(scores).sigmoid()

    # -- SAM3 ----------------------------------------------------------------------------------------------------
    def crop_logits(self, crops: Tensor) -> Tensor:
        """Score logits ``[n, Q, H, W]`` at SAM3's mask resolution of crops at SAM3's input size."""
        return self.logits_from_features(decode.encode_vision(self.sam3, crops), crops.shape[0])

    def logits_from_features(self, vision: decode.VisionFeatures, n: int,
                             first_passes: Optional[Dict[Tuple[Any, int], FirstPass]] = None) -> Tensor:
        """Score logits ``[n, Q, H, W]`` at SAM3's mask resolution of the ``n`` crops whose features are
        ``vision``; ``first_passes`` (shared by the variants of one pass) keeps each crop's first pass for the
        variants that need the same one."""
        return torch.stack([self.query_logits(vision, i, first_passes) for i in range(n)])

    def first_pass_key(self) -> Tuple[Any, ...]:
        """What the first pass depends on beyond the crop: the score recipe and, with FSA, where its hidden
        states are kept, which prompts are present and whether the hidden states are needed."""
        if not self.fsa:
            return (self.recipe,)
        return (self.recipe, self.placement.start(self.num_layers), self.feedback.presence_thd, self._keeps_hidden)

    def query_logits(self, vision: decode.VisionFeatures, index: int,
                     first_passes: Optional[Dict[Tuple[Any, int], FirstPass]] = None) -> Tensor:
        """Score logits ``[Q, H, W]`` of every prompt on crop ``index``: the first pass (from ``first_passes``
        when a variant of the same pass computed it; a variant without FSA also takes an FSA variant's), then FSA
        if on."""
        key = (self.first_pass_key(), index)
        first = first_passes.get(key) if first_passes is not None else None
        if first is None and first_passes and not self.fsa:
            # without FSA only the logits are used: those of an FSA variant's first pass with the same recipe
            first = next((fp for (k, i), fp in first_passes.items() if i == index and k[0] == self.recipe), None)
        if first is None:
            first = self.first_pass(vision, index)
            if first_passes is not None:
                first_passes[key] = first
        return self.fsa_pass(vision, index, first) if self.fsa else first.logits

    def _prompts(self, vision: decode.VisionFeatures, index: int, prompts: Tensor
                 ) -> Tuple[decode.VisionFeatures, Tensor, Tensor]:
        """Crop ``index``'s features for the ``prompts`` (indices), and their prompt tokens (text + geometry)."""
        vis = vision.expand(index, prompts.numel())
        text, mask = decode.prompt_features(vis, self.text_features[prompts], self.text_mask[prompts])
        return vis, text, mask

    @property
    def _keeps_hidden(self) -> bool:
        return self.fsa and (self.fsa_mode == "attention" or self.feedback.isolation == "uniform")

    def first_pass(self, vision: decode.VisionFeatures, index: int) -> FirstPass:
        """SAM3 as its authors run it on crop ``index``, ``query_batch_size`` prompts at a time; with FSA on, also
        the present prompts' feedback signal and hidden states at the placement's start."""
        start_layer = self.placement.start(self.num_layers) if self.fsa else self.num_layers
        grid = vision.token_grid
        logits, presence, present, tokens, hidden = [], [], [], [], []
        for start in range(0, self.num_queries, self.query_batch_size):
            prompts = torch.arange(start, min(start + self.query_batch_size, self.num_queries),
                                   device=self.run_device)
            vis, text, mask = self._prompts(vision, index, prompts)
            state = decode.run_encoder_layers(self.sam3, decode.encoder_input(self.sam3, vis, text, mask), text,
                                              range(start_layer))
            encoded = decode.run_encoder_layers(self.sam3, state, text, range(start_layer, self.num_layers)).hidden
            out = decode.run_heads(self.sam3, encoded, state, vis, text, mask)
            logits.append(score_logits(out, self.recipe))
            batch_presence = _wide(out.presence_logits).flatten()
            presence.append(batch_presence)
            if not self.fsa:
                continue
            keep = present_prompts(batch_presence, self.feedback.presence_thd)
            present.append(prompts[keep])
            tokens.append(token_log_odds(out.semantic_seg[keep, 0], batch_presence[keep], grid))
            if self._keeps_hidden:
                hidden.append(state.hidden[keep])
        logits, presence = torch.cat(logits), torch.cat(presence)
        if not self.fsa:
            empty = torch.zeros(0, dtype=torch.long, device=logits.device)
            return FirstPass(logits, presence, empty, logits.new_zeros(grid[0] * grid[1], 0))
        return FirstPass(logits, presence, torch.cat(present), torch.cat(tokens, dim=1),
                         torch.cat(hidden) if hidden else None)

    def fsa_pass(self, vision: decode.VisionFeatures, index: int, first: FirstPass) -> Tensor:
        """FSA on crop ``index`` after its first pass: ``A_fb`` of the present prompts, then their adapted maps
        (:meth:`adapted_logits`). Nothing present: the first pass unchanged. ``fsa_strategies='ensemble_results'``:
        one ``A_fb`` per strategy (the uniform pass shared), each adapted pass run, the present prompts' results
        averaged as probabilities (absent prompts are the same in all three: kept as they are)."""
        if first.present.numel() == 0:
            return first.logits
        uniform = self.uniform_log_odds(vision, index, first) if self.feedback.isolation == "uniform" else None
        columns = torch.arange(first.present.numel(), device=first.present.device)
        maps = feedback_maps(first.token_log_odds, columns, self.feedback, uniform)
        if len(maps) == 1:
            return self.adapted_logits(vision, index, first, maps[0])
        results = torch.stack([self.adapted_logits(vision, index, first, a_fb)[first.present] for a_fb in maps])
        logits = first.logits.clone()
        logits[first.present] = mean_probability_logits(results).to(logits.dtype)
        return logits

    def _stored_state(self, vis: decode.VisionFeatures, text: Tensor, mask: Tensor, hidden: Tensor
                      ) -> decode.EncoderState:
        return replace(decode.encoder_input(self.sam3, vis, text, mask), hidden=hidden)

    def uniform_log_odds(self, vision: decode.VisionFeatures, index: int, first: FirstPass) -> Tensor:
        """``[N, K]``: the present prompts' token log-odds with uniform attention at the placement (isolation
        ``uniform``); the semantic head only, with the first pass's presence."""
        out = []
        for start in range(0, first.present.numel(), self.fsa_batch_size):
            part = slice(start, start + self.fsa_batch_size)
            prompts = first.present[part]
            vis, text, mask = self._prompts(vision, index, prompts)
            state = self._stored_state(vis, text, mask, first.hidden[part])
            encoded = self.placement.uniform(self.sam3, state, text)
            semantic = decode.semantic_logits(self.sam3, encoded, vis, text, mask)
            out.append(token_log_odds(semantic, first.presence_logits[prompts], vision.token_grid))
        return torch.cat(out, dim=1)

    def adapted_logits(self, vision: decode.VisionFeatures, index: int, first: FirstPass, a_fb: Tensor) -> Tensor:
        """Every prompt's score logits ``[Q, H, W]`` with FSA given ``A_fb [1, N, N]``: the present prompts adapted
        (re-run at the placement, or their logits propagated in ``output`` mode) and weighted by the first pass's
        presence; the absent ones as in the first pass."""
        logits = first.logits.clone()
        if self.fsa_mode == "output":
            logits[first.present] = propagate_logits(first.logits[first.present], a_fb, vision.token_grid)
            return logits
        a_fb = a_fb.to(self.run_dtype)  # once, not in every product of the ensemble
        for start in range(0, first.present.numel(), self.fsa_batch_size):
            part = slice(start, start + self.fsa_batch_size)
            prompts = first.present[part]
            vis, text, mask = self._prompts(vision, index, prompts)
            state = self._stored_state(vis, text, mask, first.hidden[part])
            encoded = self.placement.adapted(self.sam3, state, text, a_fb)
            out = decode.run_heads(self.sam3, encoded, state, vis, text, mask)
            out = replace(out, presence_logits=first.presence_logits[prompts, None])
            logits[prompts] = score_logits(out, self.recipe)
        return logits

"""FSA's internals as data: for one image and chosen pixels, the attention rows FSA builds and each strategy's
prediction alone, from the library's own forward.

CLIP models (:class:`~fsa_seg.clip_model.CLIPSegModel`, any base method): :func:`explain` returns an
:class:`Explanation`:

* ``points``: the pixels asked for, ``(x, y)`` in the image;
* ``crops``: one :class:`CropRows` per sliding window (or the whole image) holding at least one of the points:
  its box ``(y1, y2, x1, x2)``, its padding, which points it holds and their :class:`AttentionRows`;
* ``predictions``: labels ``[H, W]`` per strategy (:data:`STRATEGIES`): ``base`` (no FSA), ``isolation``
  (attention isolation only: no pruning, no ensemble), ``pruning`` (confidence-based pruning only: no isolation,
  no ensemble), ``both`` (isolation and pruning, no ensemble: the output is ``A_fb V``) and ``ensemble`` (the
  full FSA: isolation, pruning and the adaptation ensemble, paper Sec. 3 / Eq. 3-8, with the model's top-p and
  lamda). The paper's Table 7 ablates these three modules;
* ``kept_share``: the share of entries top-p pruning keeps, for every patch row of every window (Fig. 9's
  statistic), as one flat tensor.

:class:`AttentionRows` (one window, ``Q`` query pixels, the ``h x w`` patch grid of the last block's output;
columns are the patch tokens, row-major, the class token's column left out; ``maps`` reshapes a field to
``[Q, h, w]``):

* ``query_tokens`` ``[Q]``: the patch index ``r * w + c`` of each query pixel;
* ``base`` ``[Q, h*w]``: rows of the base attention ``A0`` (mean over the heads when per head);
* ``isolated``: the affinity ``s_ij = 1 / (1 + KL(q_i || q_j))`` of the isolated class distributions, before
  pruning;
* ``kept`` (bool): the entries top-p pruning keeps; ``kept_share`` ``[h*w]``: the kept share of every patch
  row (counted over the whole row, as the forward prunes it, class token included where attended);
* ``sharpened``: ``A_fb`` (after pruning, sharpening and the softmax);
* ``ensembled``: rows of ``(A_fb A0 + A0 A_fb + A_fb) / 3``.

One backbone pass per image: the windows' backbone features (``crop_features``) are computed once and every
strategy re-runs only the last block and FSA (the variants of :meth:`~fsa_seg.open_vocab.OpenVocabModel.
predict_variants`); the rows are recorded during the full-FSA strategy's own forward by an
:class:`~fsa_seg.fsa.FSATrace` (rows only: nothing ``N x N`` beyond what that forward holds).

SAM3 models (:class:`~fsa_seg.sam3.model.SAM3SegModel`): :func:`explain` returns a :class:`SAM3Explanation`
(whole-image inference, ``slide_crop=0``): presence per prompt, the present prompts (those fed back), each prompt's
semantic map and kept instances, the feedback rows on the encoder token grid at the model's placement and the
predictions without and with FSA (``strategies`` does not apply: SAM3's own ``fsa_strategies`` setting chooses how
its three strategies combine). One vision-backbone pass; the decoder runs for the first pass, FSA and once more for
the semantic maps and instances.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .fsa import FSATrace

#: The strategies :func:`explain` predicts with, each as the changes of a variant of the model's settings.
STRATEGY_NAMES = ("base", "isolation", "pruning", "both", "ensemble")

Window = Tuple[int, int, int, int]


@dataclass
class AttentionRows:
    """One window's rows for ``Q`` query pixels on the ``grid`` ``(h, w)`` (see the module docstring)."""

    grid: Tuple[int, int]
    query_tokens: Tensor
    base: Tensor
    isolated: Tensor
    kept: Tensor
    kept_share: Tensor
    sharpened: Tensor
    ensembled: Tensor

    FIELDS = ("base", "isolated", "kept", "sharpened", "ensembled")

    def maps(self, name: str) -> Tensor:
        """Field ``name`` (one of :attr:`FIELDS`, or ``kept_share``) on the grid: ``[Q, h, w]`` (``[h, w]``)."""
        if name == "kept_share":
            return self.kept_share.reshape(self.grid)
        if name not in self.FIELDS:
            raise ValueError(f"unknown field '{name}'; choose one of {self.FIELDS + ('kept_share',)}")
        rows = getattr(self, name)
        return rows.reshape(rows.shape[0], *self.grid)


@dataclass
class CropRows:
    """A window holding query points: ``box`` ``(y1, y2, x1, x2)`` in image pixels, its zero ``padding``
    ``(left, right, top, bottom)`` to the patch multiple, ``points`` (indices into :attr:`Explanation.points`,
    the order of the rows) and their ``rows``."""

    box: Window
    padding: Tuple[int, int, int, int]
    points: List[int]
    rows: AttentionRows


@dataclass
class Explanation:
    """What :func:`explain` returns for a CLIP model (see the module docstring)."""

    image_size: Tuple[int, int]
    points: List[Tuple[int, int]]
    crops: List[CropRows]
    predictions: Dict[str, Tensor]
    kept_share: Tensor
    settings: Dict[str, Any] = field(default_factory=dict)

    def rows_of(self, point: int) -> List[Tuple[CropRows, int]]:
        """Every window holding point ``point`` (an index into :attr:`points`) and that point's row in it."""
        return [(crop, crop.points.index(point)) for crop in self.crops if point in crop.points]

    def image_map(self, point: int, name: str = "sharpened", mode: str = "nearest") -> Tensor:
        """Point ``point``'s row ``name`` (an :attr:`AttentionRows.FIELDS` field) over the image, ``[H, W]`` fp32:
        each window's row map resized (``mode``: ``nearest`` shows the patches, or ``bilinear``) to the padded
        window, cut to it and placed at its box; where windows overlap, their mean; NaN outside every window
        holding the point."""
        import torch.nn.functional as F  # noqa: PLC0415

        total = torch.zeros(self.image_size)
        count = torch.zeros(self.image_size)
        for crop, row in self.rows_of(point):
            y1, y2, x1, x2 = crop.box
            left, right, top, bottom = crop.padding
            grid_map = crop.rows.maps(name)[row].float()[None, None]
            size = (y2 - y1 + top + bottom, x2 - x1 + left + right)
            up = F.interpolate(grid_map, size=size, mode=mode)[0, 0]
            total[y1:y2, x1:x2] += up[top:top + y2 - y1, left:left + x2 - x1]
            count[y1:y2, x1:x2] += 1
        return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


@dataclass
class SAM3Explanation:
    """What :func:`explain` returns for a SAM3 model (whole image, one crop).

    prompts: the text prompts (the model's queries); presence ``[P]``: SAM3's presence probability per prompt;
    present ``[K]``: the prompts judged present (``presence_thd``), those whose signal is fed back and that are
    re-run; semantic ``[P, H', W']``: each prompt's semantic logits at SAM3's mask resolution (first pass);
    instances: per prompt, the indices of the instances kept by the score recipe (``instance_thd``, ``top_k``)
    and their scores; grid: the encoder token grid; query_tokens ``[Q]``: the token of each point;
    feedback: rows ``[Q, N]`` of the paper's single ``A_fb`` built from the present prompts (``isolated``, ``kept``,
    ``sharpened``; empty when no prompt is present) and, with ``fsa_strategies='both'`` in ``attention`` mode,
    ``[K, Q, N]`` rows per present prompt at the placement: ``base`` (``A0``, mean over the heads, of the first
    adapted encoder layer; the identity at the encoder output) and ``ensembled`` (``(A_fb A0 + A0 A_fb + A_fb) / 3``
    there; ``A_fb`` itself at the encoder output); kept_share ``[N]``: every token row's kept share;
    predictions: labels ``[H, W]``, ``base`` (no FSA) and ``fsa``.
    """

    image_size: Tuple[int, int]
    points: List[Tuple[int, int]]
    prompts: List[str]
    presence: Tensor
    present: Tensor
    semantic: Tensor
    instances: List[Dict[str, Tensor]]
    grid: Tuple[int, int]
    query_tokens: Tensor
    feedback: Dict[str, Tensor]
    kept_share: Tensor
    placement: str
    predictions: Dict[str, Tensor]


def _strategy_changes(model) -> Dict[str, Dict[str, Any]]:
    """The variant changes of each strategy of :data:`STRATEGY_NAMES` on top of ``model``'s settings."""
    keys = model.VARIANT_KEYS
    if "fsa_ensemble" not in keys:
        raise ValueError(f"{type(model).__name__} has no fsa_ensemble switch: its strategies cannot be separated")
    return {"base": dict(fsa=False),
            "isolation": dict(fsa=True, top_p=1.0, fsa_ensemble=False),
            "pruning": dict(fsa=True, fsa_ensemble=False, isolation_scale=0.0),
            "both": dict(fsa=True, fsa_ensemble=False),
            "ensemble": dict(fsa=True, fsa_ensemble=True)}


def _as_image(image: Union[Tensor, np.ndarray]) -> Tensor:
    """RGB pixels 0..255: ``[3, H, W]`` tensor or ``[H, W, 3]`` array -> ``[3, H, W]`` fp32 tensor."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image must be an RGB array [H, W, 3], got shape {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be RGB pixels [3, H, W] (0..255), got {getattr(image, 'shape', type(image))}")
    return image.float()


def _check_points(points: Sequence[Tuple[int, int]], size: Tuple[int, int]) -> List[Tuple[int, int]]:
    out = []
    for p in points:
        x, y = (int(v) for v in p)
        if not (0 <= x < size[1] and 0 <= y < size[0]):
            raise ValueError(f"point (x={x}, y={y}) is outside the {size[1]}x{size[0]} image")
        out.append((x, y))
    return out


def token_of(point: Tuple[int, int], box: Window, padding: Tuple[int, int, int, int],
             crop_size: Tuple[int, int], grid: Tuple[int, int]) -> int:
    """The patch index ``r * w + c`` of image pixel ``point`` ``(x, y)`` in the window ``box`` padded by
    ``padding`` to ``crop_size`` ``(H, W)``, on the output ``grid`` ``(h, w)`` that covers the padded window (the
    scores are resized from it to the window)."""
    x, y = point
    yc, xc = y - box[0] + padding[2], x - box[2] + padding[0]
    r = min(grid[0] - 1, yc * grid[0] // crop_size[0])
    c = min(grid[1] - 1, xc * grid[1] // crop_size[1])
    return int(r * grid[1] + c)


def rows_of_trace(trace: FSATrace, select: Tensor, item: int) -> AttentionRows:
    """The :class:`AttentionRows` of the trace's queries ``select`` (all of batch item ``item``), patch columns."""
    cols = trace.patch_tokens
    offset = cols.start or 0
    return AttentionRows(grid=trace.grid, query_tokens=trace.tokens[select].cpu() - offset,
                         base=trace.base[select][:, cols].cpu(), isolated=trace.isolated[select][:, cols].cpu(),
                         kept=trace.kept[select][:, cols].cpu(), kept_share=trace.kept_share[item, cols].cpu(),
                         sharpened=trace.sharpened[select][:, cols].cpu(),
                         ensembled=trace.ensembled[select][:, cols].cpu())


def explain(model, image: Union[Tensor, np.ndarray], points: Sequence[Tuple[int, int]],
            strategies: Sequence[str] = STRATEGY_NAMES, cache: Optional[Dict[Any, Any]] = None
            ) -> Union[Explanation, SAM3Explanation]:
    """FSA's internals for ``image`` (RGB pixels 0..255, ``[3, H, W]`` tensor or ``[H, W, 3]`` array) at the
    ``points`` ``(x, y)``: an :class:`Explanation` for a CLIP model (the ``strategies`` predicted, of
    :data:`STRATEGY_NAMES`), a :class:`SAM3Explanation` for SAM3. The model's own settings (top-p, lamda, base
    method) are used; its ``fsa`` switch is not (each strategy sets it): other settings via
    ``with model.variant(top_p=...): explain(...)``.

    ``cache`` (CLIP, optional): a dict kept by the caller for one image and one model; the windows' backbone
    features are stored in it on the first call and reused by the next (then only the last block and FSA run)."""
    from .sam3.model import SAM3SegModel  # noqa: PLC0415 - SAM3 needs transformers; import only here

    pixels = _as_image(image)
    size = tuple(pixels.shape[-2:])
    points = _check_points(points, size)
    if isinstance(model, SAM3SegModel):
        return _explain_sam3(model, pixels, points)
    unknown = [s for s in strategies if s not in STRATEGY_NAMES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {STRATEGY_NAMES}")
    return _explain_clip(model, pixels, points, list(strategies), cache)


@torch.no_grad()
def _explain_clip(model, pixels: Tensor, points: List[Tuple[int, int]], strategies: List[str],
                  cache: Optional[Dict[Any, Any]] = None) -> Explanation:
    from .sliding_window import slide_inference_shared  # noqa: PLC0415

    changes = _strategy_changes(model)
    names = list(dict.fromkeys(strategies + ["ensemble"]))               # the full FSA is always traced
    states = [model.variant_state(changes[name]) for name in names]
    scoring, index = model.scoring_groups(states)
    traced_group = index[names.index("ensemble")]
    img = model.normalise(pixels)
    current: Dict[str, Any] = {}
    crops_out: List[CropRows] = []
    shares: List[Tensor] = []

    def on_chunk(chunk) -> None:
        current["chunk"] = chunk

    def shared(crops: Tensor):
        key = ("windows", tuple((int(i), tuple(w), tuple(p)) for i, w, p in current["chunk"]))
        if cache is not None and key in cache:
            return cache[key]
        crops = crops.to(model.run_device, model.run_dtype)
        out = model.crop_features(crops), crops
        if cache is not None:
            cache[key] = out
        return out

    def scorer(group: int):
        state = scoring[group]

        def score(shared_out) -> Tensor:
            features, crops = shared_out
            with model.use_variant(state):
                if group != traced_group:
                    return model.scores_from_features(features, crops)
                chunk = current["chunk"]
                crop_size = tuple(crops.shape[-2:])
                held = [[k for k, (x, y) in enumerate(points) if win[0] <= y < win[1] and win[2] <= x < win[3]]
                        for _, win, _ in chunk]

                def locate(grid, patch_tokens):
                    offset = patch_tokens.start or 0
                    items = [i for i, ks in enumerate(held) for _ in ks]
                    tokens = [offset + token_of(points[k], chunk[i][1], chunk[i][2], crop_size, grid)
                              for i, ks in enumerate(held) for k in ks]
                    return torch.tensor(items, dtype=torch.long), torch.tensor(tokens, dtype=torch.long)

                trace = FSATrace(locate=locate)
                out = model.scores_from_features(features, crops, trace=trace)
                cols = trace.patch_tokens
                for i, (_, win, pad) in enumerate(chunk):
                    shares.append(trace.kept_share[i, cols].flatten().cpu())
                    if held[i]:
                        select = torch.nonzero(trace.items == i).flatten()
                        crops_out.append(CropRows(box=tuple(win), padding=tuple(pad), points=held[i],
                                                  rows=rows_of_trace(trace, select, i)))
                return out
        return score

    groups = model._window_groups([img])
    per_image = []
    for group_images, crop, stride in groups:
        per_image += slide_inference_shared(group_images, shared, [scorer(g) for g in range(len(scoring))],
                                            model.num_queries, crop, stride, pad_multiple=model.pad_multiple,
                                            crop_batch_size=model.crop_batch_size, on_chunk=on_chunk)
    scores = per_image[0]
    predictions = {}
    for name, state, g in zip(names, states, index):
        if name not in strategies:
            continue
        with model.use_variant(state):
            predictions[name] = model.predict_scores(model.scores_at(scores[g], img, pixels.shape[-2:])).labels.cpu()
    settings = {k: v for k, v in model.variant_settings().items()}
    return Explanation(image_size=tuple(pixels.shape[-2:]), points=points, crops=crops_out, predictions=predictions,
                       kept_share=torch.cat(shares) if shares else torch.zeros(0), settings=settings)


def _kept_instances(out, recipe) -> List[Dict[str, Tensor]]:
    """Per prompt, the instances the score recipe keeps (the rule of ``scores._log_instances``): those whose score x
    presence reaches ``instance_thd``, at most ``top_k`` of them, best first; their indices and score x presence."""
    import math  # noqa: PLC0415

    import torch.nn.functional as F  # noqa: PLC0415

    criterion = F.logsigmoid(out.pred_logits.double()) + F.logsigmoid(out.presence_logits.double().flatten())[:, None]
    kept = []
    for row in criterion:
        keep = (row >= math.log(recipe.instance_thd) if recipe.instance_thd > 0
                else torch.ones_like(row, dtype=torch.bool))
        index = torch.nonzero(keep).flatten()
        index = index[row[index].argsort(descending=True)]
        if recipe.top_k:
            index = index[:recipe.top_k]
        kept.append({"index": index.cpu(), "score": row[index].exp().float().cpu()})
    return kept


def _layer_rows(model, first, vision, tokens: Tensor, a_fb: Tensor) -> Tuple[Tensor, Tensor]:
    """At the first adapted encoder layer: rows ``[K, Q, N]`` of each present prompt's ``A0`` (mean over the heads)
    and of its ensemble ``(A_fb A0 + A0 A_fb + A_fb) / 3``; ``A0 = softmax(q k^T scale)`` is formed a block of rows
    at a time, never whole."""
    from dataclasses import replace  # noqa: PLC0415

    from .sam3 import decode  # noqa: PLC0415

    layer = model.sam3.detr_encoder.layers[model.placement.start(model.num_layers)]
    scale = layer.self_attn.scaling
    base_out, ens_out = [], []
    for start in range(0, first.present.numel(), model.fsa_batch_size):
        part = slice(start, start + model.fsa_batch_size)
        prompts = first.present[part]
        vis, text, mask = model._prompts(vision, 0, prompts)
        state = replace(decode.encoder_input(model.sam3, vis, text, mask), hidden=first.hidden[part])
        q, k, _ = (t.double() for t in decode.layer_qkv(layer, state))            # [K, h, N, d]
        fb = a_fb[0].double()                                                      # [N, N]
        a0_rows = (q[:, :, tokens] @ k.transpose(-1, -2) * scale).softmax(dim=-1)  # [K, h, Q, N]
        n = k.shape[2]
        fb_a0 = a0_rows.new_zeros(a0_rows.shape)
        block = max(1, (1 << 20) // max(1, q.shape[0] * q.shape[1] * n))
        for j in range(0, n, block):                                                # rows of A_fb A0, blockwise
            a0_block = (q[:, :, j:j + block] @ k.transpose(-1, -2) * scale).softmax(dim=-1)
            fb_a0 += fb[tokens, j:j + block] @ a0_block
        ens = (fb_a0 + a0_rows @ fb + fb[tokens]) / 3.0
        base_out.append(a0_rows.mean(dim=1))
        ens_out.append(ens.mean(dim=1))
    return torch.cat(base_out).float(), torch.cat(ens_out).float()


@torch.no_grad()
def _explain_sam3(model, pixels: Tensor, points: List[Tuple[int, int]]) -> SAM3Explanation:
    from .sam3 import decode  # noqa: PLC0415
    from .sam3.feedback import log_odds_inputs  # noqa: PLC0415
    from .fsa import feedback_attention  # noqa: PLC0415

    if model.slide_crop > 0:
        raise ValueError("explain takes SAM3 on whole images: set model.slide_crop=0")
    size = tuple(pixels.shape[-2:])
    img = model.normalise(pixels)
    crops = decode.resize_for_sam3(img[None].to(model.run_device, model.run_dtype), model.image_size)
    vision = decode.encode_vision(model.sam3, crops)                              # the one backbone pass
    grid = vision.token_grid
    tokens = torch.tensor([token_of(p, (0, size[0], 0, size[1]), (0, 0, 0, 0), size, grid) for p in points],
                          dtype=torch.long, device=model.run_device)
    with (contextlib.nullcontext(model) if model.fsa else model.variant(fsa=True)) as fsa_model:
        first = fsa_model.first_pass(vision, 0)
        fsa_logits = fsa_model.fsa_pass(vision, 0, first)
        # the first pass's heads again, for what its score map does not keep: semantic maps and instances
        semantic, instances = [], []
        for start in range(0, model.num_queries, model.query_batch_size):
            prompts = torch.arange(start, min(start + model.query_batch_size, model.num_queries),
                                   device=model.run_device)
            vis, text, mask = model._prompts(vision, 0, prompts)
            enc = decode.run_encoder_layers(model.sam3, decode.encoder_input(model.sam3, vis, text, mask), text,
                                            range(model.num_layers)).hidden
            out = decode.run_heads(model.sam3, enc, decode.encoder_input(model.sam3, vis, text, mask), vis, text, mask)
            semantic.append(out.semantic_seg[:, 0].float().cpu())
            instances += _kept_instances(out, fsa_model.recipe)
        n = grid[0] * grid[1]
        q = len(points)
        feedback: Dict[str, Tensor] = {}
        kept_share = torch.ones(0)
        if first.present.numel():
            params = fsa_model.feedback
            uniform = fsa_model.uniform_log_odds(vision, 0, first) if params.isolation == "uniform" else None
            columns = torch.arange(first.present.numel(), device=first.present.device)
            base, glob = log_odds_inputs(first.token_log_odds, columns, params, uniform)
            trace = FSATrace(torch.zeros(q, dtype=torch.long), tokens)
            a_fb = feedback_attention(base, glob, params.core_params(), trace=trace)   # the paper's single A_fb
            feedback = {"isolated": trace.isolated.cpu(), "kept": trace.kept.cpu(), "sharpened": trace.sharpened.cpu()}
            kept_share = trace.kept_share[0].cpu()
            k = first.present.numel()
            if params.strategies != "both":          # several A_fb: the rows above are those of 'both'
                pass
            elif fsa_model.placement.layers == 0:      # the encoder output: A0 = I, the ensemble is A_fb
                feedback["base"] = torch.eye(n)[tokens.cpu()].expand(k, q, n)
                feedback["ensembled"] = trace.sharpened.cpu().expand(k, q, n)
            elif fsa_model.fsa_mode == "attention":
                base_rows, ens_rows = _layer_rows(fsa_model, first, vision, tokens, a_fb)
                feedback["base"], feedback["ensembled"] = base_rows.cpu(), ens_rows.cpu()
    predictions = {}
    # the thresholds of the prediction are not FSA settings: the model's own serve both
    predictions["base"] = model.predict_scores(model.scores_at(first.logits.float(), img, size)).labels.cpu()
    predictions["fsa"] = model.predict_scores(model.scores_at(fsa_logits.float(), img, size)).labels.cpu()
    return SAM3Explanation(image_size=size, points=points, prompts=list(model.query_words),
                           presence=first.presence_logits.float().sigmoid().cpu(), present=first.present.cpu(),
                           semantic=torch.cat(semantic), instances=instances, grid=tuple(grid),
                           query_tokens=tokens.cpu(), feedback=feedback, kept_share=kept_share,
                           placement=fsa_model.placement.name, predictions=predictions)

"""Feedback-driven Self-adaptive Attention (FSA), exact and lean.

Paper: "Plug-in Feedback Self-adaptive Attention in CLIP for Training-free Open-Vocabulary Segmentation"
(ICCV 2025), Sec. 3. Given the base attention ``A0`` of a model's last block, its values ``V`` and the
model's own head that maps attended values to class logits, FSA

1. *attention isolation*: scores every token with the base output (logit scale 20) minus the output of
   uniform attention (logit scale 35), softmax over classes -> ``q_i``;
2. builds the affinity ``s_ij = 1 / (1 + max(KL(q_i || q_j), 0))``;
3. *confidence-based pruning*: keeps, per row, the largest entries whose softmax mass sums to at most
   ``top_p`` (the largest is always kept; ``top_p = 1`` keeps every entry);
4. sharpens the kept entries, ``w = s * exp(lamda * s)``, and normalises, ``A_fb = softmax(w)``;
5. *adaptation ensemble*: returns ``(A_fb A0 + A0 A_fb + A_fb) V / 3``.

The released implementation materialises an ``[N, N, C]`` KL tensor, repeats the head-independent
``A_fb`` (and, for ProxyCLIP, ``A0``) per head and forms the ``N x N x N`` products ``A_fb A0``. Here the
same numbers come from exact cheaper forms:

* ``KL(q_i || q_j) = sum_c q_ic log q_ic - sum_c q_ic log q_jc``: a row entropy term minus one matmul;
* the ensemble applied to ``V`` by associativity: ``A_fb (A0 V) + A0 (A_fb V) + A_fb V``;
* ``A_fb`` (and a head-independent ``A0``) is computed once and shared by all heads, and multiplies the
  heads-merged values ``[N, h * d]`` in one matrix product;
* the pruning threshold per row comes from one sort of that row's values (no indices, no inverse
  permutation; numpy's SIMD sort on CPU, bit-identical to torch's), and ``A_fb`` is built in row chunks
  so no temporary exceeds a memory budget.

Probabilities are computed in fp32 even when the model runs in fp16: the released ``log(p + 1e-10)``
underflows in fp16.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

# Maps attended values, heads merged ``[B, N, heads * head_dim]``, to unscaled class logits ``[B, N, C]``
# (for CLIP: out-proj, ln_post, proj, L2-normalise, dot with the normalised text embeddings).
LogitHead = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class FSAParams:
    """FSA hyperparameters, with the released defaults."""

    top_p: float = 0.45
    lamda: float = 3.0
    base_scale: float = 20.0
    uniform_scale: float = 35.0
    eps: float = 1e-10
    # Largest number of elements of one [rows, N] temporary while building A_fb (memory budget).
    chunk_elems: int = 1 << 20

    def __post_init__(self) -> None:
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"FSA top_p must be in (0, 1], got {self.top_p}")
        if self.chunk_elems < 1:
            raise ValueError(f"FSA chunk_elems must be positive, got {self.chunk_elems}")


class FSATrace:
    """Recorder of FSA's rows for chosen query tokens: pass one as ``trace=`` to :func:`feedback_attention`,
    :meth:`FeedbackSelfAdaptiveAttention.forward` (or ``CLIPSegModel.logits_from_features``) and it keeps, for
    each query ``(items[k], tokens[k])`` (batch item, token index), the rows the forward computes:

    * ``base`` ``[Q, N]``: the base attention ``A0`` (mean over the heads when per head);
    * ``isolated`` ``[Q, N]``: the affinity ``s_ij = 1 / (1 + KL(q_i || q_j))`` of the isolated class
      distributions, before pruning;
    * ``kept`` ``[Q, N]`` (bool): the entries top-p pruning keeps;
    * ``sharpened`` ``[Q, N]``: ``A_fb``, after pruning, sharpening and the softmax;
    * ``ensembled`` ``[Q, N]``: ``(A_fb A0 + A0 A_fb + A_fb) / 3`` (mean over the heads when ``A0`` is per head),
      or ``A_fb`` where the ensemble is off;
    * ``kept_share`` ``[B, N]``: for every row (not only the queries) the share of its entries pruning keeps.

    Rows only: nothing of size ``N x N`` beyond what the forward holds. ``locate`` (optional) is called by a
    last-block path as ``locate(grid, patch_tokens) -> (items, tokens)`` when the token grid is known (the queries
    are then given as image positions). Without a trace nothing of this runs and the numbers are the same.
    """

    def __init__(self, items: Optional[Tensor] = None, tokens: Optional[Tensor] = None,
                 locate: Optional[Callable[[Tuple[int, int], slice], Tuple[Tensor, Tensor]]] = None) -> None:
        if (items is None) != (tokens is None) or (items is None and locate is None):
            raise ValueError("FSATrace needs the query rows: items and tokens, or locate")
        self.items = None if items is None else torch.as_tensor(items, dtype=torch.long).flatten()
        self.tokens = None if tokens is None else torch.as_tensor(tokens, dtype=torch.long).flatten()
        if self.items is not None and self.items.shape != self.tokens.shape:
            raise ValueError(f"FSATrace: {self.items.numel()} items for {self.tokens.numel()} tokens")
        self.locate = locate
        self.grid: Optional[Tuple[int, int]] = None
        self.patch_tokens: Optional[slice] = None
        self.base: Optional[Tensor] = None
        self.isolated: Optional[Tensor] = None
        self.kept: Optional[Tensor] = None
        self.sharpened: Optional[Tensor] = None
        self.ensembled: Optional[Tensor] = None
        self.kept_share: Optional[Tensor] = None

    # -- called by the forward ------------------------------------------------------------------------------
    def on_grid(self, grid: Tuple[int, int], patch_tokens: slice) -> None:
        """The last block's output grid and where its patch tokens sit; resolves the queries with ``locate``."""
        self.grid, self.patch_tokens = tuple(grid), patch_tokens
        if self.locate is not None:
            items, tokens = self.locate(self.grid, patch_tokens)
            self.items = torch.as_tensor(items, dtype=torch.long).flatten()
            self.tokens = torch.as_tensor(tokens, dtype=torch.long).flatten()

    def _index(self, device: torch.device) -> Tuple[Tensor, Tensor]:
        if self.items is None:
            raise ValueError("FSATrace: the query rows are not known yet (locate runs in on_grid)")
        return self.items.to(device), self.tokens.to(device)

    def record_base(self, a0: Tensor) -> None:
        """Rows of ``A0`` ``[B, N, N]`` or ``[B, h, N, N]`` (then their mean over the heads), in fp32 or wider."""
        items, tokens = self._index(a0.device)
        rows = a0[items, tokens] if a0.dim() == 3 else a0[items, :, tokens].mean(dim=1)
        self.base = rows.to(torch.promote_types(rows.dtype, torch.float32))

    def _prepare(self, batch: int, n_tokens: int, like: Tensor) -> None:
        if self.kept_share is None:
            q = self.items.numel()
            self.kept_share = torch.ones(batch, n_tokens, dtype=torch.float32, device=like.device)
            self.isolated = like.new_zeros(q, n_tokens)
            self.sharpened = like.new_zeros(q, n_tokens)
            self.kept = torch.ones(q, n_tokens, dtype=torch.bool, device=like.device)

    def _in_chunk(self, rows: slice, device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
        items, tokens = self._index(device)
        inside = (tokens >= rows.start) & (tokens < rows.stop)
        return inside, items[inside], tokens[inside] - rows.start

    def record_affinity(self, rows: slice, n_tokens: int, sim: Tensor, pruned: Optional[Tensor]) -> None:
        """Rows ``rows`` of every item, before sharpening: the affinity ``sim`` ``[B, rows, N]`` and the pruned
        entries (None: none pruned); the kept share of every one of these rows."""
        self._prepare(sim.shape[0], n_tokens, sim)
        inside, items, local = self._in_chunk(rows, sim.device)
        self.isolated[inside] = sim[items, local]
        if pruned is not None:
            self.kept[inside] = ~pruned[items, local]
            # a block of rows at a time: a sum over a bool map first widens it to int64 (8 bytes an entry)
            block = max(1, (1 << 16) // n_tokens)
            for r in range(0, pruned.shape[1], block):
                count = pruned[:, r:r + block].sum(dim=-1)
                start = rows.start + r
                self.kept_share[:, start:start + count.shape[1]] = (n_tokens - count).float() / n_tokens

    def record_feedback(self, rows: slice, a_fb: Tensor) -> None:
        """Rows ``rows`` of every item of ``A_fb`` ``[B, rows, N]``."""
        inside, items, local = self._in_chunk(rows, a_fb.device)
        self.sharpened[inside] = a_fb[items, local].to(self.sharpened.dtype)

    def record_ensemble(self, a_fb: Tensor, a0: Tensor) -> None:
        """Rows of ``(A_fb A0 + A0 A_fb + A_fb) / 3`` from the whole ``A_fb`` ``[B, N, N]`` and ``A0`` of the
        forward (mean over the heads when ``A0`` is per head: the ensemble is linear in ``A0``); products of the
        query rows with the held maps, item by item (no copy of a map)."""
        items, tokens = self._index(a_fb.device)
        dtype = torch.promote_types(a_fb.dtype, torch.float32)
        out = torch.zeros(items.numel(), a_fb.shape[-1], dtype=dtype, device=a_fb.device)
        for item in items.unique().tolist():
            sel = torch.nonzero(items == item).flatten()
            fb_rows = a_fb[item, tokens[sel]].to(dtype)                        # [q, N]
            a0_item = a0[item].to(dtype)
            if a0.dim() == 3:
                fb_a0 = fb_rows @ a0_item                                        # rows of A_fb A0
                a0_rows = a0_item[tokens[sel]]
            else:
                fb_a0 = (fb_rows @ a0_item).mean(dim=0)                          # [h, q, N] -> [q, N]
                a0_rows = a0_item[:, tokens[sel]].mean(dim=0)
            out[sel] = (fb_a0 + a0_rows @ a_fb[item].to(dtype) + fb_rows) / 3.0  # + rows of A0 A_fb + A_fb
        self.ensembled = out

    def record_output(self, a_fb: Tensor) -> None:
        """Without the ensemble the attention applied to ``V`` is ``A_fb`` itself."""
        items, tokens = self._index(a_fb.device)
        self.ensembled = a_fb[items, tokens].to(torch.promote_types(a_fb.dtype, torch.float32))


def isolated_class_distribution(base_logits: Tensor, uniform_logits: Tensor,
                                base_scale: float = 20.0, uniform_scale: float = 35.0) -> Tensor:
    """Attention isolation (paper Eq. 3-4): ``softmax(base_scale * l_i - uniform_scale * l_uni)`` in fp32.

    ``base_logits`` is ``[B, N, C]``; ``uniform_logits`` is ``[B, 1, C]`` (uniform attention gives every
    token the same output) or ``[B, N, C]``.
    """
    dtype = torch.promote_types(base_logits.dtype, torch.float32)
    diff = base_logits.to(dtype) * base_scale - uniform_logits.to(dtype) * uniform_scale
    return diff.softmax(dim=-1)


def _kl_dtype(device: torch.device) -> torch.dtype:
    # The matmul form subtracts two terms of magnitude up to |log eps| (~23) to get a KL that may be ~0:
    # in fp32 that cancellation moves s_ij by a few ulps, enough to flip an entry across the top-p
    # boundary more often than the released elementwise sum does. fp64 costs only N*N*C flops.
    return torch.float32 if device.type == "mps" else torch.float64


def _sort_descending(x: Tensor) -> Tensor:
    """``x.sort(dim=-1, descending=True).values``, the same values bit for bit, cheaper on CPU.

    On CPU torch's sort also computes (and allocates) an index tensor and is several times slower than
    numpy's SIMD sort; sorting ``-x`` ascending and negating back is exact (negation is exact in IEEE
    floats). The rows are split over torch's intra-op thread count (numpy releases the GIL while sorting).
    Elsewhere, or if a NaN shows up (numpy sorts NaN last, torch first), it is torch's sort.
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.requires_grad:
        return x.sort(dim=-1, descending=True).values
    neg = torch.neg(x).contiguous()
    rows = neg.numpy().reshape(-1, neg.shape[-1])
    workers = max(1, min(torch.get_num_threads(), rows.shape[0] // 64))
    if workers == 1:
        rows.sort(axis=-1)
    else:
        bounds = [rows.shape[0] * i // workers for i in range(workers + 1)]
        threads = [threading.Thread(target=rows[bounds[i]:bounds[i + 1]].sort, args=(-1,))
                   for i in range(1, workers)]
        for t in threads:
            t.start()
        rows[:bounds[1]].sort(axis=-1)
        for t in threads:
            t.join()
    out = neg.neg_()
    if out.numel() and torch.isnan(out[..., -1]).any():
        return x.sort(dim=-1, descending=True).values
    return out


def _adaptive_rows(q: Tensor, log_q_t: Tensor, entropy: Tensor, rows: slice, params: FSAParams,
                   dtype: torch.dtype, trace: Optional[FSATrace] = None) -> Tensor:
    """Rows ``rows`` of the feedback attention A_fb (in ``dtype``), from the class distributions ``q``;
    ``trace`` (optional) records the query rows among them."""
    # KL(q_i || q_j) (paper Eq. 5) = entropy_i - q_i . log q_j, in place in the product's buffer.
    kl = torch.bmm(q[:, rows], log_q_t).neg_().add_(entropy[:, rows, None])
    sim = kl.clamp_(min=0.0).add_(1.0).reciprocal_().to(dtype)           # s_ij = 1 / (1 + KL)
    del kl
    # Confidence-based pruning (paper Eq. 6): the softmax is order-invariant, so the kept set is every
    # entry >= the k-th largest, where k counts sorted entries with cumulative mass <= top_p (k >= 1).
    if params.top_p >= 1.0:  # no pruning: every entry is kept (a sum of rounded masses could exceed 1)
        if trace is not None:
            trace.record_affinity(rows, q.shape[1], sim, None)
        gain = torch.mul(sim, params.lamda).exp_()
        a_fb = sim.mul_(gain).softmax(dim=-1)
        if trace is not None:
            trace.record_feedback(rows, a_fb)
        return a_fb
    sorted_sim = _sort_descending(sim)
    cum_mass = sorted_sim.softmax(dim=-1).cumsum_(dim=-1)
    if cum_mass.device.type == "cpu":
        # CPU cumsum accumulates sequentially (in double for fp32), so each row is non-decreasing and the
        # count of entries <= top_p is a binary search rather than a pass over the row.
        top_p = cum_mass.new_full((*cum_mass.shape[:-1], 1), params.top_p)
        keep_count = torch.searchsorted(cum_mass, top_p, right=True)
    else:  # a parallel scan need not be monotone to the last bit: count
        keep_count = (cum_mass <= params.top_p).sum(dim=-1, keepdim=True)
    keep_count.clamp_(min=1)
    del cum_mass
    threshold = sorted_sim.gather(-1, keep_count - 1)
    del sorted_sim
    pruned = sim < threshold
    if trace is not None:
        trace.record_affinity(rows, q.shape[1], sim, pruned)
    # Sharpening (paper Eq. 7) on kept entries, then normalisation.
    gain = torch.mul(sim, params.lamda).exp_()
    weights = sim.mul_(gain).masked_fill_(pruned, float("-inf"))
    del gain, pruned
    a_fb = weights.softmax(dim=-1)
    if trace is not None:
        trace.record_feedback(rows, a_fb)
    return a_fb


def feedback_attention(base_logits: Tensor, uniform_logits: Tensor, params: FSAParams = FSAParams(),
                       out_dtype: Optional[torch.dtype] = None, trace: Optional[FSATrace] = None) -> Tensor:
    """The feedback attention ``A_fb`` ``[B, N, N]`` from the model's own class logits (paper Eq. 3-7);
    ``trace`` (optional, :class:`FSATrace`) records the query rows and every row's kept share."""
    q = isolated_class_distribution(base_logits, uniform_logits, params.base_scale, params.uniform_scale)
    prob_dtype = q.dtype
    q = q.to(_kl_dtype(q.device))
    log_q = torch.log(q + params.eps)
    entropy = (q * log_q).sum(dim=-1)                                     # sum_c q_ic log q_ic
    log_q_t = log_q.transpose(1, 2).contiguous()
    batch, n_tokens, _ = q.shape
    rows_per_chunk = max(1, params.chunk_elems // max(1, batch * n_tokens))
    if rows_per_chunk >= n_tokens:  # one chunk: no preallocated copy
        a_fb = _adaptive_rows(q, log_q_t, entropy, slice(0, n_tokens), params, prob_dtype, trace)
        return a_fb.to(out_dtype or prob_dtype)
    out = torch.empty(batch, n_tokens, n_tokens, dtype=out_dtype or prob_dtype, device=q.device)
    for start in range(0, n_tokens, rows_per_chunk):
        rows = slice(start, min(start + rows_per_chunk, n_tokens))
        out[:, rows] = _adaptive_rows(q, log_q_t, entropy, rows, params, prob_dtype, trace)
    return out


def merge_heads(x: Tensor) -> Tensor:
    """``[B, h, N, d]`` -> ``[B, N, h * d]``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``[B, N, h * d]`` -> ``[B, h, N, d]``."""
    b, n, hd = x.shape
    return x.reshape(b, n, num_heads, hd // num_heads).transpose(1, 2)


def attend(attn: Tensor, v: Tensor) -> Tensor:
    """``attn @ v`` per head; ``attn`` is ``[B, N, N]`` (shared by the heads) or ``[B, h, N, N]``.

    A shared map is never repeated per head: it multiplies all heads' values at once, as one
    ``[N, N] x [N, h * d]`` product (same numbers as the released per-head batched product, without its
    ``h`` copies of the map, and one large matrix product instead of ``h`` thin ones). The result is a
    ``[B, h, N, d]`` view of a heads-merged tensor, so :func:`merge_heads` of it is free.
    """
    attn = attn.to(v.dtype)
    if attn.dim() == 3:
        return split_heads(torch.bmm(attn, merge_heads(v)), v.shape[1])
    return attn @ v


def uniform_attend(v: Tensor) -> Tensor:
    """Output of uniform attention (every weight ``1/N``): the token mean, ``[B, h, 1, d]``."""
    return v.mean(dim=2, keepdim=True)


def ensemble_attend(a_fb: Tensor, a0: Tensor, v: Tensor, a0_v: Optional[Tensor] = None) -> Tensor:
    """Adaptation ensemble (paper Eq. 8) applied to V: ``(A_fb A0 + A0 A_fb + A_fb) V / 3``.

    By associativity this is ``(A_fb (A0 V) + A0 (A_fb V) + A_fb V) / 3``: four ``N x N`` by ``N x D``
    products instead of two ``N x N x N`` ones. ``a_fb`` is ``[B, N, N]`` (shared by the heads), ``a0``
    is ``[B, N, N]`` or ``[B, h, N, N]``, ``v`` is ``[B, h, N, d]``; ``a0_v`` (= ``attend(a0, v)``) may be
    passed when already computed. The products run on heads-merged ``[B, N, h * d]`` values and
    accumulate in place; the result is a ``[B, h, N, d]`` view.
    """
    heads = v.shape[1]
    if a0_v is None:
        a0_v = attend(a0, v)
    a_fb = a_fb.to(v.dtype)
    a0 = a0.to(v.dtype)
    fb_v = torch.bmm(a_fb, merge_heads(v))                               # A_fb V
    out = torch.bmm(a_fb, merge_heads(a0_v))                             # A_fb (A0 V)
    if a0.dim() == 3:
        out.baddbmm_(a0, fb_v)                                           # + A0 (A_fb V)
    else:
        out += merge_heads(a0 @ split_heads(fb_v, heads))
    out += fb_v
    return split_heads(out.div_(3.0), heads)


class FeedbackSelfAdaptiveAttention(torch.nn.Module):
    """FSA as a module: ``forward(a0, v, head) -> (A_fb A0 + A0 A_fb + A_fb) V / 3`` per head.

    ``a0`` is the base method's attention, ``[B, N, N]`` when head-independent (ProxyCLIP, MaskCLIP's
    identity) or ``[B, h, N, N]``; ``v`` is ``[B, h, N, d]``; ``head`` maps heads-merged attended values
    ``[B, N, h * d]`` to unscaled class logits ``[B, N, C]``. Returns attended values ``[B, h, N, d]``
    (the caller applies its output projection, as it would to ``A0 V``).

    ``ensemble=False`` drops the adaptation ensemble (Eq. 8): the output is ``A_fb V`` (an ablation; with
    ``top_p=1`` and / or ``uniform_scale=0`` it gives the paper's single strategies). ``forward(..., trace=)``
    records rows (:class:`FSATrace`).
    """

    def __init__(self, top_p: float = 0.45, lamda: float = 3.0, base_scale: float = 20.0,
                 uniform_scale: float = 35.0, eps: float = 1e-10, chunk_elems: int = 1 << 20,
                 ensemble: bool = True) -> None:
        super().__init__()
        self.params = FSAParams(top_p, lamda, base_scale, uniform_scale, eps, chunk_elems)
        self.ensemble = bool(ensemble)

    def extra_repr(self) -> str:
        p = self.params
        return (f"top_p={p.top_p}, lamda={p.lamda}, base_scale={p.base_scale}, uniform_scale={p.uniform_scale}"
                + ("" if self.ensemble else ", ensemble=False"))

    def feedback(self, a0_v: Tensor, v: Tensor, head: LogitHead, out_dtype: Optional[torch.dtype] = None,
                 trace: Optional[FSATrace] = None) -> Tensor:
        """The feedback attention ``A_fb`` ``[B, N, N]`` from the base output ``A0 V`` (``[B, h, N, d]``) and the
        values (paper Eq. 3-7); in the probabilities' dtype (fp32 or wider) unless ``out_dtype`` is given."""
        base_logits = head(merge_heads(a0_v))
        uniform_logits = head(merge_heads(uniform_attend(v)))
        return feedback_attention(base_logits, uniform_logits, self.params, out_dtype=out_dtype, trace=trace)

    def forward(self, a0: Tensor, v: Tensor, head: LogitHead, a0_v: Optional[Tensor] = None,
                trace: Optional[FSATrace] = None) -> Tensor:
        if a0_v is None:
            a0_v = attend(a0, v)
        if trace is not None:
            trace.record_base(a0)
        a_fb = self.feedback(a0_v, v, head, out_dtype=v.dtype, trace=trace)
        if trace is not None:
            trace.record_ensemble(a_fb, a0) if self.ensemble else trace.record_output(a_fb)
        if not self.ensemble:
            return attend(a_fb, v)
        return ensemble_attend(a_fb, a0, v, a0_v=a0_v)


def shared_rows_matmul(a: Tensor, x: Tensor) -> Tensor:
    """``a @ x`` for ``a [B, N, N]`` and ``x [B, N, D]``, where ``a`` may be one map ``[1, N, N]`` shared by the
    batch: then it multiplies every item at once, as one ``[N, N] x [N, B * D]`` product (no per-item copy)."""
    if a.shape[0] == x.shape[0]:
        return torch.bmm(a, x)
    if a.shape[0] != 1:
        raise ValueError(f"a map batch of {a.shape[0]} does not match a value batch of {x.shape[0]}")
    b, n, d = x.shape
    return (a[0] @ x.transpose(0, 1).reshape(n, b * d)).reshape(n, b, d).transpose(0, 1)


def ensemble_attend_sdpa(a_fb: Tensor, q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None) -> Tensor:
    """Adaptation ensemble (paper Eq. 8) without materialising ``A0 = softmax(q k^T scale)``.

    ``(A_fb A0 + A0 A_fb + A_fb) V / 3 = (A_fb (A0 V + V) + A0 (A_fb V)) / 3``: ``A0 V`` and ``A0 (A_fb V)`` are two
    attention calls (SDPA) with the same ``q, k``, and ``A_fb`` (``[B, N, N]``, or ``[1, N, N]`` shared by the
    batch; shared by the heads) multiplies heads-merged values twice. ``q``, ``k``, ``v`` are ``[B, h, N, d]``;
    ``scale`` defaults to SDPA's ``d ** -0.5``. Memory is that of the attention kernel (no ``h x N x N`` map where
    the kernel is flash / memory-efficient), plus ``A_fb``. One fused call on ``[V, A_fb V]`` would give SDPA
    values twice as wide as the queries, which CPU flash attention does not take: it falls back to the math
    kernel and materialises ``A0`` (measured at SAM3's N = 5184, 8 heads: 1.9 GB instead of 6 MB per prompt).
    """
    heads = v.shape[1]
    a_fb = a_fb.to(v.dtype)
    fb_v = shared_rows_matmul(a_fb, merge_heads(v))                      # A_fb V, heads merged
    sdpa = torch.nn.functional.scaled_dot_product_attention
    a0_v = sdpa(q, k, v, scale=scale)
    out = shared_rows_matmul(a_fb, merge_heads(a0_v).add_(merge_heads(v)))  # A_fb (A0 V + V)
    out = out + merge_heads(sdpa(q, k, split_heads(fb_v, heads).contiguous(), scale=scale))  # + A0 (A_fb V)
    return split_heads(out.div_(3.0), heads)

"""Peak extra memory of the FSA step, estimated from the shapes (before running it).

``naive_fsa_bytes`` follows fsa_seg/naive_fsa.py (the released formulation) temporary by temporary and takes
the largest of its three phases; the benchmark skips the naive run when the estimate exceeds the memory
budget, and records estimate and measurement side by side so the model can be checked.
"""
from __future__ import annotations

from typing import Dict


def naive_fsa_bytes(n: int, c: int, heads: int, head_dim: int, elem: int = 4) -> Dict[str, int]:
    """Estimated peak extra bytes of ``naive_fsa`` (batch 1, head-shared ``a0`` ``[1, N, N]``).

    Live through all phases: ``a0`` repeated per head and the uniform attention, ``R = h N^2`` each.

    * KL phase: ``log p_i - log p_j`` and its product with ``p_i``, ``[N, N, C]`` each (``K``), plus the sum;
    * pruning: sim, sorted values, int64 sort indices, softmax, cumsum, masks, clone, int64 inverse
      permutation, gather (about 42 bytes per ``N^2`` entry);
    * ensemble: the per-head mask and ``A_fb`` (``R`` each) and ``A_fb A0``, ``A0 A_fb`` and their sum
      (``R`` each), plus four ``N^2`` maps.
    """
    nn = n * n
    per_head = heads * nn * elem          # R
    kl = nn * c * elem                    # K: one [N, N, C] temporary
    small = n * (c + heads * head_dim) * elem * 8
    phases = {
        "kl": 2 * per_head + 2 * kl + 2 * nn * elem,
        "pruning": 2 * per_head + 42 * nn,
        "ensemble": 7 * per_head + 4 * nn * elem + nn,
    }
    phase = max(phases, key=phases.get)
    return {"peak": phases[phase] + small, "phase": phase, "largest_temporary": max(kl, per_head),
            "kl_temporary": kl, "per_head_map": per_head}


def ours_fsa_bytes(n: int, c: int, heads: int, head_dim: int, chunk_elems: int = 1 << 20,
                   elem: int = 4) -> Dict[str, int]:
    """Estimated peak extra bytes of ``FeedbackSelfAdaptiveAttention`` (fsa_seg/fsa.py), batch 1.

    ``A_fb`` (``N^2``, in the values' dtype), one row chunk of at most ``chunk_elems`` entries (fp64 KL,
    then about five fp32 maps and a mask; torch's sort indices where numpy's sort is not used), the
    heads-merged products ``[N, h d]`` and the fp64 class distributions.
    """
    rows = max(1, min(n, chunk_elems // max(1, n)))
    chunk = rows * n * (4 * 4 + 1 + 8)
    ensemble = 5 * n * heads * head_dim * elem
    probs = 4 * n * c * 8
    peak = n * n * elem + chunk + ensemble + probs
    return {"peak": peak, "phase": "feedback rows", "largest_temporary": max(n * n * elem, rows * n * 8)}

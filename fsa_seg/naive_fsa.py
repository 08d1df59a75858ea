"""Line-by-line transcription of the released FSA algorithm (slow, memory-hungry, obviously correct).

The reference of the parity tests (tests/) and of the benchmark (``fsa_seg.perf``); the package's own
FSA never calls it. It follows the released formulation on purpose:
``A0`` and ``A_fb`` repeated per head, an ``[N, N, C]`` KL tensor, sort + scatter pruning and the
``N x N x N`` ensemble products. Do not optimise it.
"""
import torch
import torch.nn.functional as F

from .fsa import FSAParams
from .settings import RENAMED_SCALES, accepts_renamed


def kl_divergence(patch_probs):
    log_p = torch.log(patch_probs + 1e-10)
    kl = torch.sum(patch_probs.unsqueeze(2) * (log_p.unsqueeze(2) - log_p.unsqueeze(1)), dim=3)
    return torch.clamp(kl, min=0.0)


def sparse_attention(similarity, p=FSAParams.top_p):
    sorted_sim, sorted_idx = torch.sort(similarity, descending=True, dim=-1)
    cum = torch.cumsum(F.softmax(sorted_sim, dim=-1), dim=-1)
    mask = cum <= p
    mask[..., 0] = True
    pruned_sorted = sorted_sim.clone()
    pruned_sorted[~mask] = float('-inf')
    b, n, _ = similarity.shape
    positions = torch.arange(n, device=similarity.device).view(1, 1, n).expand(b, n, n)
    inverse = torch.empty_like(sorted_idx)
    inverse.scatter_(-1, sorted_idx, positions)
    return pruned_sorted.gather(-1, inverse)


@accepts_renamed(RENAMED_SCALES)
def naive_fsa(a0, v, head, top_p=FSAParams.top_p, lamda=FSAParams.lamda, feedback_scale=FSAParams.feedback_scale,
              isolation_scale=FSAParams.isolation_scale):
    """a0: [B, N, N] (shared) or [B, h, N, N]; v: [B, h, N, d]; head: [B, N, h*d] -> [B, N, C]."""
    b, h, n, d = v.shape
    if a0.dim() == 3:
        a0 = a0.unsqueeze(1).repeat(1, h, 1, 1)
    a0 = a0.reshape(b * h, n, n)
    vv = v.reshape(b * h, n, d)

    def attend_v(attn):
        out = torch.bmm(attn, vv).reshape(b, h, n, d)
        return out.permute(0, 2, 1, 3).reshape(b, n, h * d)

    patch_logits = head(attend_v(a0)) * feedback_scale
    uniform_attention = F.softmax(torch.ones_like(a0), dim=-1)
    uni_logits = head(attend_v(uniform_attention)) * isolation_scale

    diff_prob_soft = F.softmax(patch_logits - uni_logits, dim=-1)
    sim = 1 / (kl_divergence(diff_prob_soft) + 1.0)
    sim_pruned = sparse_attention(sim, p=top_p)
    idx = sim_pruned == float('-inf')
    similarity = sim_pruned * torch.exp(lamda * sim_pruned)
    similarity[idx] = float('-inf')
    mask = similarity.unsqueeze(1).repeat(1, h, 1, 1).reshape(b * h, n, n)
    a_fb = F.softmax(mask, dim=-1)

    a_ens = (torch.bmm(a_fb, a0) + torch.bmm(a0, a_fb) + a_fb) / 3.0
    return torch.bmm(a_ens, vv).reshape(b, h, n, d)

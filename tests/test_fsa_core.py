"""Parity of the lean FSA core with a transcription of the released algorithm (tests/naive_fsa.py)."""
import pytest
import torch
import torch.nn.functional as F

from fsa_seg.fsa import (FeedbackSelfAdaptiveAttention, FSAParams, attend, ensemble_attend,
                         feedback_attention)
from fsa_seg.naive_fsa import kl_divergence, naive_fsa, sparse_attention

pytestmark = pytest.mark.numerics


def make_case(batch, heads, n, dim=32, classes=21, per_head=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(batch, heads, n, dim // heads, generator=g)
    shape = (batch, heads, n, n) if per_head else (batch, n, n)
    a0 = (torch.randn(shape, generator=g) * 3).softmax(-1)
    proj = torch.randn(dim, 16, generator=g)
    text = F.normalize(torch.randn(classes, 16, generator=g), dim=-1)

    def head(x):
        return F.normalize(x @ proj, dim=-1) @ text.T

    head.proj, head.text = proj, text
    return a0, v, head


# Top-p pruning is a step function of values that carry fp32 rounding: where an entry of the released
# computation sits within rounding of its row's boundary, any two fp32 implementations (or CPU kernel paths) may
# disagree on it. So the fp32 checks compare the continuous part whole (no pruning), and the pruned feedback
# attention only on the rows whose kept set has a margin far above rounding (measured in float64); the float64
# tests compare everything.
@pytest.mark.parametrize("n", [49, 441])
@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_fsa_matches_released_algorithm_fp32_without_pruning(n, per_head, seed):
    a0, v, head = make_case(batch=2, heads=4, n=n, per_head=per_head, seed=seed)
    expected = naive_fsa(a0, v, head, top_p=2.0)                       # cumulative mass never exceeds 2: no pruning
    got = FeedbackSelfAdaptiveAttention(top_p=1.0)(a0, v, head)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= 1e-5
    # The check has teeth: FSA moves the output away from plain A0 V.
    assert (got - attend(a0, v)).abs().max().item() > 1e-3


def released_feedback(base_logits, uniform_logits, top_p, lamda=3.0):
    """A_fb as the released code builds it (elementwise KL, sort + scatter pruning), from unscaled logits."""
    q = F.softmax(base_logits * 20.0 - uniform_logits * 35.0, dim=-1)
    sim = 1 / (kl_divergence(q) + 1.0)
    pruned = sparse_attention(sim, p=top_p)
    weights = pruned * torch.exp(lamda * pruned)
    weights[pruned == float("-inf")] = float("-inf")
    return F.softmax(weights, dim=-1), sim


def boundary_margin(sim, top_p):
    """Per row, how far the kept set is from changing: the distance of the nearest cumulative softmax mass to
    ``top_p``, and the gap between the last kept and the first pruned similarity (the smaller of the two)."""
    sorted_sim = sim.sort(dim=-1, descending=True).values
    cum = sorted_sim.softmax(dim=-1).cumsum(dim=-1)
    mass_margin = (cum - top_p).abs().min(dim=-1).values
    kept = (cum <= top_p).sum(dim=-1, keepdim=True).clamp(min=1)
    last, first_out = sorted_sim.gather(-1, kept - 1), sorted_sim.gather(-1, kept.clamp(max=sim.shape[-1] - 1))
    return torch.minimum(mass_margin, (last - first_out).squeeze(-1))


@pytest.mark.parametrize("n", [49, 441])
@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_feedback_matches_released_fp32_where_the_kept_set_has_a_margin(n, seed):
    a0, v, head = make_case(batch=2, heads=4, n=n, seed=seed)
    values = attend(a0, v).transpose(1, 2).reshape(2, n, -1)
    base, uniform = head(values), head(v.mean(dim=2, keepdim=True).transpose(1, 2).reshape(2, 1, -1))
    got = feedback_attention(base, uniform, FSAParams())
    expected, _ = released_feedback(base, uniform, top_p=0.45)
    _, sim64 = released_feedback(base.double(), uniform.double(), top_p=0.45)
    safe = boundary_margin(sim64, 0.45) > 1e-4                           # fp32 rounding is ~1e-6 here
    assert safe.float().mean() > 0.5, "too few rows with a margin: choose another case"
    assert (got[safe] - expected[safe]).abs().max().item() <= 1e-5
    # pruning acted on the compared rows: each keeps some entries and drops others
    kept = (got[safe] > 0).sum(dim=-1)
    assert kept.min() >= 1 and kept.max() < n


@pytest.mark.parametrize("n", [49, 441])
@pytest.mark.parametrize("per_head", [False, True])
def test_fsa_matches_released_algorithm_fp64(n, per_head):
    for seed in range(3):
        a0, v, head = make_case(batch=2, heads=4, n=n, per_head=per_head, seed=100 + seed)
        a0, v = a0.double(), v.double()

        head_fp64 = _double_head(head)
        expected = naive_fsa(a0, v, head_fp64)
        got = FeedbackSelfAdaptiveAttention()(a0, v, head_fp64)
        assert got.dtype == torch.float64
        assert (got - expected).abs().max().item() <= 1e-10


def _double_head(head):
    proj, text = head.proj.double(), head.text.double()
    return lambda x: F.normalize(x @ proj, dim=-1) @ text.T


@pytest.mark.parametrize("top_p,lamda", [(0.2, 2.0), (0.6, 4.5), (0.9, 3.0)])
def test_fsa_matches_for_other_hyperparameters(top_p, lamda):
    a0, v, head = make_case(batch=1, heads=2, n=49, seed=1)
    a0, v, head = a0.double(), v.double(), _double_head(head)
    expected = naive_fsa(a0, v, head, top_p=top_p, lamda=lamda)
    got = FeedbackSelfAdaptiveAttention(top_p=top_p, lamda=lamda)(a0, v, head)
    assert (got - expected).abs().max().item() <= 1e-10


def test_row_chunking_gives_identical_attention():
    g = torch.Generator().manual_seed(1)
    base, uni = torch.randn(2, 100, 10, generator=g), torch.randn(2, 1, 10, generator=g)
    whole = feedback_attention(base, uni, FSAParams())
    chunked = feedback_attention(base, uni, FSAParams(chunk_elems=7 * 200))  # 7 rows a chunk
    torch.testing.assert_close(whole, chunked, rtol=0, atol=0)


def test_pruning_keeps_exactly_the_top_p_mass():
    g = torch.Generator().manual_seed(3)
    sim = torch.rand(1, 30, 30, generator=g)
    kept = sparse_attention(sim, p=0.3) != float('-inf')
    a_fb = feedback_attention(torch.randn(1, 30, 5, generator=g), torch.zeros(1, 1, 5), FSAParams(top_p=0.3))
    # every row keeps at least one entry and the pruned entries have zero weight
    assert (a_fb > 0).sum(-1).min() >= 1
    assert kept.sum(-1).min() >= 1 and kept.sum(-1).max() < 30


def test_top1_always_kept_even_with_tiny_top_p():
    a0, v, head = make_case(batch=1, heads=2, n=49, seed=5)
    base_v = attend(a0, v)
    a_fb = feedback_attention(head(base_v.transpose(1, 2).reshape(1, 49, -1)),
                              torch.zeros(1, 1, 21), FSAParams(top_p=1e-6))
    # only the most similar token (itself: KL = 0) survives, so A_fb is the identity
    torch.testing.assert_close(a_fb, torch.eye(49).expand(1, 49, 49), rtol=0, atol=1e-6)


def test_ensemble_is_the_associative_form():
    g = torch.Generator().manual_seed(2)
    a0 = torch.rand(1, 3, 20, 20, generator=g).softmax(-1)
    a_fb = torch.rand(1, 20, 20, generator=g).softmax(-1)
    v = torch.randn(1, 3, 20, 4, generator=g)
    explicit = ((a_fb[:, None] @ a0 + a0 @ a_fb[:, None] + a_fb[:, None]) / 3) @ v
    torch.testing.assert_close(ensemble_attend(a_fb, a0, v), explicit, rtol=1e-5, atol=1e-6)


def test_fp16_values_keep_fp32_probabilities():
    a0, v, head = make_case(batch=1, heads=2, n=49, seed=11)
    ref = FeedbackSelfAdaptiveAttention()(a0, v, head)
    # fp16 inputs: the probabilities are still computed in fp32, so the result stays close
    half = FeedbackSelfAdaptiveAttention()(a0.half().float(), v.half().float(), head)
    assert torch.isfinite(half).all()
    assert (half - ref).abs().max().item() < 1e-2


def test_invalid_top_p_is_rejected():
    with pytest.raises(ValueError, match="top_p"):
        FeedbackSelfAdaptiveAttention(top_p=0.0)

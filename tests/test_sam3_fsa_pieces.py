"""FSA's pieces for SAM3, each against a plain transcription and with inputs a plausible bug would break: the
ensemble without A0 (transposed A_fb must fail), a map shared by the batch, uniform attention in a hooked layer,
pooling to a non-square token grid (a transposed grid must fail), the log-odds feedback of the present prompts
(two spatial groups: A_fb must be block-structured), isolation modes, the three-strategy ensemble, and the
output-mode update's sign. tests/test_sam3_model.py checks that the segmentor runs these pieces."""
from __future__ import annotations

import pytest
import torch

from fsa_seg import fsa as fsa_core
from fsa_seg.sam3 import decode
from fsa_seg.sam3.feedback import (LogOddsFeedback, log_odds_feedback_attention, log_odds_inputs, pool_to_tokens,
                                   present_prompts, propagate_logits, token_log_odds)
from fsa_seg.sam3.loading import build_sam3, build_tokenizer
from sam3_transcriptions import materialised_eq8, row_stochastic, transcribed_layer

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerics]


# -- the ensemble without A0 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [None, 0.37])
def test_sdpa_ensemble_equals_materialised_eq8(scale):
    gen = torch.Generator().manual_seed(0)
    b, h, n, d = 2, 3, 24, 8
    q, k, v = (torch.randn(b, h, n, d, generator=gen, dtype=torch.float64) for _ in range(3))
    a_fb = torch.cat([row_stochastic(n, 1), row_stochastic(n, 2)])
    out = fsa_core.ensemble_attend_sdpa(a_fb, q, k, v, scale=scale)
    ref = materialised_eq8(a_fb, q, k, v, d ** -0.5 if scale is None else scale)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # a transposed A_fb is a different ensemble: the comparison above would catch it
    transposed = materialised_eq8(a_fb.transpose(1, 2), q, k, v, d ** -0.5 if scale is None else scale)
    assert (out - transposed).abs().max() > 1e-2


def test_materialised_ensemble_rejects_transposed_feedback():
    # the CLIP path's ensemble (A0 materialised) against the same transcription and its transpose
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 16, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    a_fb = row_stochastic(16, 4)
    a0 = (q @ k.transpose(-1, -2) * 0.5).softmax(dim=-1)
    out = fsa_core.ensemble_attend(a_fb, a0, v)
    torch.testing.assert_close(out, materialised_eq8(a_fb, q, k, v, 0.5), rtol=1e-12, atol=1e-12)
    assert (out - materialised_eq8(a_fb.transpose(1, 2), q, k, v, 0.5)).abs().max() > 1e-2


def test_a_map_shared_by_the_batch_is_the_same_as_repeated():
    # one A_fb [1, N, N] for a batch of prompts: the same numbers as the map repeated per prompt, no copy of it
    gen = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(3, 2, 20, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    a_fb = row_stochastic(20, 9)
    shared = fsa_core.ensemble_attend_sdpa(a_fb, q, k, v)
    torch.testing.assert_close(shared, fsa_core.ensemble_attend_sdpa(a_fb.expand(3, 20, 20), q, k, v),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shared, materialised_eq8(a_fb, q, k, v, 0.5), rtol=1e-12, atol=1e-12)
    x = torch.randn(3, 20, 6, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(fsa_core.shared_rows_matmul(a_fb, x), a_fb @ x, rtol=1e-12, atol=1e-12)
    assert (fsa_core.shared_rows_matmul(a_fb, x) - a_fb.transpose(1, 2) @ x).abs().max() > 1e-2
    with pytest.raises(ValueError, match="batch"):
        fsa_core.shared_rows_matmul(a_fb.expand(2, 20, 20), x)


def test_sdpa_ensemble_fp32_matches_fp64():
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 4, 64, 16, generator=gen, dtype=torch.float64) for _ in range(3))
    a_fb = row_stochastic(64, 6)
    ref = fsa_core.ensemble_attend_sdpa(a_fb, q, k, v)
    out = fsa_core.ensemble_attend_sdpa(a_fb.float(), q.float(), k.float(), v.float())
    assert (out.double() - ref).abs().max() < 1e-5 * ref.abs().max()


# -- the hooked layer ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def layer_inputs():
    torch.manual_seed(0)
    model = build_sam3(random_weights=True)
    ids, mask = build_tokenizer(None, True)(["cat", "dog"])
    with torch.no_grad():
        vision = decode.encode_vision(model, torch.randn(1, 3, 112, 112)).expand(0, 2)
        text, prompt_mask = decode.prompt_features(vision, decode.encode_text(model, ids, mask), mask.bool())
        state = decode.run_encoder_layers(model, decode.encoder_input(model, vision, text, prompt_mask), text,
                                          range(len(model.detr_encoder.layers) - 1))
    return model.detr_encoder.layers[-1], state, text



def test_sdpa_layer_is_the_layer(layer_inputs):
    layer, state, text = layer_inputs
    with torch.no_grad():
        ref = decode.original_layer(layer, state, text)
        out = decode.adapted_layer_forward(layer, state, text)
        plain = transcribed_layer(layer, state, text, lambda a0, v: a0 @ v)
    assert (out - ref).abs().max() < 1e-5 * ref.abs().max()
    assert (plain - ref).abs().max() < 1e-5 * ref.abs().max()


def test_sdpa_ensemble_in_the_layer_matches_materialised_path(layer_inputs):
    layer, state, text = layer_inputs
    n = state.hidden.shape[1]
    a_fb = row_stochastic(n, 7, torch.float32).expand(state.hidden.shape[0], n, n)
    scale = layer.self_attn.scaling
    with torch.no_grad():
        lean = decode.adapted_layer_forward(
            layer, state, text, lambda q, k, v: fsa_core.ensemble_attend_sdpa(a_fb, q, k, v, scale=scale))
        materialised = transcribed_layer(layer, state, text, lambda a0, v: (a_fb[:, None] @ a0 + a0 @ a_fb[:, None]
                                                                            + a_fb[:, None]) @ v / 3)
        transposed = transcribed_layer(layer, state, text, lambda a0, v: fsa_core.ensemble_attend(
            a_fb.transpose(1, 2), a0, v))
    assert (lean - materialised).abs().max() < 1e-5 * materialised.abs().max()
    assert (lean - transposed).abs().max() > 1e-3


def test_uniform_attention_gives_every_token_the_value_mean(layer_inputs):
    layer, state, text = layer_inputs
    n = state.hidden.shape[1]
    with torch.no_grad():
        out = decode.adapted_layer_forward(layer, state, text, decode.uniform_attend_qkv)
        ref = transcribed_layer(layer, state, text, lambda a0, v: torch.full_like(a0, 1.0 / n) @ v)
        wrong_axis = decode.adapted_layer_forward(layer, state, text,
                                                  lambda q, k, v: v.mean(dim=-1, keepdim=True).expand_as(v))
    assert (out - ref).abs().max() < 1e-5 * ref.abs().max()
    assert (out - wrong_axis).abs().max() > 1e-3


# -- pooling to the token grid ---------------------------------------------------------------------------------
def test_pooling_follows_the_encoder_token_order_on_a_non_square_grid():
    # maps of 6 x 10 pixels onto a 3 x 5 grid: each token averages a 2 x 2 block; value = 100 y + x
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(10.0), indexing="ij")
    maps = torch.stack([100 * ys + xs, -(100 * ys + xs)])
    tokens = pool_to_tokens(maps, (3, 5))
    assert tokens.shape == (15, 2)
    for r in range(3):
        for c in range(5):
            expected = 100 * (2 * r + 0.5) + (2 * c + 0.5)
            assert tokens[r * 5 + c, 0] == pytest.approx(expected)
            assert tokens[r * 5 + c, 1] == pytest.approx(-expected)


def test_token_log_odds_add_log_presence_per_prompt():
    sem = torch.zeros(2, 4, 6)
    sem[0] = 3.0
    sem[1, :, :3] = -2.0
    presence = torch.tensor([0.0, 5.0])
    tok = token_log_odds(sem, presence, (2, 3))
    log_p = torch.nn.functional.logsigmoid(presence)
    torch.testing.assert_close(tok[:, 0], torch.full((6,), 3.0) + log_p[0])
    # prompt 1: left column block at -2 (tokens 0 and 3: column 0 of each row), else 0
    torch.testing.assert_close(tok[:, 1], torch.tensor([-2.0, -1.0, 0.0, -2.0, -1.0, 0.0]) + log_p[1])


def test_present_prompts_threshold_presence_probability():
    presence = torch.tensor([[2.0], [-0.1], [0.0], [-3.0]])
    assert present_prompts(presence, 0.5).tolist() == [0, 2]
    assert present_prompts(presence, 0.0).tolist() == [0, 1, 2, 3]
    assert present_prompts(presence, 0.85).tolist() == [0]          # sigmoid(2) = 0.881


# -- the log-odds feedback -----------------------------------------------------------------------------------
def two_groups(grid=(4, 6)):
    """Semantic logits on a ``grid`` at 2x resolution: prompt 0 claims the left half, prompt 1 the right half,
    prompt 2 is absent (presence -6) and would claim everything (log-odds ~14 on every token)."""
    h, w = grid
    sem = torch.full((3, 2 * h, 2 * w), -4.0)
    sem[0, :, :w] = 4.0
    sem[1, :, w:] = 4.0
    sem[2] = 20.0
    presence = torch.tensor([3.0, 3.0, -6.0])
    return sem + 0.5 * torch.randn(sem.shape, generator=torch.Generator().manual_seed(0)), presence


def group_mass(a_fb: torch.Tensor, grid) -> torch.Tensor:
    """Per row, the A_fb mass on tokens of the row's own half (left / right)."""
    h, w = grid
    left = (torch.arange(h * w) % w) < w // 2
    same = left[:, None] == left[None, :]
    return (a_fb[0] * same).sum(dim=1)


@pytest.mark.parametrize("isolation", ["none", "mean"])
def test_feedback_of_two_groups_is_block_structured(isolation):
    grid = (4, 6)
    sem, presence = two_groups(grid)
    present = present_prompts(presence, 0.5)
    assert present.tolist() == [0, 1]
    params = LogOddsFeedback(isolation=isolation)
    a_fb = log_odds_feedback_attention(token_log_odds(sem, presence, grid), present, params)
    assert a_fb.shape == (1, 24, 24)
    torch.testing.assert_close(a_fb.sum(dim=-1), torch.ones(1, 24))
    assert group_mass(a_fb, grid).min() > 0.999
    # the same maps read with a transposed grid make no left/right blocks
    wrong = token_log_odds(sem, presence, grid).reshape(4, 6, 3).transpose(0, 1).reshape(24, 3)
    assert group_mass(log_odds_feedback_attention(wrong, present, params), grid).min() < 0.9


def test_absent_prompt_is_left_out_of_the_feedback():
    grid = (4, 6)
    sem, presence = two_groups(grid)
    tok = token_log_odds(sem, presence, grid)
    base, glob = log_odds_inputs(tok, present_prompts(presence, 0.5), LogOddsFeedback(isolation="mean"))
    assert base.shape == (1, 24, 3)                       # the two present prompts, then rest
    torch.testing.assert_close(base[0, :, :2], tok[:, :2])
    assert torch.count_nonzero(base[0, :, 2]) == 0       # rest at log-odds 0
    assert log_odds_feedback_attention(tok, torch.zeros(0, dtype=torch.long), LogOddsFeedback()) is None


def test_isolation_modes():
    tok = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    uni = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    present = torch.tensor([0, 2])
    base, glob = log_odds_inputs(tok, present, LogOddsFeedback(isolation="mean", rest=False))
    torch.testing.assert_close(glob, tok[:, [0, 2]].mean(dim=0)[None, None])
    _, glob = log_odds_inputs(tok, present, LogOddsFeedback(isolation="none", rest=False))
    assert torch.count_nonzero(glob) == 0
    _, glob = log_odds_inputs(tok, present, LogOddsFeedback(isolation="uniform"), uniform_logits=uni)
    torch.testing.assert_close(glob[0, :, :2], uni[:, [0, 2]])   # per token, not a mean
    assert glob.shape == (1, 10, 3)
    with pytest.raises(ValueError, match="uniform"):
        log_odds_inputs(tok, present, LogOddsFeedback(isolation="uniform"))
    for bad in (dict(isolation="global"), dict(strategies="all"), dict(top_p=0.0), dict(presence_thd=2.0)):
        with pytest.raises(ValueError):
            LogOddsFeedback(**bad)


def test_three_strategy_ensemble_averages_isolation_only_pruning_only_and_both():
    # unequal groups (2 vs 4 columns) and strengths, so that isolation and pruning each change A_fb
    sem = torch.full((2, 8, 12), -3.0)
    sem[0, :, :4] = 5.0
    sem[1, :, 4:] = 2.0
    sem = sem + 0.5 * torch.randn(sem.shape, generator=torch.Generator().manual_seed(2))
    presence = torch.tensor([2.0, 1.0])
    tok = token_log_odds(sem, presence, (4, 6))
    present = present_prompts(presence, 0.5)
    params = LogOddsFeedback(isolation="mean", isolation_scale=1.0, strategies="ensemble")
    base, glob = log_odds_inputs(tok, present, params)
    core = fsa_core.FSAParams(top_p=params.top_p, lamda=params.lamda, feedback_scale=1.0, isolation_scale=1.0)
    isolation_only = fsa_core.feedback_attention(base, glob, fsa_core.FSAParams(top_p=1.0, feedback_scale=1.0,
                                                                                isolation_scale=1.0))
    pruning_only = fsa_core.feedback_attention(base, torch.zeros_like(glob), core)
    both = fsa_core.feedback_attention(base, glob, core)
    assert torch.count_nonzero(isolation_only) == isolation_only.numel()   # no pruning
    assert torch.count_nonzero(pruning_only) < pruning_only.numel()
    assert (isolation_only - both).abs().max() > 1e-3 and (pruning_only - both).abs().max() > 1e-3
    out = log_odds_feedback_attention(tok, present, params)
    torch.testing.assert_close(out, (isolation_only + pruning_only + both) / 3)


def test_core_without_pruning_is_the_sharpened_softmax():
    # top_p = 1: A_fb = softmax_j(s_ij exp(lamda s_ij)) over every j, s from the KL affinity (paper Eq. 5, 7)
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(1, 12, 3, generator=gen, dtype=torch.float64)
    params = fsa_core.FSAParams(top_p=1.0, lamda=3.0, feedback_scale=2.0, isolation_scale=0.0)
    q = (2.0 * logits).softmax(dim=-1)
    log_q = torch.log(q + params.eps)
    kl = (q[:, :, None] * (log_q[:, :, None] - log_q[:, None])).sum(-1)
    s = 1.0 / (1.0 + kl.clamp(min=0.0))
    expected = (s * torch.exp(3.0 * s)).softmax(dim=-1)
    out = fsa_core.feedback_attention(logits, torch.zeros_like(logits[:, :1]), params)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


# -- the output-mode update --------------------------------------------------------------------------------------
def test_output_mode_moves_logits_towards_their_group():
    # grid 2 x 3 at mask resolution (no resize); A_fb averages each row of tokens: z' = z + (A z - z) = A z
    logits = torch.tensor([[[4.5, -3.0, 0.0], [-3.0, 1.5, -3.0]]])
    a_fb = torch.zeros(1, 6, 6)
    a_fb[0, :3, :3] = 1 / 3
    a_fb[0, 3:, 3:] = 1 / 3
    out = propagate_logits(logits, a_fb, (2, 3))
    torch.testing.assert_close(out, torch.tensor([[[0.5, 0.5, 0.5], [-1.5, -1.5, -1.5]]]))


def test_output_mode_keeps_detail_finer_than_the_grid():
    # 4 x 6 logits on a 2 x 3 grid: A = I moves nothing (the detail within each token's cell stays); the token
    # average pulls every token towards the image mean (1.0 here), through the bilinear upsampling of the change
    logits = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(propagate_logits(logits, torch.eye(6)[None], (2, 3)), logits)
    flat = torch.full((1, 4, 6), 2.0)
    flat[0, :, :2] = -1.0                          # the grid's first column of tokens at -1, the others at 2
    out = propagate_logits(flat, torch.full((1, 6, 6), 1 / 6), (2, 3))
    before, after = pool_to_tokens(flat, (2, 3)) - 1.0, pool_to_tokens(out, (2, 3)) - 1.0
    assert (after.abs() < 0.5 * before.abs()).all()

"""SAM3 + FSA's settings act where the segmentor runs them: the A_fb its adapted pass receives is the shared FSA core
called with the configured top_p, lamda and scales on the isolated inputs (uniform-attention log-odds at the
released 35:20 ratio by default, the token mean as the alternative), pruning removes entries and lamda changes the
map; the three-strategy ensemble of results against a transcription (one A_fb per strategy, one uniform pass, the
present prompts' probabilities averaged); output mode in float64.

A_fb is captured at the placement (``Placement.adapted``), i.e. as the adapted pass uses it. The reference maps come
from ``fsa_core.feedback_attention`` on inputs built here by hand from the first pass's token log-odds and the
uniform pass (both checked against transcriptions in tests/test_sam3_model.py), so the two sides take the same
kernels on the same numbers: the top-p kept sets cannot differ by rounding, whatever the CPU kernel path.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from fsa_seg import fsa as fsa_core
from fsa_seg.sam3.placement import Placement
from sam3_transcriptions import pooled_by_loops
from test_sam3_model import crop_vision, make_segmentor, transcribed_adapted, with_presence_thd

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def names_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("names") / "tiny.txt"
    path.write_text("background; sky; wall\ncat\ndog\nperson; people\n")
    return str(path)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(3, 48, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def captured(monkeypatch):
    """Every A_fb the placement receives (the adapted pass), in call order."""
    maps = []
    adapted = Placement.adapted

    def spy(self, model, state, text, a_fb):
        maps.append(a_fb.detach().clone())
        return adapted(self, model, state, text, a_fb)

    monkeypatch.setattr(Placement, "adapted", spy)
    return maps


def core_inputs(seg, vision, first, isolation: str):
    """The core's base and isolation logits built by hand: the present prompts' token log-odds and a rest column
    at 0; isolation ``uniform``: the uniform pass's log-odds per token (rest 0), ``mean``: the token mean."""
    rest = torch.zeros(first.token_log_odds.shape[0], 1, dtype=first.token_log_odds.dtype)
    base = torch.cat([first.token_log_odds, rest], dim=1)[None]
    if isolation == "uniform":
        glob = torch.cat([seg.uniform_log_odds(vision, 0, first), rest], dim=1)[None]
    else:
        glob = base.mean(dim=1, keepdim=True)
    return base, glob


def run_default_fsa(seg, image):
    present = with_presence_thd(seg, image)
    vision = crop_vision(seg, image)
    with torch.no_grad():
        first = seg.first_pass(vision, 0)
        out = seg.query_logits(vision, 0)
    return present, vision, first, out


# -- top_p and lamda act in the default path -----------------------------------------------------------------------
@pytest.mark.numerics
@pytest.mark.parametrize("top_p, lamda", [(0.3, 5.0), (0.45, 3.0)])
def test_adapted_pass_receives_the_core_map_with_the_configured_top_p_and_lamda(names_file, image, captured,
                                                                                 top_p, lamda):
    seg = make_segmentor(names_file, fsa=True, top_p=top_p, lamda=lamda)
    assert seg.feedback.isolation == "uniform" and seg.feedback.strategies == "both"   # the defaults
    _, vision, first, _ = run_default_fsa(seg, image)
    assert len(captured) == 1
    a_fb = captured[0]
    with torch.no_grad():
        base, glob = core_inputs(seg, vision, first, "uniform")

    def core(**changes):
        params = dict(top_p=top_p, lamda=lamda, feedback_scale=1.0, isolation_scale=1.75)
        return fsa_core.feedback_attention(base, glob, fsa_core.FSAParams(**{**params, **changes}))

    expected = core()
    assert a_fb.shape == (1, 64, 64)
    torch.testing.assert_close(a_fb, expected.to(a_fb.dtype), rtol=0, atol=1e-6)
    # pruning removed entries (a top_p ignored as 1 keeps all of them)
    pruned = int((a_fb == 0).sum())
    assert pruned > 0.1 * a_fb.numel() and int((core(top_p=1.0) == 0).sum()) == 0
    # the comparison can tell the settings apart: another top_p prunes other entries, lamda 0 or another lamda
    # gives other weights, the isolation scale 1:1 another map
    other_top_p = core(top_p=0.45 if top_p != 0.45 else 0.3)
    assert int(((other_top_p == 0) != (expected == 0)).sum()) > 10
    for changed in (core(lamda=0.0), core(lamda=3.0 if lamda != 3.0 else 5.0), core(isolation_scale=1.0)):
        assert (changed - expected).abs().max() > 1e-2


@pytest.mark.numerics
def test_mean_isolation_subtracts_the_token_mean_at_its_scale(names_file, image, captured):
    seg = make_segmentor(names_file, fsa=True, isolation="mean", isolation_scale=1.0, top_p=0.3)
    _, vision, first, _ = run_default_fsa(seg, image)
    with torch.no_grad():
        base, glob = core_inputs(seg, vision, first, "mean")
        uniform_base, uniform_glob = core_inputs(seg, vision, first, "uniform")
    params = fsa_core.FSAParams(top_p=0.3, lamda=3.0, feedback_scale=1.0, isolation_scale=1.0)
    expected = fsa_core.feedback_attention(base, glob, params)
    torch.testing.assert_close(captured[0], expected, rtol=0, atol=1e-6)
    # the approximation is not the faithful isolation: the mean of the log-odds is not the uniform pass's
    assert (fsa_core.feedback_attention(uniform_base, uniform_glob, params) - expected).abs().max() > 1e-2


def test_isolated_distribution_is_the_transcription_of_eq3(names_file, image):
    # q_i = softmax_c(1 * l_ic - 1.75 * u_ic) (uniform) and softmax_c(l_ic - mean_j l_jc) (mean), written out
    seg = make_segmentor(names_file, fsa=True)
    _, vision, first, _ = run_default_fsa(seg, image)
    with torch.no_grad():
        base, glob = core_inputs(seg, vision, first, "uniform")
    tok = first.token_log_odds.double()
    uni = seg.uniform_log_odds(vision, 0, first).double()
    columns = [tok[:, k] - 1.75 * uni[:, k] for k in range(tok.shape[1])] + [torch.zeros(tok.shape[0])]
    expected = torch.stack(columns, dim=1).softmax(dim=1)
    got = fsa_core.isolated_class_distribution(base, glob, seg.feedback.feedback_scale, seg.feedback.isolation_scale)[0]
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    mean_columns = [tok[:, k] - tok[:, k].mean() for k in range(tok.shape[1])] + [torch.zeros(tok.shape[0])]
    mean_base, mean_glob = core_inputs(seg, vision, first, "mean")
    got_mean = fsa_core.isolated_class_distribution(mean_base, mean_glob, 1.0, 1.0)[0]
    torch.testing.assert_close(got_mean.double(), torch.stack(mean_columns, dim=1).softmax(dim=1),
                               rtol=1e-5, atol=1e-6)
    assert (got.double() - got_mean.double()).abs().max() > 1e-2


# -- the three-strategy ensemble of results ----------------------------------------------------------------------
@pytest.mark.numerics
def test_ensemble_of_results_is_the_mean_of_the_three_strategies_probabilities(names_file, image, captured,
                                                                              monkeypatch):
    seg = make_segmentor(names_file, fsa=True, fsa_strategies="ensemble_results", top_p=0.3, lamda=4.0)
    uniform_passes = []
    uniform_log_odds = seg.uniform_log_odds
    monkeypatch.setattr(seg, "uniform_log_odds", lambda *a: uniform_passes.append(1) or uniform_log_odds(*a))
    present, vision, first, got = run_default_fsa(seg, image)
    assert len(uniform_passes) == 1 and len(captured) == 3     # one uniform pass, one adapted pass per strategy
    with torch.no_grad():
        base, glob = core_inputs(seg, vision, first, "uniform")
    strategies = [(glob, 1.0), (torch.zeros_like(glob), 0.3), (glob, 0.3)]  # isolation only, pruning only, both
    maps = [fsa_core.feedback_attention(base, g, fsa_core.FSAParams(top_p=p, lamda=4.0, feedback_scale=1.0,
                                                                     isolation_scale=1.75)) for g, p in strategies]
    for a_fb, expected in zip(captured, maps):
        torch.testing.assert_close(a_fb, expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        results = [transcribed_adapted(seg, vision, present, first.presence_logits, a_fb, 0)[0] for a_fb in maps]
    mean_probability = torch.stack([r.double().sigmoid() for r in results]).mean(dim=0)
    assert (got[present].double().sigmoid() - mean_probability).abs().max() < 1e-5
    absent = [q for q in range(seg.num_queries) if q not in present.tolist()]
    assert torch.equal(got[absent], first.logits[absent])
    # the strategies' results differ, and so does the ensemble of the maps (the heads are nonlinear)
    assert (results[0] - results[1]).abs().max() > 1e-2 and (results[1] - results[2]).abs().max() > 1e-2
    seg.settings = replace(seg.settings, fsa_strategies="ensemble")
    with torch.no_grad():
        maps_form = seg.query_logits(vision, 0)
    assert (maps_form[present].double().sigmoid() - mean_probability).abs().max() > 1e-3


def test_ensemble_of_results_without_isolation_needs_no_uniform_pass(names_file, image, monkeypatch):
    seg = make_segmentor(names_file, fsa=True, fsa_strategies="ensemble_results", isolation="none")
    monkeypatch.setattr(seg, "uniform_log_odds", lambda *a: pytest.fail("no uniform pass without isolation"))
    present, _, first, got = run_default_fsa(seg, image)
    assert (got[present] - first.logits[present]).abs().max() > 1e-3


# -- output mode in float64 --------------------------------------------------------------------------------------
def test_output_mode_runs_in_float64(names_file, image):
    seg = make_segmentor(names_file, fsa=True, fsa_mode="output")
    seg.sam3.double()
    seg.run_dtype = torch.float64
    seg.encode_queries()
    present, vision, first, got = run_default_fsa(seg, image.double())
    assert got.dtype == first.logits.dtype == torch.float64
    with torch.no_grad():
        base, glob = core_inputs(seg, vision, first, "uniform")
    assert base.dtype == glob.dtype == torch.float64
    a_fb = fsa_core.feedback_attention(base, glob, fsa_core.FSAParams(feedback_scale=1.0, isolation_scale=1.75))
    assert a_fb.dtype == torch.float64
    # z' = z + up(A_fb z_tok - z_tok), z_tok the token means (loops), fp64 throughout
    tok = pooled_by_loops(first.logits[present], (8, 8))
    delta = (a_fb[0] @ tok - tok).t().reshape(-1, 8, 8)[None]
    expected = first.logits[present] + F.interpolate(delta, size=(32, 32), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(got[present], expected, rtol=1e-10, atol=1e-10)
    assert (got[present] - first.logits[present]).abs().max() > 1e-3

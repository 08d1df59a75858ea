"""FSA's internals as data (fsa_seg/internals.py, FSATrace in fsa_seg/fsa.py): the recorded rows against a
transcription of the released algorithm (fsa_seg/naive_fsa.py's pieces) and of each base method's last block
(test_base_methods.py), the trace leaving the numbers unchanged, and explain()'s strategies against the one-pass
variants."""
import pytest
import torch
import torch.nn.functional as F

from fsa_seg.clip_model import CLIPSegModel
from fsa_seg.fsa import FeedbackSelfAdaptiveAttention, FSAParams, FSATrace, attend, feedback_attention
from fsa_seg.internals import STRATEGY_NAMES, Explanation, explain, token_of
from fsa_seg.naive_fsa import kl_divergence, sparse_attention
from test_base_methods import NAIVE, naive_head, naive_tokens, per_head, projections
from test_fsa_core import boundary_margin, make_case
from tiny import TINY_CLIP

FIELDS = ("base", "isolated", "kept", "sharpened", "ensembled")


def released_rows(a0, v, head, top_p=0.45, lamda=3.0, base_scale=20.0, uniform_scale=35.0, ensemble=True):
    """Every row of the released algorithm's maps (tests/naive_fsa.py, step by step): A0 and the ensemble averaged
    over the heads, the affinity, the kept set, A_fb and the kept share."""
    b, h, n, d = v.shape
    a0h = a0.unsqueeze(1).repeat(1, h, 1, 1) if a0.dim() == 3 else a0
    vv = v.reshape(b * h, n, d)

    def attend_v(attn):
        out = torch.bmm(attn.reshape(b * h, n, n), vv).reshape(b, h, n, d)
        return out.permute(0, 2, 1, 3).reshape(b, n, h * d)

    patch_logits = head(attend_v(a0h)) * base_scale
    uni_logits = head(attend_v(F.softmax(torch.ones_like(a0h), dim=-1))) * uniform_scale
    q = F.softmax(patch_logits - uni_logits, dim=-1)
    sim = 1 / (kl_divergence(q) + 1.0)
    pruned = sparse_attention(sim, p=top_p)
    kept = pruned != float("-inf")
    weights = pruned * torch.exp(lamda * pruned)
    weights[~kept] = float("-inf")
    a_fb = F.softmax(weights, dim=-1)
    fb = a_fb[:, None]
    ens = (fb @ a0h + a0h @ fb + fb) / 3.0 if ensemble else fb.expand_as(a0h)
    return dict(base=a0h.mean(dim=1), isolated=sim, kept=kept, sharpened=a_fb, ensembled=ens.mean(dim=1),
                kept_share=kept.double().mean(dim=-1)), sim


def rows_at(full, items, tokens):
    return {k: (v if k == "kept_share" else v[items, tokens]) for k, v in full.items()}


def queries(batch, n, count=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(0, batch, (count,), generator=g)
    tokens = torch.randint(0, n, (count,), generator=g)
    # the first and last token, and one query twice
    return torch.cat([items, torch.tensor([0, batch - 1, int(items[0])])]), \
        torch.cat([tokens, torch.tensor([0, n - 1, int(tokens[0])])])


def traced(a0, v, head, items, tokens, **fsa):
    trace = FSATrace(items, tokens)
    out = FeedbackSelfAdaptiveAttention(**fsa)(a0, v, head, trace=trace)
    return out, trace


def assert_close(got, expected, tol, what):
    err = (got.double() - expected.double()).abs().max().item()
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:g}"


# --- the FSA core ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("n", [49, 150])
def test_core_rows_match_released_fp32_without_pruning(per_head, n):
    a0, v, head = make_case(batch=2, heads=4, n=n, per_head=per_head, seed=n)
    items, tokens = queries(2, n)
    _, trace = traced(a0, v, head, items, tokens, top_p=1.0)
    expected, _ = released_rows(a0, v, head, top_p=2.0)                   # mass never exceeds 2: nothing pruned
    exp = rows_at(expected, items, tokens)
    for name in ("base", "isolated", "sharpened", "ensembled"):
        assert getattr(trace, name).shape == (items.numel(), n)
        assert_close(getattr(trace, name), exp[name], 1e-5 if name != "base" else 0.0, name)
    assert trace.kept.all() and (trace.kept_share == 1).all()
    # teeth: the rows are not interchangeable
    assert (trace.ensembled - trace.base).abs().max() > 1e-3
    assert (trace.sharpened - trace.ensembled).abs().max() > 1e-3


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_core_rows_match_released_fp32_where_the_kept_set_has_a_margin(per_head, seed):
    n = 150
    a0, v, head = make_case(batch=2, heads=4, n=n, per_head=per_head, seed=seed)
    items, tokens = queries(2, n, count=40, seed=seed)
    _, trace = traced(a0, v, head, items, tokens)
    expected, _ = released_rows(a0, v, head)
    _, sim64 = released_rows(a0.double(), v.double(), _double(head))
    safe_rows = boundary_margin(sim64, 0.45) > 1e-4                     # [B, N]
    safe = safe_rows[items, tokens]
    assert safe.float().mean() > 0.5, "too few rows with a margin: choose another case"
    exp = rows_at(expected, items, tokens)
    assert_close(trace.base, exp["base"], 0.0, "base")
    assert_close(trace.isolated, exp["isolated"], 1e-5, "isolated")
    assert torch.equal(trace.kept[safe], exp["kept"][safe])
    for name in ("sharpened", "ensembled"):
        assert_close(getattr(trace, name)[safe], exp[name][safe], 1e-5, name)
    counts = (trace.kept_share[safe_rows].double() * n).round()          # the kept count of every row with a margin
    assert torch.equal(counts, expected["kept"][safe_rows].sum(dim=-1).double())
    # pruning acted: rows keep some entries and drop others
    kept = trace.kept.sum(dim=-1)
    assert (kept >= 1).all() and (kept < n).all()


def _double(head):
    proj, text = head.proj.double(), head.text.double()
    return lambda x: F.normalize(x @ proj, dim=-1) @ text.T


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("top_p,lamda", [(0.45, 3.0), (0.3, 1.0), (0.7, 5.0)])
def test_core_rows_match_released_fp64(per_head, top_p, lamda):
    n = 100
    a0, v, head = make_case(batch=2, heads=4, n=n, per_head=per_head, seed=2)
    a0, v, head = a0.double(), v.double(), _double(head)
    items, tokens = queries(2, n, count=30)
    _, trace = traced(a0, v, head, items, tokens, top_p=top_p, lamda=lamda)
    expected, _ = released_rows(a0, v, head, top_p=top_p, lamda=lamda)
    exp = rows_at(expected, items, tokens)
    for name in ("base", "isolated", "sharpened", "ensembled"):
        assert getattr(trace, name).dtype == torch.float64
        assert_close(getattr(trace, name), exp[name], 1e-12, name)
    assert torch.equal(trace.kept, exp["kept"])
    assert_close(trace.kept_share, expected["kept_share"], 1e-7, "kept_share")   # kept_share is fp32


@pytest.mark.parametrize("chunk_elems", [1 << 20, 1000])
@pytest.mark.parametrize("per_head", [False, True])
def test_trace_leaves_the_output_bit_identical(chunk_elems, per_head):
    a0, v, head = make_case(batch=2, heads=4, n=150, per_head=per_head, seed=3)
    items, tokens = queries(2, 150)
    fsa = FeedbackSelfAdaptiveAttention(chunk_elems=chunk_elems)
    plain = fsa(a0, v, head)
    with_trace = fsa(a0, v, head, trace=FSATrace(items, tokens))
    assert torch.equal(plain, with_trace)
    base = head(attend(a0, v).transpose(1, 2).reshape(2, 150, -1))
    uniform = head(v.mean(2, keepdim=True).transpose(1, 2).reshape(2, 1, -1))
    params = FSAParams(chunk_elems=chunk_elems)
    assert torch.equal(feedback_attention(base, uniform, params),
                       feedback_attention(base, uniform, params, trace=FSATrace(items, tokens)))


def test_row_chunks_record_the_same_rows():
    a0, v, head = make_case(batch=2, heads=4, n=150, seed=4)
    items, tokens = queries(2, 150, count=20)
    _, whole = traced(a0, v, head, items, tokens)
    _, chunked = traced(a0, v, head, items, tokens, chunk_elems=1000)     # 3 rows per chunk
    for name in FIELDS + ("kept_share",):
        assert torch.equal(getattr(whole, name), getattr(chunked, name)), name


def test_no_ensemble_switch_is_a_fb_v():
    a0, v, head = make_case(batch=2, heads=4, n=49, seed=5)
    items, tokens = queries(2, 49)
    out, trace = traced(a0, v, head, items, tokens, top_p=1.0, ensemble=False)
    expected, _ = released_rows(a0, v, head, top_p=2.0, ensemble=False)
    a_fb = expected["sharpened"]
    assert_close(out, torch.stack([a_fb @ v[:, i] for i in range(4)], dim=1), 3e-5, "A_fb V")  # values ~2
    assert torch.equal(trace.ensembled, trace.sharpened)
    assert (out - FeedbackSelfAdaptiveAttention(top_p=1.0)(a0, v, head)).abs().max() > 1e-3


@pytest.mark.parametrize("per_head", [False, True])
def test_recording_allocates_rows_only(per_head):
    """Every record call of a trace, on maps of N = 1200 tokens: no temporary near the size of an N x N map (the
    largest is a block of int64 counts, below 2**19 bytes)."""
    from torch.profiler import ProfilerActivity, profile

    n = 1200
    g = torch.Generator().manual_seed(0)
    a0 = torch.rand((1, 2, n, n) if per_head else (1, n, n), generator=g)
    a_fb, sim = torch.rand(1, n, n, generator=g), torch.rand(1, n, n, generator=g)
    pruned = sim < 0.5
    trace = FSATrace([0] * 4, [0, 5, 100, n - 1])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        trace.record_base(a0)
        trace.record_affinity(slice(0, n), n, sim, pruned)
        trace.record_feedback(slice(0, n), a_fb)
        trace.record_ensemble(a_fb, a0)
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert largest < n * n, f"a record call allocated {largest} bytes (an N x N fp32 map is {4 * n * n})"
    assert trace.ensembled.shape == trace.base.shape == (4, n) and trace.kept_share.shape == (1, n)
    assert torch.equal(trace.kept_share[0], (sim[0] >= 0.5).float().mean(dim=-1))


def test_trace_needs_its_queries():
    with pytest.raises(ValueError, match="query rows"):
        FSATrace()
    with pytest.raises(ValueError, match="items for"):
        FSATrace([0, 1], [3])


# --- the last blocks of the CLIP model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def names(tmp_path_factory):
    path = tmp_path_factory.mktemp("names") / "names.txt"
    path.write_text("background\ncat\ndog; puppy\ncar\n")
    return str(path)


@pytest.fixture(scope="module")
def tiny_model(names, one_thread):
    torch.manual_seed(0)
    return CLIPSegModel(name_path=names, base_method="vanilla", vfm=None, precision="fp32", device="cpu",
                        slide_crop=64, slide_stride=40, crop_batch_size=2, **TINY_CLIP)


def set_method(model, method):
    model.apply_settings({**model.variant_settings(), "base_method": method, "fsa": True})
    return model


@pytest.mark.numerics
@pytest.mark.parametrize("method", ["vanilla", "maskclip", "sclip", "clearclip", "naclip"])
def test_last_block_rows_match_transcription_fp32(tiny_model, method):
    model = set_method(tiny_model, method)
    crops = torch.randn(2, 3, 96, 144, generator=torch.Generator().manual_seed(3))   # 6 x 9 grid + class token
    n = 1 + 54
    items, tokens = queries(2, n, count=12, seed=1)
    trace = FSATrace(items, tokens)
    logits = model.logits_from_features(model.crop_features(crops), trace=trace)
    assert torch.equal(logits, model.logits_from_features(model.crop_features(crops)))   # numbers unchanged
    assert trace.grid == (6, 9) and trace.patch_tokens == slice(1, None)
    clip = model.backbone.clip
    block = clip.visual.transformer.resblocks[-1]
    x, grid = naive_tokens(clip, crops)
    a0, residual, ffn = NAIVE[method](block, x, grid)
    v = per_head(projections(block, x)[2], block.attn.num_heads)
    head = naive_head(clip, block, x, model.text_embeddings, residual, ffn)
    expected, sim = released_rows(a0, v, head, lamda=model.fsa.params.lamda)
    x64, _ = naive_tokens(clip.double(), crops.double())
    try:
        a64, _, _ = NAIVE[method](block, x64, grid)
        v64 = per_head(projections(block, x64)[2], block.attn.num_heads)
        _, sim64 = released_rows(a64, v64, naive_head(clip, block, x64, model.text_embeddings.double(), residual, ffn),
                                 lamda=model.fsa.params.lamda)
    finally:
        clip.float()
    safe = (boundary_margin(sim64, 0.45) > 1e-4)[items, tokens]
    exp = rows_at(expected, items, tokens)
    assert_close(trace.base, exp["base"], 1e-6, "base")
    assert_close(trace.isolated, exp["isolated"], 1e-4, "isolated")
    assert safe.any()
    assert torch.equal(trace.kept[safe], exp["kept"][safe])
    for name in ("sharpened", "ensembled"):
        assert_close(getattr(trace, name)[safe], exp[name][safe], 1e-4, name)


@pytest.mark.numerics
@pytest.mark.parametrize("method", ["vanilla", "naclip"])
def test_last_block_rows_match_transcription_fp64(tiny_model, method):
    model = set_method(tiny_model, method).double()
    try:
        # the model's own 14 x 14 grid: a resized positional embedding is interpolated in fp32 (by design)
        crops = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        items, tokens = queries(2, 197, count=20, seed=2)
        trace = FSATrace(items, tokens)
        model.logits_from_features(model.crop_features(crops), trace=trace)
        clip = model.backbone.clip
        block = clip.visual.transformer.resblocks[-1]
        x, grid = naive_tokens(clip, crops)
        a0, residual, ffn = NAIVE[method](block, x, grid)
        v = per_head(projections(block, x)[2], block.attn.num_heads)
        head = naive_head(clip, block, x, model.text_embeddings, residual, ffn)
        expected, _ = released_rows(a0, v, head, lamda=model.fsa.params.lamda)
    finally:
        model.float()
    exp = rows_at(expected, items, tokens)
    for name in ("base", "isolated", "sharpened", "ensembled"):
        assert getattr(trace, name).dtype == torch.float64
        assert_close(getattr(trace, name), exp[name], 1e-10, name)
    assert torch.equal(trace.kept, exp["kept"])
    assert torch.equal((trace.kept_share.double() * 197).round(), expected["kept"].sum(dim=-1).double())


def test_trace_without_fsa_records_the_base_rows(tiny_model):
    model = tiny_model
    model.apply_settings({**model.variant_settings(), "base_method": "sclip", "fsa": False})
    crops = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    trace = FSATrace([0, 0], [1, 16])
    model.logits_from_features(model.crop_features(crops), trace=trace)
    out = model.method.attention(model.backbone.last_block, *model.backbone.forward_to_last_block(crops))
    assert torch.equal(trace.base, out.a0[0, :, [1, 16]].mean(dim=0))
    assert trace.sharpened is None


# --- explain -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(7)
    return (F.interpolate(torch.rand(1, 3, 10, 14, generator=g), size=(80, 112), mode="bilinear")[0] * 255)


def test_explain_predictions_are_the_one_pass_variants(tiny_model, image):
    model = set_method(tiny_model, "sclip")
    points = [(3, 5), (100, 70), (60, 40)]
    ex = explain(model, image, points)
    assert isinstance(ex, Explanation) and list(ex.predictions) == list(STRATEGY_NAMES)
    isolation_key = "isolation_scale" if "isolation_scale" in model.VARIANT_KEYS else "uniform_scale"
    changes = {"base": dict(fsa=False), "isolation": dict(top_p=1.0, fsa_ensemble=False),
               "pruning": {isolation_key: 0.0, "fsa_ensemble": False}, "both": dict(fsa_ensemble=False),
               "ensemble": dict()}
    norm = model.normalise(image)
    preds = model.predict_variants([norm], None, [changes[s] for s in STRATEGY_NAMES])[0]
    for name, pred in zip(STRATEGY_NAMES, preds):
        assert torch.equal(ex.predictions[name], pred.labels), name
    assert torch.equal(ex.predictions["ensemble"], model.predict([norm])[0].labels)
    # the strategies are different computations (random weights: the labels may agree, the scores do not)
    for i, a in enumerate(preds):
        for b in preds[i + 1:]:
            assert (a.probabilities - b.probabilities).abs().max() > 1e-5


def test_explain_rows_are_the_windows_forward(tiny_model, image):
    model = set_method(tiny_model, "naclip")
    points = [(3, 5), (100, 70), (60, 40), (111, 79)]
    model.crop_batch_size = 1  # the window alone below: the same batch, the same bits
    try:
        ex = explain(model, image, points, strategies=("ensemble",))
    finally:
        model.crop_batch_size = 2
    wins = [(y1, y2, x1, x2) for y1, y2, x1, x2 in
            __import__("fsa_seg.sliding_window", fromlist=["windows"]).windows(80, 112, (64, 64), (40, 40))]
    assert len(ex.kept_share) == len(wins) * 16                           # every patch row of every window
    for k, (x, y) in enumerate(points):
        holding = [w for w in wins if w[0] <= y < w[1] and w[2] <= x < w[3]]
        assert sorted(c.box for c, _ in ex.rows_of(k)) == sorted(holding)
    crop, row = next((c, i) for c, i in ex.rows_of(1) if c.box == (16, 80, 48, 112))
    y1, y2, x1, x2 = crop.box
    window = model.normalise(image)[None, :, y1:y2, x1:x2]
    trace = FSATrace([0], [1 + int(crop.rows.query_tokens[row])])
    model.logits_from_features(model.crop_features(window), trace=trace)
    r = crop.rows
    assert r.grid == (4, 4) and r.base.shape == (len(crop.points), 16) and r.kept_share.shape == (16,)
    for name in ("base", "isolated", "kept", "sharpened"):
        assert torch.equal(getattr(r, name)[row], getattr(trace, name)[0, 1:]), name
    # products of one row or of several with the same maps: the same up to summation order
    assert_close(r.ensembled[row], trace.ensembled[0, 1:], 1e-6, "ensembled")
    assert torch.equal(r.kept_share, trace.kept_share[0, 1:])
    assert r.maps("sharpened").shape == (len(crop.points), 4, 4) and r.maps("kept_share").shape == (4, 4)
    # point (100, 70) in window (16, 80, 48, 112): pixel (52, 54) of a 64 x 64 window on a 4 x 4 grid
    assert int(r.query_tokens[row]) == 3 * 4 + 3


def test_token_of_maps_pixels_to_the_row_major_grid():
    box, pad = (0, 64, 0, 96), (0, 0, 0, 0)
    assert token_of((50, 20), box, pad, (64, 96), (4, 6)) == 1 * 6 + 3
    assert token_of((0, 0), box, pad, (64, 96), (4, 6)) == 0
    assert token_of((95, 63), box, pad, (64, 96), (4, 6)) == 23
    # a padded window: the point moves by the padding
    assert token_of((20, 10), (10, 60, 20, 80), (3, 3, 7, 7), (64, 66), (4, 4)) == 0
    assert token_of((20 + 59, 10 + 49), (10, 60, 20, 80), (3, 3, 7, 7), (64, 66), (4, 4)) == 3 * 4 + 3
    assert token_of((20 + 13, 10 + 9), (10, 60, 20, 80), (3, 3, 7, 7), (64, 66), (4, 4)) == 1 * 4 + 0


def test_explain_proxyclip(names, image, one_thread):
    torch.manual_seed(0)
    model = CLIPSegModel(name_path=names, base_method="proxyclip", vfm="tiny-dino", precision="fp32", device="cpu",
                         slide_crop=0, **TINY_CLIP)
    ex = explain(model, image, [(10, 10), (90, 60)], strategies=("base", "ensemble"))
    (crop,) = ex.crops
    assert crop.box == (0, 80, 0, 112) and crop.points == [0, 1]
    h, w = crop.rows.grid
    assert crop.rows.base.shape == (2, h * w) and ex.kept_share.shape == (h * w,)
    # ProxyCLIP's A0 is shared by the heads and has no class token: its rows sum to 1, as do A_fb's
    assert torch.allclose(crop.rows.base.sum(-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(crop.rows.sharpened.sum(-1), torch.ones(2), atol=1e-5)
    assert (crop.rows.kept.sum(-1) < h * w).all() and 0 < ex.kept_share.mean() < 1
    assert not torch.equal(ex.predictions["base"], ex.predictions["ensemble"])


def test_explain_errors(tiny_model, image):
    with pytest.raises(ValueError, match="outside"):
        explain(tiny_model, image, [(112, 0)])
    with pytest.raises(ValueError, match="unknown strategies"):
        explain(tiny_model, image, [(0, 0)], strategies=("fsa",))
    with pytest.raises(ValueError, match="RGB"):
        explain(tiny_model, image[0], [(0, 0)])


def test_fsa_ensemble_setting(names, one_thread):
    torch.manual_seed(0)
    model = CLIPSegModel(name_path=names, base_method="vanilla", vfm=None, precision="fp32", device="cpu",
                         fsa_ensemble=False, **TINY_CLIP)
    assert model.fsa.ensemble is False and model.variant_settings()["fsa_ensemble"] is False
    crops = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    off = model.patch_logits(crops)
    with model.variant(fsa_ensemble=True):
        assert model.fsa.ensemble is True
        on = model.patch_logits(crops)
    assert model.fsa.ensemble is False and (on - off).abs().max() > 1e-4


# --- SAM3 --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sam3_names(tmp_path_factory):
    path = tmp_path_factory.mktemp("sam3") / "tiny.txt"
    path.write_text("background; sky; wall\ncat\ndog\nperson; people\n")
    return str(path)


@pytest.fixture(scope="module")
def sam3_pixels():
    return torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(1)) * 255


def released_log_odds_rows(base, glob, params):
    """A_fb from the log-odds inputs as the released code builds it (elementwise KL, sort + scatter pruning)."""
    q = F.softmax(base * params.scale - glob * params.isolation_scale, dim=-1)
    sim = 1 / (kl_divergence(q) + 1.0)
    pruned = sparse_attention(sim, p=params.top_p)
    kept = pruned != float("-inf")
    weights = pruned * torch.exp(params.lamda * pruned)
    weights[~kept] = float("-inf")
    return sim, kept, F.softmax(weights, dim=-1)


@pytest.mark.parametrize("placement", ["encoder_output", "last_layer"])
def test_sam3_explanation_matches_the_model_and_the_transcription(sam3_names, sam3_pixels, placement, one_thread):
    from dataclasses import replace

    from fsa_seg.internals import SAM3Explanation
    from fsa_seg.sam3 import decode
    from fsa_seg.sam3.feedback import log_odds_feedback_attention, log_odds_inputs
    from test_sam3_model import make_segmentor, reference_outputs, with_presence_thd

    seg = make_segmentor(sam3_names, fsa=True, fsa_placement=placement)
    norm = seg.normalise(sam3_pixels)
    present = with_presence_thd(seg, norm)
    points = [(0, 0), (63, 47), (30, 20)]
    ex = explain(seg, sam3_pixels, points)
    assert isinstance(ex, SAM3Explanation) and ex.placement == placement
    # predictions: the model's own, with and without FSA
    assert torch.equal(ex.predictions["fsa"], seg.predict([norm])[0].labels)
    with seg.variant(fsa=False):
        assert torch.equal(ex.predictions["base"], seg.predict([norm])[0].labels)
    # presence, present prompts, semantic maps: SAM3's reference forward
    ref = reference_outputs(seg, norm)
    assert ex.present.tolist() == present.tolist()
    torch.testing.assert_close(ex.presence, ref.presence_logits.flatten().sigmoid(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ex.semantic, ref.semantic_seg[:, 0], rtol=1e-4, atol=1e-4)
    assert len(ex.instances) == seg.num_queries
    # points on the 8 x 8 encoder grid of the whole image (48 x 64 pixels)
    assert ex.grid == (8, 8) and ex.query_tokens.tolist() == [0, 63, 3 * 8 + 3]
    # the feedback rows against the released algorithm on the same inputs
    vision = decode.encode_vision(seg.sam3, decode.resize_for_sam3(norm[None], seg.image_size))
    with torch.no_grad():
        first = seg.first_pass(vision, 0)
        uniform = seg.uniform_log_odds(vision, 0, first)
    base, glob = log_odds_inputs(first.token_log_odds, torch.arange(present.numel()), seg.feedback, uniform)
    sim, kept, a_fb = released_log_odds_rows(base, glob, seg.feedback)
    sim64, _, _ = released_log_odds_rows(base.double(), glob.double(), seg.feedback)
    tokens = ex.query_tokens
    safe = (boundary_margin(sim64, seg.feedback.top_p) > 1e-4)[0, tokens]
    assert safe.any()
    assert_close(ex.feedback["isolated"], sim[0, tokens], 1e-5, "isolated")
    assert torch.equal(ex.feedback["kept"][safe], kept[0, tokens][safe])
    assert_close(ex.feedback["sharpened"][safe], a_fb[0, tokens][safe], 1e-5, "sharpened")
    assert ex.kept_share.shape == (64,) and 0 < ex.kept_share.mean() < 1
    k = present.numel()
    if placement == "encoder_output":
        assert torch.equal(ex.feedback["base"], torch.eye(64)[tokens].expand(k, 3, 64))
        assert torch.equal(ex.feedback["ensembled"], ex.feedback["sharpened"].expand(k, 3, 64))
        return
    # the last encoder layer: A0 materialised per present prompt from the stored hidden state, Eq. 8 as written
    layer = seg.sam3.detr_encoder.layers[-1]
    expected_base, expected_ens = [], []
    a_fb_model = log_odds_feedback_attention(first.token_log_odds, torch.arange(k), seg.feedback, uniform).double()
    for i, prompt in enumerate(present.tolist()):
        vis, text, mask = seg._prompts(vision, 0, torch.tensor([prompt]))
        state = replace(decode.encoder_input(seg.sam3, vis, text, mask), hidden=first.hidden[i:i + 1])
        q, kk, _ = (t.double() for t in decode.layer_qkv(layer, state))
        a0 = (q @ kk.transpose(-1, -2) * layer.self_attn.scaling).softmax(dim=-1)[0]        # [h, N, N]
        ens = (a_fb_model[0] @ a0 + a0 @ a_fb_model[0] + a_fb_model[0]) / 3
        expected_base.append(a0.mean(0)[tokens])
        expected_ens.append(ens.mean(0)[tokens])
    assert_close(ex.feedback["base"], torch.stack(expected_base), 1e-6, "base")
    assert_close(ex.feedback["ensembled"], torch.stack(expected_ens), 1e-6, "ensembled")
    # teeth: a transposed A0 or A_fb would differ
    assert (ex.feedback["ensembled"] - ex.feedback["base"]).abs().max() > 1e-3


def test_fsa_ensemble_is_a_segmentor_key_and_a_variant(names, one_thread):
    from fsa_seg.plugin import FSASegmentor

    seg = FSASegmentor(name_path=names, base_method="vanilla", vfm=None, fsa_ensemble=False,
                       variants=[dict(fsa_ensemble=True)], **TINY_CLIP)
    assert seg.model.fsa.ensemble is False


def test_cached_features_and_image_maps(tiny_model, image):
    model = set_method(tiny_model, "clearclip")
    points = [(100, 70), (5, 5)]
    cache = {}
    first = explain(model, image, points, cache=cache)
    assert len(cache) == 3                                               # 6 windows, 2 a batch
    calls = []
    original = model.crop_features
    model.crop_features = lambda crops: calls.append(1) or original(crops)
    try:
        again = explain(model, image, points, cache=cache)
    finally:
        del model.crop_features
    assert not calls
    for name in STRATEGY_NAMES:
        assert torch.equal(first.predictions[name], again.predictions[name])
    with model.variant(top_p=0.2):
        sharper = explain(model, image, points, cache=cache)
    assert (sharper.crops[0].rows.kept.sum() < first.crops[0].rows.kept.sum())
    # the image map of point 1 (5, 5): only the windows holding it, NaN elsewhere; each value a row entry
    full = first.image_map(1, "sharpened")
    assert full.shape == (80, 112) and torch.isnan(full[70, 100]) and not torch.isnan(full[5, 5])
    crop, row = first.rows_of(1)[0]
    assert crop.box == (0, 64, 0, 64)
    # pixel (x=20, y=40) of window (0, 64, 0, 64): patch row 2, column 1 of the 4 x 4 grid
    assert torch.isclose(full[40, 20], crop.rows.sharpened[row, 2 * 4 + 1])

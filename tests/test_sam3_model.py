"""SAM3SegModel on a tiny random SAM3 (CPU): the split forward, the score logits it outputs (one resize per whole
image, window logits averaged, probabilities from the final logits), batching, and what FSA runs: the feedback
from the present prompts' token log-odds, the adapted pass at each placement against a plain transcription (a
transposed A_fb, a wrong layer or the re-run's presence instead of the first pass's must fail), uniform isolation,
absent prompts untouched, output mode; then options and weight errors."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from fsa_seg.sam3 import SAM3SegModel, decode
from fsa_seg.sam3.feedback import log_odds_feedback_attention, propagate_logits
from fsa_seg.sam3.loading import build_sam3, build_tokenizer, randomize_parameters_
from fsa_seg.sam3.scores import score_logits
from fsa_seg.weights import WeightsUnavailableError
from sam3_transcriptions import eq8_mix, pooled_by_loops, row_stochastic, transcribed_layer

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerics]


@pytest.fixture(scope="module")
def names_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("names") / "tiny.txt"
    path.write_text("background; sky; wall\ncat\ndog\nperson; people\n")
    return str(path)


def make_segmentor(names_file: str, **kwargs) -> SAM3SegModel:
    """A tiny SAM3 with spread-out random weights (transformers' init leaves its per-prompt maps within 1e-4 of
    each other), the same for every variant."""
    torch.manual_seed(0)
    seg = SAM3SegModel(name_path=names_file, random_weights=True, device="cpu", **kwargs)
    randomize_parameters_(seg.sam3, seed=0)
    seg.encode_queries()
    return seg


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(1))


def scores_of(seg: SAM3SegModel, images) -> torch.Tensor:
    return torch.stack(seg.image_scores(list(images)))


def reference_outputs(seg: SAM3SegModel, image: torch.Tensor) -> decode.HeadOutputs:
    """Every prompt through ``decode.forward_prompts`` (the composition the parity test checks) on ``image``."""
    ids, mask = seg._tokenize(seg.query_words)
    return decode.forward_prompts(seg.sam3, decode.resize_for_sam3(image[None], seg.image_size), ids, mask)


def with_presence_thd(seg: SAM3SegModel, image: torch.Tensor) -> torch.Tensor:
    """Set the segmentor's presence threshold between its prompts' presence probabilities so that some prompts are
    present and some absent; returns the present ones."""
    prob = reference_outputs(seg, image).presence_logits.flatten().sigmoid().sort().values
    below, above = prob[len(prob) // 2 - 1:len(prob) // 2 + 1].tolist()
    # the threshold is compared with presences computed another way (batched): keep it far from either side
    assert above - below > 1e-3, "presence probabilities too close for a threshold with a margin"
    thd = (below + above) / 2
    seg.settings = replace(seg.settings, presence_thd=thd)
    present = torch.nonzero(reference_outputs(seg, image).presence_logits.flatten().sigmoid() >= thd).flatten()
    assert 0 < present.numel() < seg.num_queries
    return present


def crop_vision(seg: SAM3SegModel, image: torch.Tensor) -> decode.VisionFeatures:
    return decode.encode_vision(seg.sam3, decode.resize_for_sam3(image[None], seg.image_size))


# -- the split forward ---------------------------------------------------------------------------------------
def test_split_forward_matches_sam3_forward():
    # without the geometry token the split is Sam3Model's own text-only forward (tests/test_sam3_parity.py
    # compares the default, with the token, against the reference forward)
    torch.manual_seed(0)
    model = build_sam3(random_weights=True)
    ids, mask = build_tokenizer(None, True)(["cat", "a red car", "sky"])
    pixels = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        ref = model(pixel_values=pixels[1:].expand(3, -1, -1, -1), input_ids=ids, attention_mask=mask)
        vision = decode.encode_vision(model, pixels, with_geometry=False).expand(1, 3)
        text = decode.encode_text(model, ids, mask)
        state = decode.encoder_input(model, vision, text, mask.bool())
        # layer by layer, split in two, as the first pass runs it for FSA
        state = decode.run_encoder_layers(model, state, text, range(1))
        state = decode.run_encoder_layers(model, state, text, range(1, len(model.detr_encoder.layers)))
        out = decode.run_heads(model, state.hidden, state, vision, text, mask.bool())
        semantic = decode.semantic_logits(model, state.hidden, vision, text, mask.bool())
    assert ref.presence_logits.abs().max() < 10  # Sam3Model clamps presence at +-10, the split does not
    for key in ("pred_masks", "pred_logits", "presence_logits", "semantic_seg", "pred_boxes"):
        torch.testing.assert_close(getattr(out, key), getattr(ref, key), rtol=0, atol=1e-5)
    torch.testing.assert_close(semantic, ref.semantic_seg[:, 0], rtol=0, atol=1e-5)  # no queries needed


# -- score logits, resizing, probabilities -------------------------------------------------------------------
def test_segmentor_outputs_the_recipe_logits_of_the_reference_forward(names_file, images):
    seg = make_segmentor(names_file)
    with torch.no_grad():
        got = seg.image_scores([images[0]])[0]
        ref = score_logits(reference_outputs(seg, images[0]), seg.recipe)
    assert got.shape == (7, 32, 32)                 # SAM3's mask resolution: resized later, once
    assert (got - ref).abs().max() < 1e-5 * ref.abs().max()


def test_whole_image_is_resized_once_and_probabilities_come_last(names_file, images):
    seg = make_segmentor(names_file)
    size = (30, 50)                                   # the image's original size (the input was resized)
    with torch.no_grad():
        pred = seg.predict([images[0]], [size])[0]
        logits = score_logits(reference_outputs(seg, images[0]), seg.recipe)
    resized = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    expected = seg.max_over_synonyms(resized).sigmoid()
    torch.testing.assert_close(pred.probabilities, expected, rtol=1e-5, atol=1e-6)
    assert pred.probabilities.shape == (4, 30, 50) and torch.equal(pred.labels, seg.labels(expected))
    # resizing probabilities instead, or resizing twice (to the crop, then to the image), gives other numbers
    via_probs = seg.max_over_synonyms(F.interpolate(logits.sigmoid()[None], size=size, mode="bilinear")[0])
    twice = F.interpolate(F.interpolate(logits[None], size=(48, 64), mode="bilinear"), size=size, mode="bilinear")
    assert (via_probs - expected).abs().max() > 1e-3
    assert (seg.max_over_synonyms(twice[0]).sigmoid() - expected).abs().max() > 1e-3


def test_sliding_windows_average_logits(names_file, images):
    seg = make_segmentor(names_file, slide_crop=48, slide_stride=16)   # two windows: x 0..48 and 16..64
    image = images[0]
    with torch.no_grad():
        got = seg.image_scores([image])[0]
        left, right = seg.crop_scores(image[None, :, :, :48])[0], seg.crop_scores(image[None, :, :, 16:])[0]
        pred = seg.predict([image])[0]
    expected = torch.zeros(7, 48, 64)
    expected[:, :, :48] += left
    expected[:, :, 16:] += right
    expected[:, :, 16:48] /= 2
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pred.probabilities, seg.max_over_synonyms(expected).sigmoid(), rtol=1e-5, atol=1e-5)
    mean_of_probs = (left[:, :, 16:].sigmoid() + right[:, :, :32].sigmoid()) / 2
    assert (mean_of_probs - expected[:, :, 16:48].sigmoid()).abs().max() > 1e-3


# -- batching --------------------------------------------------------------------------------------------------
# Batching must not change what any prompt sees. The discrete decisions (presence and instance thresholds, top-p's
# kept set) are step functions: with these random weights the class distributions are nearly flat, so fp32
# rounding that differs between batch shapes (and between CPU kernel paths) can move a top-p boundary. So the
# comparison is made twice: in fp32 with every decision made continuous (every prompt present, every instance
# kept, no pruning: nothing can flip, so the tolerance is tight), and in float64 with the decisions as configured
# (rounding ~1e-16 is far below any boundary a flip would need).
FSA_VARIANTS = [dict(), dict(fsa=True), dict(fsa=True, fsa_placement="last_layer"),
                dict(fsa=True, fsa_placement="last_k", fsa_layers=2), dict(fsa=True, isolation="uniform"),
                dict(fsa=True, fsa_mode="output"), dict(fsa=True, fsa_strategies="ensemble")]
CONTINUOUS = dict(presence_thd=0.0, instance_thd=0.0, top_p=1.0)
BATCHES = [dict(query_batch_size=1, fsa_batch_size=1), dict(query_batch_size=4, fsa_batch_size=3)]


def in_float64(seg: SAM3SegModel) -> SAM3SegModel:
    seg.sam3.to(torch.float64)
    seg.run_dtype = torch.float64
    seg.encode_queries()
    return seg


@pytest.mark.parametrize("fsa_kwargs", FSA_VARIANTS)
def test_prompt_batches_match_one_at_a_time_without_discrete_decisions(names_file, images, fsa_kwargs):
    one, many = (scores_of(make_segmentor(names_file, **batch, **CONTINUOUS, **fsa_kwargs), images)
                 for batch in BATCHES)
    assert one.shape == (2, 7, 32, 32)
    assert (one - many).abs().max() < 1e-5 * one.abs().max()


@pytest.mark.parametrize("fsa_kwargs", FSA_VARIANTS)
def test_prompt_batches_match_one_at_a_time_in_float64(names_file, images, fsa_kwargs):
    one, many = (scores_of(in_float64(make_segmentor(names_file, **batch, presence_thd=0.3, **fsa_kwargs)),
                           images.double()) for batch in BATCHES)
    assert one.shape == (2, 7, 32, 32)
    assert (one - many).abs().max() < 1e-6 * one.abs().max()


def test_image_batch_matches_single_images(names_file, images):
    seg = make_segmentor(names_file, fsa=True, crop_batch_size=2, presence_thd=0.3)
    pair = [images[0], images[1, :, :40, :56]]      # different sizes, one batch at SAM3's input size
    both = seg.image_scores(pair)
    for image, scores in zip(pair, both):
        assert (scores - seg.image_scores([image])[0]).abs().max() < 1e-4 * scores.abs().max()


# -- FSA -------------------------------------------------------------------------------------------------------
def test_feedback_is_the_present_prompts_token_log_odds(names_file, images):
    seg = make_segmentor(names_file, fsa=True)
    present = with_presence_thd(seg, images[0])
    with torch.no_grad():
        first = seg.first_pass(crop_vision(seg, images[0]), 0)
        ref = reference_outputs(seg, images[0])
    assert first.present.tolist() == present.tolist()
    grid = (8, 8)                                     # the tiny config's encoder tokens; masks are 32 x 32
    expected = pooled_by_loops(ref.semantic_seg[present, 0], grid) \
        + F.logsigmoid(ref.presence_logits[present, 0].double())[None]
    torch.testing.assert_close(first.token_log_odds.double(), expected, rtol=1e-4, atol=1e-4)
    assert first.hidden.shape == (present.numel(), 64, 32)


@pytest.mark.parametrize("placement, layers", [("encoder_output", 0), ("last_layer", 1), ("last_k", 2)])
def test_adapted_pass_equals_the_transcription(names_file, images, placement, layers):
    seg = make_segmentor(names_file, fsa=True, fsa_placement=placement, fsa_layers=max(layers, 1),
                         fsa_batch_size=2)
    present = with_presence_thd(seg, images[0])
    a_fb = row_stochastic(64, 5, torch.float32)       # asymmetric: a transposed use of it would show
    vision = crop_vision(seg, images[0])
    with torch.no_grad():
        first = seg.first_pass(vision, 0)
        got = seg.adapted_logits(vision, 0, first, a_fb)
        expected, rerun_presence = transcribed_adapted(seg, vision, present, first.presence_logits, a_fb, layers)
        transposed, _ = transcribed_adapted(seg, vision, present, first.presence_logits, a_fb.transpose(1, 2),
                                            layers)
    absent = [q for q in range(seg.num_queries) if q not in present.tolist()]
    assert torch.equal(got[absent], first.logits[absent])                   # absent prompts: first pass
    scale = expected.abs().max()
    assert (got[present] - expected).abs().max() < 1e-4 * scale
    assert (transposed - expected).abs().max() > 1e-2 * scale
    assert (got[present] - first.logits[present]).abs().max() > 1e-2 * scale  # FSA moved the present ones
    # the re-run's own presence differs: weighting by it instead of the first pass's would fail above
    assert (rerun_presence - first.presence_logits[present]).abs().max() > 1e-2


def transcribed_adapted(seg, vision, present, first_presence, a_fb, layers):
    """The present prompts' score logits with FSA, prompt by prompt: the encoder up to the placement, then Eq. 8
    with A0 materialised in each adapted layer (or ``A_fb X`` on the encoder output), the heads, and the first
    pass's presence for the weighting. Also returns the re-run's own presence logits."""
    model, out, presence = seg.sam3, [], []
    num_layers = len(model.detr_encoder.layers)
    for q in present.tolist():
        vis = vision.expand(0, 1)
        text, mask = decode.prompt_features(vis, seg.text_features[q:q + 1], seg.text_mask[q:q + 1])
        state = decode.encoder_input(model, vis, text, mask)
        state = decode.run_encoder_layers(model, state, text, range(num_layers - layers))
        hidden = state.hidden
        if layers == 0:
            hidden = (a_fb[0].double() @ hidden[0].double()).float()[None]
        for index in range(num_layers - layers, num_layers):
            hidden = transcribed_layer(model.detr_encoder.layers[index], replace(state, hidden=hidden), text,
                                       eq8_mix(a_fb))
        heads = decode.run_heads(model, hidden, state, vis, text, mask)
        presence.append(heads.presence_logits.flatten())
        out.append(score_logits(replace(heads, presence_logits=first_presence[q:q + 1, None]), seg.recipe))
    return torch.cat(out), torch.cat(presence)


@pytest.mark.parametrize("placement, layers", [("encoder_output", 0), ("last_k", 2)])
def test_uniform_isolation_runs_the_placement_with_uniform_attention(names_file, images, placement, layers):
    seg = make_segmentor(names_file, fsa=True, fsa_placement=placement, fsa_layers=max(layers, 1),
                         isolation="uniform")
    present = with_presence_thd(seg, images[0])
    vision = crop_vision(seg, images[0])
    model, num_layers = seg.sam3, len(seg.sam3.detr_encoder.layers)
    with torch.no_grad():
        first = seg.first_pass(vision, 0)
        got = seg.uniform_log_odds(vision, 0, first)
        expected = []
        for q in present.tolist():
            vis = vision.expand(0, 1)
            text, mask = decode.prompt_features(vis, seg.text_features[q:q + 1], seg.text_mask[q:q + 1])
            state = decode.run_encoder_layers(model, decode.encoder_input(model, vis, text, mask), text,
                                              range(num_layers - layers))
            hidden = state.hidden
            if layers == 0:
                hidden = hidden.mean(dim=1, keepdim=True).expand_as(hidden)
            for index in range(num_layers - layers, num_layers):
                hidden = transcribed_layer(model.detr_encoder.layers[index], replace(state, hidden=hidden), text,
                                           lambda a0, v: torch.full_like(a0, 1.0 / a0.shape[-1]) @ v)
            semantic = decode.run_heads(model, hidden, state, vis, text, mask).semantic_seg[:, 0]
            expected.append(pooled_by_loops(semantic, (8, 8))[:, 0]
                            + F.logsigmoid(first.presence_logits[q].double()))
    expected = torch.stack(expected, dim=1)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
    assert (got.double() - first.token_log_odds.double()).abs().max() > 1e-2   # not the base signal


def test_fsa_pass_is_the_adapted_pass_with_the_feedback_of_the_first(names_file, images):
    # the whole FSA step: A_fb from the first pass's present prompts, then the adapted pass; absent untouched
    seg = make_segmentor(names_file, fsa=True, fsa_mode="output")
    present = with_presence_thd(seg, images[0])
    vision = crop_vision(seg, images[0])
    with torch.no_grad():
        first = seg.first_pass(vision, 0)
        got = seg.query_logits(vision, 0)
        uniform = seg.uniform_log_odds(vision, 0, first)          # the default isolation's uniform pass
    a_fb = log_odds_feedback_attention(first.token_log_odds, torch.arange(present.numel()), seg.feedback, uniform)
    expected = first.logits.clone()
    expected[present] = propagate_logits(first.logits[present], a_fb, (8, 8))
    torch.testing.assert_close(got, expected)
    assert (got[present] - first.logits[present]).abs().max() > 1e-3


def test_identity_feedback_on_the_encoder_output_reproduces_the_first_pass(names_file, images):
    # A_fb = I at the encoder output: A_fb X = X, so the whole re-run path (stored states, sub-batches, heads,
    # first-pass presence) must give back the first pass
    seg = make_segmentor(names_file, fsa=True, presence_thd=0.0, fsa_batch_size=3)
    vision = crop_vision(seg, images[0])
    with torch.no_grad():
        first = seg.first_pass(vision, 0)
        again = seg.adapted_logits(vision, 0, first, torch.eye(64)[None])
    assert first.present.numel() == seg.num_queries
    assert (again - first.logits).abs().max() < 1e-4 * first.logits.abs().max()


def test_nothing_present_leaves_the_first_pass(names_file, images):
    seg = make_segmentor(names_file, fsa=True, presence_thd=1.0)
    base = make_segmentor(names_file)
    assert torch.equal(scores_of(seg, images[:1]), scores_of(base, images[:1]))


@pytest.mark.parametrize("fsa_kwargs", FSA_VARIANTS[1:])
def test_fsa_changes_outputs(names_file, images, fsa_kwargs):
    base = scores_of(make_segmentor(names_file), images)
    adapted = scores_of(make_segmentor(names_file, presence_thd=0.3, **fsa_kwargs), images)
    assert (adapted - base).abs().max() > 1e-3 * base.abs().max()
    assert torch.isfinite(adapted).all()


# -- configuration and weights ---------------------------------------------------------------------------------
def test_bad_options_are_rejected(names_file):
    for bad in (dict(score_source="boxes"), dict(fsa_mode="tokens"), dict(both_reduce="sum"), dict(top_p=0.0),
                dict(fsa_placement="decoder"), dict(fsa_placement="last_k", fsa_layers=0),
                dict(fsa_placement="last_k", fsa_layers=3), dict(isolation=True), dict(fsa_strategies="all"),
                dict(instance_thd=2.0), dict(top_k=-1), dict(fsa_batch_size=0)):
        with pytest.raises(ValueError):
            make_segmentor(names_file, **bad)


def _offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_offline_hub_id_gives_clear_error(monkeypatch, tmp_path, names_file):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(WeightsUnavailableError) as info:
        SAM3SegModel(name_path=names_file, checkpoint="facebook/sam3", device="cpu")
    text = str(info.value)
    for needed in ("huggingface.co/facebook/sam3", "huggingface-cli login", "HF_TOKEN", "model.checkpoint="):
        assert needed in text


def test_missing_local_folder_gives_clear_error(tmp_path, names_file):
    folder = str(tmp_path / "no" / "sam3")
    with pytest.raises(WeightsUnavailableError, match="local folder .*not found.*model.checkpoint="):
        SAM3SegModel(name_path=names_file, checkpoint=folder, device="cpu")


def test_gated_repo_gives_clear_error(monkeypatch, names_file):
    from transformers import Sam3Model

    def gated(*args, **kwargs):
        raise OSError("You are trying to access a gated repo. 401 Client Error. Make sure to request access.")

    monkeypatch.setattr(Sam3Model, "from_pretrained", gated)
    with pytest.raises(WeightsUnavailableError, match="gated.*accept the licence"):
        SAM3SegModel(name_path=names_file, checkpoint="facebook/sam3", device="cpu")

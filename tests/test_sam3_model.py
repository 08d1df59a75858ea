"""SAM3SegModel internals on a tiny random SAM3 (CPU): the split forward, batching, the adapted encoder layer,
presence pruning, the shared FSA core and the weight errors."""
from __future__ import annotations

import pytest
import torch

from fsa_seg import fsa as fsa_core
from fsa_seg.sam3 import SAM3SegModel, decode
from fsa_seg.sam3.feedback import Sam3FeedbackParams, feedback_logits, kept_prompts, sam3_feedback_attention
from fsa_seg.sam3.loading import build_sam3, build_tokenizer
from fsa_seg.weights import WeightsUnavailableError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def names_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("names") / "tiny.txt"
    path.write_text("background; sky; wall\ncat\ndog\nperson; people\n")
    return str(path)


def make_segmentor(names_file: str, **kwargs) -> SAM3SegModel:
    torch.manual_seed(0)  # same random SAM3 for every variant
    kwargs.setdefault("presence_thd", 0.0)
    return SAM3SegModel(name_path=names_file, random_weights=True, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(1))


def scores_of(seg: SAM3SegModel, images: torch.Tensor) -> torch.Tensor:
    return torch.stack(seg.image_scores(list(images)))


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
        state = decode.encode_to_last_layer(model, vision, text, mask.bool())
        encoded = decode.original_last_layer(model.detr_encoder.layers[-1], state, text)
        out = decode.run_heads(model, encoded, state, vision, text, mask.bool())
    assert ref.presence_logits.abs().max() < 10  # Sam3Model clamps presence at +-10, the split does not
    for key in ("pred_masks", "pred_logits", "presence_logits", "semantic_seg", "pred_boxes"):
        torch.testing.assert_close(getattr(out, key), getattr(ref, key), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def layer_inputs():
    torch.manual_seed(0)
    model = build_sam3(random_weights=True)
    ids, mask = build_tokenizer(None, True)(["cat", "dog"])
    with torch.no_grad():
        vision = decode.encode_vision(model, torch.randn(1, 3, 112, 112)).expand(0, 2)
        text = decode.encode_text(model, ids, mask)
        state = decode.encode_to_last_layer(model, vision, text, mask.bool())
    return model.detr_encoder.layers[-1], state, text


def test_adapted_layer_with_original_attention_reproduces_layer(layer_inputs):
    layer, state, text = layer_inputs
    with torch.no_grad():
        ref = decode.original_last_layer(layer, state, text)
        plain = decode.last_layer_forward(layer, state, text)
        injected = decode.last_layer_forward(layer, state, text, attend_fn=lambda a0, v: fsa_core.attend(a0, v))
    assert (plain - ref).abs().max() < 1e-5
    assert (injected - ref).abs().max() < 1e-5


def test_identity_feedback_gives_the_ensemble_of_eq8(layer_inputs):
    # A_fb = I: (I A0 + A0 I + I) V / 3 = (2 A0 + I) V / 3, per head.
    layer, state, text = layer_inputs
    n = state.hidden.shape[1]
    eye = torch.eye(n).expand(state.hidden.shape[0], n, n)
    with torch.no_grad():
        fsa_out = decode.last_layer_forward(layer, state, text,
                                            attend_fn=lambda a0, v: fsa_core.ensemble_attend(eye, a0, v))
        direct = decode.last_layer_forward(layer, state, text,
                                           attend_fn=lambda a0, v: ((2 * a0 + torch.eye(n)) / 3) @ v)
        ref = decode.original_last_layer(layer, state, text)
    assert (fsa_out - direct).abs().max() < 1e-5
    assert (fsa_out - ref).abs().max() > 1e-4


def test_rerun_path_with_original_attention_reproduces_outputs(names_file, images, monkeypatch):
    # The whole FSA path (stored layer inputs, sub-batches, heads re-run) with the ensemble replaced by A0 V.
    base = scores_of(make_segmentor(names_file), images)
    monkeypatch.setattr(fsa_core, "ensemble_attend", lambda a_fb, a0, v: fsa_core.attend(a0, v))
    rerun = scores_of(make_segmentor(names_file, fsa=True, query_batch_size=3, fsa_batch_size=2), images)
    assert (rerun - base).abs().max() < 1e-5


# -- batching --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fsa_kwargs", [dict(), dict(fsa=True), dict(fsa=True, fsa_mode="output")])
def test_prompt_batches_match_one_at_a_time(names_file, images, fsa_kwargs):
    one = scores_of(make_segmentor(names_file, query_batch_size=1, fsa_batch_size=1, **fsa_kwargs), images)
    many = scores_of(make_segmentor(names_file, query_batch_size=4, fsa_batch_size=3, **fsa_kwargs), images)
    assert one.shape == (2, 7, 48, 64)
    assert (one - many).abs().max() < 1e-5


def test_image_batch_matches_single_images(names_file, images):
    seg = make_segmentor(names_file, fsa=True)
    both = scores_of(seg, images)
    single = torch.cat([scores_of(seg, images[i:i + 1]) for i in range(2)])
    assert (both - single).abs().max() < 1e-5


# -- FSA -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["attention", "output"])
def test_fsa_changes_outputs(names_file, images, mode):
    base = scores_of(make_segmentor(names_file), images)
    adapted = scores_of(make_segmentor(names_file, fsa=True, fsa_mode=mode), images)
    assert (adapted - base).abs().max() > 1e-4
    assert adapted.min() >= 0 and adapted.max() <= 1


def test_presence_pruning_removes_exactly_the_absent_prompts():
    token_scores = torch.rand(6, 5)
    presence = torch.tensor([0.9, 0.2, 0.5, 0.49, 0.7])
    params = Sam3FeedbackParams(presence_thd=0.5)
    logits, glob, kept = feedback_logits(token_scores, presence, params)
    assert kept.tolist() == [0, 2, 4]
    assert logits.shape == (1, 6, 4)  # kept prompts + 'rest'
    torch.testing.assert_close(logits[0, :, :3], token_scores[:, [0, 2, 4]])
    torch.testing.assert_close(logits[0, :, 3], 1 - token_scores[:, [0, 2, 4]].amax(dim=1))
    torch.testing.assert_close(glob, logits.mean(dim=1, keepdim=True))
    assert kept_prompts(presence, Sam3FeedbackParams(presence_pruning=False)).tolist() == [0, 1, 2, 3, 4]
    no_iso = feedback_logits(token_scores, presence, Sam3FeedbackParams(isolation=False))[1]
    assert torch.count_nonzero(no_iso) == 0
    # nothing present: no feedback (the segmentor keeps SAM3's outputs)
    assert sam3_feedback_attention(token_scores, torch.zeros(5), params) is None


def test_segmentor_prunes_by_presence(names_file, images, monkeypatch):
    seen = []
    core = fsa_core.feedback_attention

    def spy(base_logits, uniform_logits, params=fsa_core.FSAParams(), out_dtype=None):
        seen.append(base_logits.shape[-1])
        return core(base_logits, uniform_logits, params, out_dtype)

    monkeypatch.setattr(fsa_core, "feedback_attention", spy)
    seg = make_segmentor(names_file, fsa=True, fsa_mode="output")
    vision = decode.encode_vision(seg.sam3, decode.resize_for_sam3(images[:1], seg.image_size))
    with torch.no_grad():
        presence = torch.cat([seg._decode(vision, 0, slice(i, i + 1))[1] for i in range(seg.num_queries)])
    thd = float(presence.median())
    seg.feedback = Sam3FeedbackParams(presence_thd=thd)
    with torch.no_grad():
        seg.crop_query_scores(vision, 0)
    assert seen == [int((presence >= thd).sum()) + 1]


def test_fsa_core_is_shared(names_file, images, monkeypatch):
    from fsa_seg.sam3 import feedback
    from fsa_seg.sam3 import model as segmentor

    assert feedback.fsa_core is fsa_core and segmentor.fsa_core is fsa_core and decode.fsa_core is fsa_core
    calls = {"feedback_attention": 0, "ensemble_attend": 0}
    for name in calls:
        original = getattr(fsa_core, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(fsa_core, name, spy)
    scores_of(make_segmentor(names_file, fsa=True, query_batch_size=7, fsa_batch_size=7), images)
    assert calls == {"feedback_attention": 2, "ensemble_attend": 2}  # once per image (crop)


# -- configuration and weights ---------------------------------------------------------------------------------
def test_bad_options_are_rejected(names_file):
    for bad in (dict(score_source="boxes"), dict(fsa_mode="tokens"), dict(both_reduce="sum"), dict(top_p=0.0)):
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

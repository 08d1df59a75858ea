"""Many settings in one pass over the data: each variant's prediction equals a model built with its
setting, bit for bit; one pass writes what separate runs write; the variant-key checks."""
import json
from pathlib import Path

import pytest
import torch

from datagen import write_voc
from fsa_seg.apis import evaluate, load_config
from fsa_seg.apis.evaluate import evaluate_variants
from fsa_seg.apis.grid import combo_dir, expand_grid
from fsa_seg.apis.one_pass import pass_variants
from fsa_seg.clip_model import CLIPSegModel
from fsa_seg.open_vocab import VariantError
from fsa_seg.plugin import FSAProxySegmentation, FSASegmentor
from fsa_seg.plugin.resume import load_records
from tiny import TINY_CLIP, as_cli, tiny_run_options
from tooling import run_tool

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "fsa_proxy_sam_voc21.py")

# Every CLIP variant key appears in at least one variant of the two cases below.
PROXY_VARIANTS = [{}, {"top_p": 0.3, "lamda": 2.0}, {"top_p": 1.0, "fsa_ensemble": False}, {"fsa": False, "prob_thd": 0.5},
                  {"beta": 1.0, "gamma": 4.0, "feedback_scale": 10.0, "isolation_scale": 30.0},
                  {"pamr": True, "pamr_steps": 2, "pamr_dilations": (1, 2), "logit_scale": 60.0}]
NATIVE_VARIANTS = [{}, {"fsa": True, "top_p": 0.6}, {"base_method": "naclip", "base_method_cfg": {"gaussian_std": 2.0}},
                   {"base_method": "clearclip", "fsa": True}, {"base_method_cfg": {"residual": False}},
                   {"area_thd": 0.2, "renormalize": True}, {"pamr": True, "pamr_steps": 3, "prob_thd": 0.05}]


def built_like(model: CLIPSegModel, kwargs: dict) -> CLIPSegModel:
    """A model built with ``kwargs``, with ``model``'s weights and text embeddings."""
    other = CLIPSegModel(**kwargs).eval()
    other.load_state_dict(model.state_dict())
    other.text_embeddings = model.text_embeddings.clone()
    return other


CASES = {
    # ProxyCLIP + FSA, sliding window over two images of different sizes (windows of both batched together)
    "proxy_sliding": (dict(name_path="voc21", vfm="tiny-dino", base_method="proxyclip", slide_crop=48,
                           slide_stride=24, crop_batch_size=3), PROXY_VARIANTS),
    # SCLIP without a proxy, whole image (one window per image, its own size)
    "native_whole": (dict(name_path="voc21", vfm=None, base_method="sclip", fsa=False, slide_crop=0),
                     NATIVE_VARIANTS),
}


def test_the_cases_vary_every_clip_variant_key():
    assert set().union(*PROXY_VARIANTS, *NATIVE_VARIANTS) == CLIPSegModel.VARIANT_KEYS


@pytest.mark.numerics
@pytest.mark.parametrize("case", sorted(CASES))
def test_variants_equal_models_built_with_them(case, one_thread):
    kwargs, variants = CASES[case]
    kwargs = {**kwargs, **TINY_CLIP}
    torch.manual_seed(0)
    model = CLIPSegModel(**kwargs).eval()
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(3, 64, 80, generator=g), torch.randn(3, 56, 40, generator=g)]
    sizes = [(70, 90), (56, 40)]  # the first one is resized to its "original" size
    before = model.predict(images, sizes)
    out = model.predict_variants(images, sizes, variants)
    assert len(out) == 2 and all(len(per_image) == len(variants) for per_image in out)
    for k, variant in enumerate(variants):
        expected = built_like(model, {**kwargs, **variant}).predict(images, sizes)
        for i in range(2):
            assert torch.equal(out[i][k].labels, expected[i].labels), (variant, i)
            assert torch.equal(out[i][k].probabilities, expected[i].probabilities), (variant, i)
    # The variants really differ (a variant ignored would equal the model as built) ...
    for k in range(1, len(variants)):
        assert not torch.equal(out[0][k].probabilities, out[0][0].probabilities), variants[k]
    # ... and the model is left as it was.
    after = model.predict(images, sizes)
    for a, b in zip(before, after):
        assert torch.equal(a.probabilities, b.probabilities) and torch.equal(a.labels, b.labels)


@pytest.mark.numerics
def test_variants_that_differ_only_after_the_scores_share_them(one_thread):
    """Thresholds, the logit scale and PAMR act after the crop scores: the last block and FSA run once for the
    variants that differ only in those, and each variant still equals a model built with its settings."""
    from unittest import mock

    kwargs = dict(name_path="voc21", vfm="tiny-dino", base_method="proxyclip", slide_crop=48, slide_stride=24,
                  **TINY_CLIP)
    torch.manual_seed(0)
    model = CLIPSegModel(**kwargs).eval()
    variants = [{}, {"prob_thd": 0.5, "logit_scale": 60.0}, {"top_p": 0.3}, {"pamr": True, "pamr_steps": 2},
                {"top_p": 0.3, "area_thd": 0.2, "renormalize": True}]
    states = [model.variant_state(v) for v in variants]
    scoring, index = model.scoring_groups(states)
    assert index == [0, 0, 1, 0, 1] and scoring[0] is states[0] and scoring[1] is states[2]
    images = [torch.randn(3, 64, 80, generator=torch.Generator().manual_seed(1))]
    with mock.patch.object(CLIPSegModel, "scores_from_features", autospec=True,
                           side_effect=CLIPSegModel.scores_from_features) as scores:
        model.predict(images)
        batches = scores.call_count
        scores.reset_mock()
        out = model.predict_variants(images, None, variants)
        assert scores.call_count == 2 * batches  # two groups, not five variants
    for k, variant in enumerate(variants):
        expected = built_like(model, {**kwargs, **variant}).predict(images)
        assert torch.equal(out[0][k].labels, expected[0].labels), variant
        assert torch.equal(out[0][k].probabilities, expected[0].probabilities), variant


def test_variant_context_restores_the_model(one_thread):
    model = CLIPSegModel(name_path="voc21", vfm="tiny-dino", **TINY_CLIP)
    fsa, method = model.fsa, model.method
    with model.variant(fsa=False, prob_thd=0.7, base_method_cfg={"beta": 0.5}):
        assert model.fsa is None and model.prob_thd == 0.7 and model.method.beta == 0.5
        assert model.variant_settings()["fsa"] is False
    assert model.fsa is fsa and model.method is method and model.prob_thd == 0.0
    assert model.variant_settings()["fsa"] is True
    with pytest.raises(ValueError, match="top_p"):  # a bad value fails when the variant is set up
        model.variant(top_p=0.0)
    assert model.fsa is fsa


@pytest.mark.parametrize("changes, words", [
    ({"slide_crop": 224}, ["model.slide_crop", "use separate runs"]),
    ({"clip_model": "ViT-B-16"}, ["model.clip_model", "use separate runs"]),
    ({"base_method": "sclip"}, ["model.base_method='sclip'", "does not use the proxy", "use separate runs"]),
    ({"base_method": "nope"}, ["unknown base method"]),
])
def test_keys_that_change_the_crops_or_the_backbone_are_refused(changes, words, one_thread):
    model = CLIPSegModel(name_path="voc21", vfm="tiny-dino", **TINY_CLIP)
    with pytest.raises(VariantError) as err:
        model.variant_state(changes)
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value)
    native = CLIPSegModel(name_path="voc21", vfm=None, base_method="sclip", **TINY_CLIP)
    with pytest.raises(VariantError, match="needs the proxy"):
        native.variant_state({"base_method": "proxyclip"})


def test_segmentor_maps_config_keys_and_checks_them(one_thread):
    own = dict(name_path="voc21", vfm="tiny-dino", **TINY_CLIP)
    assert FSASegmentor.variant_changes(own, {"top_p": 0.3, "fsa": True}) == {"top_p": 0.3}
    assert FSASegmentor.variant_changes(own, {"pamr_dilations": [8, 16]}) == {}  # the default, as a list
    released = dict(clip_type=None, model_type="tiny-ViT-16", vfm_model="tiny-dino", name_path="voc21",
                    random_weights=True, cache_text=False, templates="single")
    assert FSAProxySegmentation.variant_changes(released, {"FSA": False}) == {"fsa": False}
    with pytest.raises(VariantError, match="model.vfm .*use separate runs"):
        FSAProxySegmentation.variant_changes(released, {"vfm_model": "tiny-sam"})
    with pytest.raises(VariantError, match="model.slide_crop"):
        FSASegmentor(variants=[{"top_p": 0.3}, {"slide_crop": 64}], **own)


def test_pass_variants_names_what_differs(tmp_path):
    base = load_config(CONFIG)
    same = load_config(CONFIG, {"model.top_p": 0.3, "model.prob_thd": 0.1})
    assert pass_variants([base, same, base]) == [{}, {"top_p": 0.3, "prob_thd": 0.1}, {}]
    for options, word in [({"test_dataloader.dataset.data_root": "/elsewhere"}, "test_dataloader"),
                          ({"model.slide_stride": 80}, "model.slide_stride"),
                          ({"model.type": "SAM3Segmentor"}, "model.type")]:
        with pytest.raises(VariantError, match=word):
            pass_variants([base, load_config(CONFIG, options)])
    assert expand_grid([("model.top_p", [0.3, 0.6]), ("model.lamda", [2])]) == [
        {"model.top_p": 0.3, "model.lamda": 2}, {"model.top_p": 0.6, "model.lamda": 2}]
    assert combo_dir("w", {"model.top_p": 0.3, "model.lamda": 2}) == "w/top_p=0.3__lamda=2"


# --- the evaluation API: one pass writes what separate runs write ------------------------------------------
def tiny_options(tmp_path: Path, data_root: Path, **extra) -> dict:
    return tiny_run_options(tmp_path, data_root, **{"model.slide_crop": 32, "model.slide_stride": 16,
                                                    "test_dataloader.batch_size": 2, **extra})


def test_one_pass_writes_what_separate_runs_write(tmp_path, one_thread):
    write_voc(tmp_path / "voc", [(48, 64), (40, 56), (56, 40)], seed=3)
    options = tiny_options(tmp_path, tmp_path / "voc")
    variants = [{"model.top_p": 0.3}, {"model.fsa": False, "model.prob_thd": 0.4},
                {"model.lamda": 2.0, "model.pamr": True, "model.pamr_steps": 2}]
    one = [str(tmp_path / "one" / str(k)) for k in range(len(variants))]
    metrics = evaluate_variants(CONFIG, variants, one, options)
    for k, variant in enumerate(variants):
        separate = str(tmp_path / "separate" / str(k))
        expected = evaluate(CONFIG, {**options, **variant}, separate)
        assert metrics[k] == expected
        a = json.loads((Path(one[k]) / "results.json").read_text())
        b = json.loads((Path(separate) / "results.json").read_text())
        for key in ("config", "cfg_options", "model", "dataset", "metrics", "per_class", "images"):
            assert a[key] == b[key], key
        assert set(a) == set(b) and "variants" not in a["model"]
        for name in ("meta.json", "rank0.jsonl"):  # resume sees the same records
            assert (Path(one[k]) / "per_image" / name).read_text() == \
                (Path(separate) / "per_image" / name).read_text(), name
    assert len({json.dumps(m) for m in metrics}) == len(variants)  # the settings gave different numbers


@pytest.mark.slow
def test_tools_test_variants_grid(tmp_path):
    write_voc(tmp_path / "voc", [(40, 56)])
    options = tiny_options(tmp_path, tmp_path / "voc")
    cli = as_cli(options)
    done = run_tool("test", CONFIG, "--work-dir", tmp_path / "w", "--variants", "model.top_p=0.3,0.6",
                    "--variants", "model.lamda=2", "--cfg-options", *cli)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "one pass, 2 settings" in done.stdout
    for top_p in (0.3, 0.6):
        result = json.loads((tmp_path / "w" / f"top_p={top_p}__lamda=2" / "results.json").read_text())
        assert result["cfg_options"]["model.top_p"] == top_p and result["cfg_options"]["model.lamda"] == 2
        assert result["model"]["top_p"] == top_p and result["images"] == 1
        assert len(load_records(str(tmp_path / "w" / f"top_p={top_p}__lamda=2" / "per_image"))) == 1
    bad = run_tool("test", CONFIG, "--work-dir", tmp_path / "bad", "--variants", "model.slide_crop=32,48",
                   "--cfg-options", *cli)
    assert bad.returncode == 2
    (line,) = bad.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: model.slide_crop") and "use separate runs" in line


# Variants of the SAM3 test below, and how many first passes of the decoder they need per crop: 0, 1, 2, 4, 7 and
# 9 share one (same score recipe, placement start, presence threshold and stored states), 3 (no FSA) takes 0's
# logits; 5, 6 and 8 need their own.
SAM3_VARIANTS = [{}, {"prob_thd": 0.5}, {"area_thd": 0.3, "renormalize": True}, {"fsa": False},
                 {"top_p": 0.3, "lamda": 2.0}, {"fsa_placement": "last_layer"}, {"fsa_mode": "output"},
                 {"isolation": "mean"}, {"score_source": "instances", "instance_thd": 0.0},
                 {"fsa_strategies": "ensemble", "feedback_scale": 2.0}]
# First passes per crop: the default's (shared by every variant that keeps its recipe and placement; output mode
# too, since the default uniform isolation keeps the hidden states), last_layer's, and the instances recipe's.
SAM3_FIRST_PASSES = 3


@pytest.mark.numerics
@pytest.mark.parametrize("slide_crop", [48, 0])
def test_sam3_variants_equal_models_built_with_them(tmp_path, one_thread, slide_crop):
    """SAM3 (tiny, random, FSA on), sliding windows and whole images (logits resized once): the vision backbone
    is shared by every variant, the decoder's first pass by the variants that need the same one; thresholds, the
    score recipe and FSA's settings vary on top. Each variant equals a model built with its settings."""
    from unittest import mock

    from fsa_seg.sam3 import SAM3SegModel

    names = tmp_path / "tiny.txt"
    names.write_text("background; sky\ncat\ndog\nperson; people\n")

    def build(**kwargs):
        torch.manual_seed(0)
        settings = {"fsa": True, "presence_thd": 0.0, **kwargs}
        return SAM3SegModel(name_path=str(names), random_weights=True, device="cpu", slide_crop=slide_crop,
                            slide_stride=32, crop_batch_size=2, **settings).eval()

    model = build()
    images = list(torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(1)))
    with mock.patch.object(SAM3SegModel, "first_pass", autospec=True, side_effect=SAM3SegModel.first_pass) as fp:
        model.predict(images)
        crops = fp.call_count
        fp.reset_mock()
        out = model.predict_variants(images, None, SAM3_VARIANTS)
        assert fp.call_count == SAM3_FIRST_PASSES * crops  # not one per variant and crop
    for k, variant in enumerate(SAM3_VARIANTS):
        expected = build(**variant).predict(images)
        for i in range(2):
            assert torch.equal(out[i][k].labels, expected[i].labels), (variant, i)
            assert torch.equal(out[i][k].probabilities, expected[i].probabilities), (variant, i)
    assert not torch.equal(out[0][1].labels, out[0][0].labels)
    for k in range(2, len(SAM3_VARIANTS)):  # every variant changes the output
        assert not torch.equal(out[0][k].probabilities, out[0][0].probabilities), SAM3_VARIANTS[k]
    with pytest.raises(VariantError, match="model.slide_crop cannot differ .* varies only .*fsa_placement.* "
                                           ".*use separate runs"):
        model.variant_state({"slide_crop": 96})
    with pytest.raises(ValueError, match="fsa_placement must be one of"):
        model.variant_state({"fsa_placement": "decoder"})

"""Typed settings: one frozen settings dataclass per model (its fields are the variant keys, a variant is
``dataclasses.replace``), FSA's defaults defined once (``FSAParams``), and FSA's two isolation scales named the same
on CLIP and SAM3 (``feedback_scale``, ``isolation_scale``): a grid over them runs on both, their deprecated names
warn and give the same outputs, and both names at once are an error."""
from dataclasses import FrozenInstanceError, fields, replace
from pathlib import Path

import pytest
import torch

from datagen import write_voc
from fsa_seg.apis import grid as grids, sweep
from fsa_seg.clip_model import CLIPHeadSettings, CLIPSegModel
from fsa_seg.fsa import FeedbackSelfAdaptiveAttention, FSAParams, isolated_class_distribution
from fsa_seg.naive_fsa import naive_fsa
from fsa_seg.open_vocab import OutputSettings
from fsa_seg.plugin import FSASegmentor, SAM3Segmentor
from fsa_seg.plugin.segmentors import init_arguments, init_defaults
from fsa_seg.sam3.feedback import LogOddsFeedback
from fsa_seg.sam3.model import SAM3HeadSettings, SAM3SegModel
from fsa_seg.settings import RENAMED_SCALES
from tiny import TINY_CLIP, tiny_run_options

REPO = Path(__file__).resolve().parents[1]
CLIP_CONFIG = str(REPO / "configs" / "fsa_proxy_sam_voc21.py")
SAM3_CONFIG = str(REPO / "configs" / "fsa_sam3_voc21.py")
CLIP_KWARGS = dict(name_path="voc21", vfm="tiny-dino", base_method="proxyclip", slide_crop=48, slide_stride=24,
                   **TINY_CLIP)
SCALES = ("feedback_scale", "isolation_scale")
DEPRECATED = "is deprecated, use"


@pytest.fixture(scope="module")
def names(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("names") / "tiny.txt"
    path.write_text("background; sky\ncat\ndog\nperson; people\n")
    return str(path)


def clip_model(**kwargs) -> CLIPSegModel:
    torch.manual_seed(0)
    return CLIPSegModel(**{**CLIP_KWARGS, **kwargs}).eval()


def sam3_model(names: str, **kwargs) -> SAM3SegModel:
    torch.manual_seed(0)
    settings = {"fsa": True, "presence_thd": 0.0, **kwargs}
    return SAM3SegModel(name_path=names, random_weights=True, device="cpu", slide_crop=0, **settings).eval()


def images():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(3, 64, 80, generator=g), torch.randn(3, 48, 64, generator=g)]


def same_predictions(a, b) -> bool:
    return all(torch.equal(x.labels, y.labels) and torch.equal(x.probabilities, y.probabilities) for x, y in zip(a, b))


# -- the settings dataclasses ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_cls, settings_cls", [(CLIPSegModel, CLIPHeadSettings),
                                                     (SAM3SegModel, SAM3HeadSettings)])
def test_variant_keys_are_the_settings_fields(model_cls, settings_cls):
    keys = {f.name for f in fields(settings_cls)}
    assert model_cls.SETTINGS is settings_cls and model_cls.VARIANT_KEYS == keys
    assert {f.name for f in fields(OutputSettings)} <= model_cls.POST_SCORE_KEYS < keys
    assert set(SCALES) <= keys and not set(RENAMED_SCALES) & keys
    # a config may set every setting, and the deprecated names; their defaults are the dataclass's
    assert keys | set(RENAMED_SCALES) <= init_arguments(model_cls)
    defaults = init_defaults(model_cls)
    assert {k: defaults[k] for k in keys} == {f.name: f.default for f in fields(settings_cls)}
    with pytest.raises(FrozenInstanceError):
        settings_cls().top_p = 0.3


def test_fsa_defaults_come_from_fsa_params():
    released = FSAParams()
    assert (released.top_p, released.lamda, released.feedback_scale, released.isolation_scale) == (0.45, 3.0, 20., 35.)
    clip = CLIPHeadSettings()
    for key in ("top_p", "lamda", *SCALES):
        assert getattr(clip, key) == getattr(released, key), key
    assert FeedbackSelfAdaptiveAttention().params == released
    sam3, feedback = SAM3HeadSettings(), LogOddsFeedback()
    for key in ("top_p", "lamda"):
        assert getattr(sam3, key) == getattr(feedback, key) == getattr(released, key), key
    # on SAM3's log-odds the feedback scale is 1 and the isolation scale keeps the released ratio
    assert (sam3.feedback_scale, sam3.isolation_scale) == (1.0, released.isolation_scale / released.feedback_scale)
    assert sam3.feedback == feedback


def test_a_variant_is_the_settings_replaced(one_thread):
    model = clip_model()
    own = model.settings
    state = model.variant_state({"top_p": 0.3, "isolation_scale": 30.0, "prob_thd": 0.2})
    assert state == replace(own, top_p=0.3, isolation_scale=30.0, prob_thd=0.2) and model.settings is own
    with model.variant(top_p=0.3, isolation_scale=30.0) as variant:
        assert variant.settings.top_p == 0.3 and variant.fsa.params == FSAParams(top_p=0.3, isolation_scale=30.0)
    assert model.settings is own and model.fsa.params == FSAParams()
    with pytest.raises(TypeError, match="CLIPHeadSettings"):
        with model.use_variant({"top_p": 0.3}):
            pass
    # the pieces follow the settings: they cannot be replaced behind its back
    with pytest.raises(AttributeError, match="follows model.settings"):
        model.fsa = FeedbackSelfAdaptiveAttention(top_p=0.3)
    with pytest.raises(AttributeError, match="follows model.settings"):
        model.prob_thd = 0.5
    assert model.settings is own


# -- one name pair on CLIP and SAM3 ---------------------------------------------------------------------------------
@pytest.mark.numerics
@pytest.mark.parametrize("kind", ["clip", "sam3"])
def test_an_isolation_scale_grid_runs_on_clip_and_sam3(kind, names, one_thread):
    """The same keys vary FSA's isolation on both models: each variant equals a model built with it, and each
    value changes the output."""
    build = clip_model if kind == "clip" else (lambda **kw: sam3_model(names, **kw))
    values = {"clip": [35.0, 10.0, 60.0], "sam3": [1.75, 1.0, 3.0]}[kind]
    grid = [{"isolation_scale": v} for v in values] + [{"feedback_scale": 1.5 * values[1]}]  # not the default
    model = build()
    inputs = images()
    out = model.predict_variants(inputs, None, grid)
    per_variant = [[per_image[k] for per_image in out] for k in range(len(grid))]
    for variant, got in zip(grid, per_variant):
        assert same_predictions(got, build(**variant).predict(inputs)), variant
    for k in range(1, len(grid)):
        assert not torch.equal(per_variant[k][0].probabilities, per_variant[0][0].probabilities), grid[k]


@pytest.mark.parametrize("config, kind", [(CLIP_CONFIG, "clip"), (SAM3_CONFIG, "sam3")])
def test_a_sweep_over_the_isolation_scale_is_one_pass_on_clip_and_sam3(config, kind, tmp_path, capsys):
    write_voc(tmp_path / "voc", [(40, 56)])
    options = tiny_run_options(tmp_path)
    if kind == "sam3":
        options = {"model.random_weights": True, "model.name_path": options["model.name_path"]}

    def passes(key):
        grid = grids.parse_grid([f"{key}=1.0,2.0", "model.top_p=0.3,0.6"])
        jobs = sweep.plan_sweep(config, grid, data_roots={"voc21": str(tmp_path / "voc")}, options=options,
                                work_dir=str(tmp_path / "w"))
        return sweep.plan_passes(jobs, grid)

    assert [len(g) for g in passes("model.isolation_scale")] == [4]
    assert "splits the passes" not in capsys.readouterr().out
    if kind == "clip":  # the deprecated name, on a config that does not spell the new one
        with pytest.warns(DeprecationWarning, match="model.uniform_scale is deprecated, use model.isolation_scale"):
            assert [len(g) for g in passes("model.uniform_scale")] == [4]
    else:  # SAM3's configs spell isolation_scale: the deprecated name on top of it is both names at once
        with pytest.raises(ValueError, match="both model.uniform_scale and model.isolation_scale are given"):
            passes("model.uniform_scale")


# -- deprecated names -----------------------------------------------------------------------------------------------
@pytest.mark.numerics
def test_deprecated_scale_names_warn_and_give_the_same_outputs(one_thread):
    new = clip_model(feedback_scale=10.0, isolation_scale=30.0)
    with pytest.warns(DeprecationWarning) as caught:
        old = clip_model(base_scale=10.0, uniform_scale=30.0)
    messages = sorted(str(w.message) for w in caught if DEPRECATED in str(w.message))
    assert messages == ["CLIPSegModel: base_scale is deprecated, use feedback_scale",
                        "CLIPSegModel: uniform_scale is deprecated, use isolation_scale"]
    assert all(w.filename == __file__ for w in caught if DEPRECATED in str(w.message))  # the caller's line
    assert old.settings == new.settings
    inputs = images()
    expected = new.predict(inputs)
    assert same_predictions(old.predict(inputs), expected)
    assert not same_predictions(clip_model().predict(inputs), expected)  # the scales were not ignored
    # a variant spelled the old way is the variant spelled the new way
    with pytest.warns(DeprecationWarning, match="uniform_scale is deprecated, use isolation_scale"):
        old_state = new.variant_state({"uniform_scale": 50.0})
    assert old_state == new.variant_state({"isolation_scale": 50.0})
    with new.variant(isolation_scale=50.0):
        changed = new.predict(inputs)
    assert not same_predictions(changed, expected)
    with pytest.warns(DeprecationWarning), new.variant(uniform_scale=50.0):
        assert same_predictions(new.predict(inputs), changed)


def test_deprecated_scale_names_of_the_fsa_core_and_the_sam3_feedback():
    with pytest.warns(DeprecationWarning, match="FSAParams: base_scale is deprecated, use feedback_scale"):
        assert FSAParams(base_scale=2.0, uniform_scale=3.0) == FSAParams(feedback_scale=2.0, isolation_scale=3.0)
    with pytest.warns(DeprecationWarning, match="uniform_scale is deprecated, use isolation_scale"):
        fsa = FeedbackSelfAdaptiveAttention(top_p=0.3, uniform_scale=3.0)
    assert fsa.params == FSAParams(top_p=0.3, isolation_scale=3.0)
    with pytest.warns(DeprecationWarning, match="LogOddsFeedback: scale is deprecated, use feedback_scale"):
        assert LogOddsFeedback(scale=2.0) == LogOddsFeedback(feedback_scale=2.0)
    assert LogOddsFeedback(feedback_scale=2.0).core_params().feedback_scale == 2.0
    with pytest.warns(DeprecationWarning, match="uniform_scale is deprecated, use isolation_scale"):
        assert SAM3SegModel.make_settings({"uniform_scale": 1.0}) == SAM3HeadSettings(isolation_scale=1.0)
    g = torch.Generator().manual_seed(0)
    base, uniform = torch.randn(1, 6, 3, generator=g), torch.randn(1, 1, 3, generator=g)
    with pytest.warns(DeprecationWarning):
        old = isolated_class_distribution(base, uniform, base_scale=2.0, uniform_scale=3.0)
    assert torch.equal(old, isolated_class_distribution(base, uniform, feedback_scale=2.0, isolation_scale=3.0))
    a0 = torch.softmax(torch.randn(1, 5, 5, generator=g), dim=-1)
    v = torch.randn(1, 2, 5, 4, generator=g)
    w = torch.randn(8, 3, generator=g)

    def head(x):
        return torch.nn.functional.normalize(x @ w, dim=-1)

    with pytest.warns(DeprecationWarning):
        old = naive_fsa(a0, v, head, base_scale=2.0, uniform_scale=3.0)
    assert torch.equal(old, naive_fsa(a0, v, head, feedback_scale=2.0, isolation_scale=3.0))


def test_deprecated_config_keys_map_in_the_segmentor(one_thread):
    own = dict(CLIP_KWARGS)
    with pytest.warns(DeprecationWarning, match="model.uniform_scale is deprecated, use model.isolation_scale"):
        assert FSASegmentor.variant_changes(own, {"uniform_scale": 30.0}) == {"isolation_scale": 30.0}
    with pytest.warns(DeprecationWarning, match="model.base_scale is deprecated, use model.feedback_scale"):
        assert SAM3Segmentor.variant_changes({}, {"base_scale": 2.0}) == {"feedback_scale": 2.0}
    # a config spelling the old name: its value is the model's, a variant of the new name changes it
    assert FSASegmentor.variant_changes({**own, "uniform_scale": 30.0}, {"isolation_scale": 30.0}) == {}
    assert FSASegmentor.variant_changes({**own, "uniform_scale": 30.0}, {"isolation_scale": 40.0}) == {
        "isolation_scale": 40.0}
    with pytest.warns(DeprecationWarning, match="uniform_scale is deprecated"):
        segmentor = FSASegmentor(uniform_scale=30.0, variants=[{}, {"base_scale": 10.0}], **own)
    assert segmentor.model.settings.isolation_scale == 30.0
    assert [s.feedback_scale for s in segmentor._variant_states] == [FSAParams().feedback_scale, 10.0]


# -- both names at once -----------------------------------------------------------------------------------------------
def test_both_names_at_once_are_an_error(one_thread):
    both = "both base_scale and feedback_scale are given"
    with pytest.raises(ValueError, match=f"CLIPSegModel: {both}"):
        clip_model(base_scale=10.0, feedback_scale=10.0)
    with pytest.raises(ValueError, match="both uniform_scale and isolation_scale are given"):
        SAM3SegModel.make_settings({"uniform_scale": 1.0, "isolation_scale": 1.0})
    with pytest.raises(ValueError, match=f"FSAParams: {both}"):
        FSAParams(base_scale=1.0, feedback_scale=1.0)
    with pytest.raises(ValueError, match="both base_scale and feedback_scale"):
        FeedbackSelfAdaptiveAttention(base_scale=1.0, feedback_scale=1.0)
    with pytest.raises(ValueError, match="LogOddsFeedback: both scale and feedback_scale are given"):
        LogOddsFeedback(scale=1.0, feedback_scale=1.0)
    with pytest.raises(ValueError, match="both model.uniform_scale and model.isolation_scale are given"):
        FSASegmentor.variant_changes(dict(CLIP_KWARGS), {"uniform_scale": 1.0, "isolation_scale": 2.0})
    with pytest.raises(ValueError, match="both model.base_scale and model.feedback_scale are given"):
        FSASegmentor.variant_changes({**CLIP_KWARGS, "base_scale": 1.0, "feedback_scale": 2.0}, {})
    model = clip_model()
    with pytest.raises(ValueError, match="both uniform_scale and isolation_scale are given"):
        model.variant_state({"uniform_scale": 1.0, "isolation_scale": 2.0})
    with pytest.raises(TypeError, match="unexpected keyword argument 'scale'"):
        clip_model(scale=1.0)  # LogOddsFeedback's own deprecated name is no model key

"""The explorer's library part (fsa_seg/visualization/explorer.py) without a browser: kept crop features give the scores of a full
run, a settings change does not run the backbone, the pixel rows equal the internals API's, one-line errors."""
import numpy as np
import pytest
import torch

from fsa_seg.apis import init_segmentor, segment_image
from fsa_seg.visualization.explorer import (RANDOM_WEIGHTS_BANNER, Explorer, ExplorerApp, Settings, measure_latency,
                              pixel_probabilities)
from fsa_seg.resources import CONFIG_DIR
from tiny import TINY_CLIP

CLASSES = [["cat", "kitten"], ["dog"], ["grass"]]
PROXY_CONFIG = str(CONFIG_DIR / "fsa_proxy_sam_voc21.py")
SCLIP_CONFIG = str(CONFIG_DIR / "sclip" / "fsa_sclip_vit-b16_voc21.py")


def tiny_options(**extra):
    """A tiny random CLIP (and the tiny DINO proxy) on a sliding window of several padded crops: a 64x48 input
    (short side 48) cut into 32x32 windows with stride 24 (edge windows shifted, crops padded to the patch)."""
    options = {f"model.{k}": v for k, v in TINY_CLIP.items()}
    options.update({"model.vfm": "tiny-dino", "model.device": "cpu", "model.precision": "fp32",
                    "model.prob_thd": 0.0, "model.slide_crop": 32, "model.slide_stride": 24,
                    "model.crop_batch_size": 2, "test_dataloader.dataset.pipeline.1.scale": (2048, 48)})
    options.update(extra)
    return options


@pytest.fixture(scope="module")
def segmentor(one_thread):
    return init_segmentor(PROXY_CONFIG, tiny_options(), classes=CLASSES)


@pytest.fixture(scope="module")
def rgb():
    return (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)


def counter(segmentor):
    """Counts runs of the backbone: CLIP's patch embedding and the proxy model (forward hooks)."""
    calls = {"clip": 0, "proxy": 0}
    model = segmentor.model

    def count(name):
        def hook(*_):
            calls[name] += 1
        return hook

    handles = [model.backbone.visual.conv1.register_forward_hook(count("clip"))]
    if model.vfm is not None:
        handles.append(model.vfm.register_forward_hook(count("proxy")))
    return calls, handles


def test_kept_features_equal_a_full_run(segmentor, rgb):
    explorer = Explorer(segmentor)
    result = explorer.segment(rgb)
    kept, ran = explorer.features(rgb)
    assert not ran and len(kept.batches) >= 2  # several crop batches: the stitching is exercised
    full = segment_image(segmentor, rgb)
    assert result.probabilities.dtype == torch.float32
    torch.testing.assert_close(result.probabilities, full.probabilities, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.labels, full.labels)
    # another setting: equal to a full run of a model with that setting
    moved = Settings("proxyclip", True, 0.3, 1.5)
    result = explorer.segment(rgb, moved)
    with segmentor.model.variant(top_p=0.3, lamda=1.5):
        full = segment_image(segmentor, rgb)
    torch.testing.assert_close(result.probabilities, full.probabilities, rtol=0, atol=1e-6)
    no_fsa = explorer.segment(rgb, Settings("proxyclip", False, 0.3, 1.5))
    assert (no_fsa.probabilities - result.probabilities).abs().max() > 1e-4  # the setting matters


def test_settings_and_classes_do_not_run_the_backbone(segmentor, rgb):
    explorer = Explorer(segmentor)
    calls, handles = counter(segmentor)
    try:
        first = explorer.segment(rgb)
        assert first.backbone_run and calls["clip"] > 0 and calls["proxy"] > 0
        before = dict(calls)
        moved = explorer.segment(rgb, Settings("proxyclip", True, 0.2, 5.0))
        off = explorer.segment(rgb, Settings("proxyclip", False, 0.2, 5.0))
        explorer.set_classes("cat; dog,puppy; grass; sky")
        other = explorer.segment(rgb, Settings("proxyclip", True, 0.2, 5.0))
        assert calls == before
        assert not (moved.backbone_run or off.backbone_run or other.backbone_run)
        assert other.probabilities.shape[0] == 4
        explorer.set_classes("cat,kitten; dog; grass")
        explorer.segment(rgb[:, ::-1].copy())  # a new image runs it again
        assert calls["clip"] > before["clip"]
    finally:
        for h in handles:
            h.remove()


def test_pixel_rows_equal_the_internals_api(segmentor, rgb):
    from fsa_seg.internals import explain

    explorer = Explorer(segmentor)
    settings = Settings("proxyclip", True, 0.35, 2.0)
    result = explorer.segment(rgb, settings)
    kept, _ = explorer.features(rgb)
    model = segmentor.model
    mean = torch.tensor(model.pixel_mean).view(3, 1, 1)
    std = torch.tensor(model.pixel_std).view(3, 1, 1)
    pixels = kept.image * std + mean  # the model input in 0..255 (explain normalises it again)
    point = (41, 30)
    rows = explorer.attention_rows(kept, settings, point)
    with model.use_variant(explorer.state(settings)):
        reference = explain(model, pixels, [point], strategies=["ensemble"])
    crop, row = reference.rows_of(0)[0]
    assert rows.box == crop.box
    for name in ("base", "isolated", "sharpened", "ensembled"):
        torch.testing.assert_close(getattr(rows.rows, name)[0], getattr(crop.rows, name)[row], rtol=0, atol=1e-5)
    assert int(rows.rows.query_tokens[0]) == int(crop.rows.query_tokens[row])
    probs = pixel_probabilities(result, 10, 20)
    expected = result.probabilities[:, 20, 10].tolist()
    assert sorted(probs, key=lambda t: t[0]) == sorted(zip(["cat", "dog", "grass"], expected))
    assert [p for _, p in probs] == sorted(expected, reverse=True)


def test_methods_follow_the_proxy(segmentor, one_thread):
    assert Explorer(segmentor).methods() == ["proxyclip"]
    sclip = Explorer(init_segmentor(SCLIP_CONFIG, tiny_options(**{"model.vfm": None}), classes=CLASSES))
    methods = sclip.methods()
    assert "proxyclip" not in methods and {"sclip", "naclip", "clearclip", "maskclip"} <= set(methods)
    with pytest.raises(ValueError, match="method 'proxyclip'"):
        sclip.segment(np.zeros((40, 40, 3), np.uint8), Settings("proxyclip", True, 0.3, 3.0))


def test_app_messages_are_one_line(segmentor, rgb):
    app = ExplorerApp(Explorer(segmentor))
    assert app.banner
    seg, maps, bars, status = app.update(rgb, "cat,kitten; dog; grass", "proxyclip", True, 0.45, 3.0)
    assert seg.shape == rgb.shape and maps is None and not status.startswith("error")
    seg_click, maps, bars, status = app.click(40, 30)
    assert maps is not None and bars is not None and status.startswith("pixel (x=40, y=30)"), status
    moved, maps2, bars2, status = app.update(None, "cat,kitten; dog; grass", "proxyclip", True, 0.2, 6.0)
    assert "kept features" in status and "pixel (x=40, y=30)" in status
    assert not np.array_equal(moved, seg_click) and not np.array_equal(maps2, maps)  # the pictures follow
    for text in ("", "cat;; dog", "cat, ; dog"):
        seg, _, _, status = app.update(None, text, "proxyclip", True, 0.2, 6.0)
        assert seg is None and status.startswith("error: classes:") and "\n" not in status, status
    missing = ExplorerApp(None, "CLIP ViT-B-16: checkpoint '/nope.pt' not found")
    assert missing.update(rgb, "cat", "proxyclip", True, 0.4, 3.0)[3] == \
        "error: CLIP ViT-B-16: checkpoint '/nope.pt' not found"
    assert missing.click(1, 1)[3].startswith("error: ")


def test_banner_on_random_weight_pictures(segmentor, rgb):
    """The random-weights banner is drawn: its red strip covers the top rows of every picture."""
    app = ExplorerApp(Explorer(segmentor))
    seg, _, _, _ = app.update(rgb, "cat,kitten; dog; grass", "proxyclip", True, 0.45, 3.0)
    _, maps, bars, _ = app.click(10, 50)
    for picture in (seg, maps, bars):
        top = picture[1:4, :picture.shape[1] // 3].reshape(-1, 3).astype(int)
        assert (top == [200, 0, 0]).all(axis=1).mean() > 0.5
    assert "not a real result" in RANDOM_WEIGHTS_BANNER


def test_missing_checkpoint_is_one_line(tmp_path, one_thread):
    from fsa_seg.visualization.explorer import one_line

    options = tiny_options(**{"model.random_weights": False, "model.clip_checkpoint": str(tmp_path / "nope.pt")})
    with pytest.raises(Exception) as err:
        init_segmentor(PROXY_CONFIG, options, classes=CLASSES)
    line = one_line(err.value)
    assert "nope.pt" in line and "\n" not in line


def test_tool_without_gradio(tmp_path):
    from tooling import run_tool

    blocker = tmp_path / "gradio"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError(\"No module named 'gradio'\")\n")
    done = run_tool("explore", "--port", "1", env={"PYTHONPATH": str(tmp_path)}, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr.strip()
    assert err.count("\n") == 0 and "gradio" in err and 'pip install -e ".[explore]"' in err, err


@pytest.mark.slow
def test_tool_measure(tmp_path):
    from tiny import as_cli
    from tooling import run_tool

    options = tiny_options()
    done = run_tool("explore", "--measure", "--repeats", "1", "--cfg-options", *as_cli(options), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [t for t in done.stdout.splitlines() if t.startswith("latency at ")]
    assert len(line) == 1 and "full segmentation" in line[0] and "x faster" in line[0], done.stdout[-2000:]
    missing = run_tool("explore", "--config", str(tmp_path / "nope.py"), "--measure")
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error: config file"), missing.stderr


def test_measure_latency(segmentor, rgb):
    latency = measure_latency(Explorer(segmentor), rgb, repeats=1)
    assert latency.full_s > 0 and latency.slider_s > 0 and latency.crops >= 2
    assert "full segmentation" in latency.line() and "x faster" in latency.line()


def test_sample_photos(tmp_path, segmentor, rgb):
    from PIL import Image

    from fsa_seg.visualization.explorer import sample_images

    Image.fromarray(rgb).save(tmp_path / "b.png")
    Image.fromarray(rgb[:, ::-1]).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    samples = sample_images(str(tmp_path))
    assert list(samples) == ["a.jpg", "b.png"] and sample_images(str(tmp_path / "missing")) == {}
    app = ExplorerApp(Explorer(segmentor), samples=samples)
    np.testing.assert_array_equal(app.load_sample("b.png"), rgb)
    assert app.load_sample("other.png") is None

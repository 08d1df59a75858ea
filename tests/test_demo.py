"""Single images (fsa_seg.apis.init_segmentor / segment_image, tools/demo.py): user classes with synonyms,
label PNG, overlay, pixel shares."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsa_seg.apis import init_segmentor, parse_classes, read_image, segment_image
from tooling import run_tool

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.clip_model=tiny-ViT-16", "model.vfm=tiny-dino", "model.random_weights=True", "model.cache_text=False",
        "model.slide_crop=0", "test_dataloader.dataset.pipeline.1.scale=(64,48)"]


@pytest.mark.slow
def test_demo_on_an_rgba_image(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 255, (40, 56, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "pic.png")
    out = tmp_path / "out"
    done = run_tool("demo", tmp_path / "pic.png", "--classes", "cat, kitten; dog; grass", "--out", out,
                    "--cfg-options", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout
    assert "kitten" not in printed.split("wrote")[0] and "share" in printed

    assert (out / "classes.txt").read_text() == "cat; kitten\ndog\ngrass\n"
    with Image.open(out / "pic_labels.png") as img:
        assert img.mode == "P" and img.size == (56, 40)
        labels = np.asarray(img)
        assert labels.max() <= 2
    with Image.open(out / "pic_overlay.png") as img:  # at the photo's own size, the legend drawn in
        assert img.format == "PNG" and img.size == (56, 40)
        overlay = np.asarray(img.convert("RGB")).astype(int)
    assert np.abs(overlay[-10:, -10:] - rgba[-10:, -10:, :3]).max() > 0  # tinted away from the legend
    shares = json.loads((out / "pic_shares.json").read_text())
    assert [c["class"] for c in shares["classes"]] == ["cat", "dog", "grass"]
    assert shares["classes"][0]["synonyms"] == ["cat", "kitten"]
    assert shares["size"] == [40, 56]
    assert sum(c["pixels"] for c in shares["classes"]) == 40 * 56
    assert sum(c["share"] for c in shares["classes"]) == pytest.approx(100.0, abs=0.05)
    for c in shares["classes"]:
        assert c["pixels"] == int((labels == c["id"]).sum())
    rows = list(csv.DictReader(open(out / "pic_shares.csv")))
    assert [(r["class"], r["synonyms"]) for r in rows] == [("cat", "cat; kitten"), ("dog", "dog"),
                                                          ("grass", "grass")]


def test_class_parsing():
    assert parse_classes("cat,kitten; dog ;grass;") == [["cat", "kitten"], ["dog"], ["grass"]]
    assert parse_classes("a single class") == [["a single class"]]
    for bad in ("", "  ", ";", " ; ,", "cat;;dog", "cat,,kitten; dog", "cat, ; dog"):
        with pytest.raises(ValueError):
            parse_classes(bad)


def test_segment_image_with_other_classes(tmp_path):
    """The API the demo uses: the classes given at init, then other classes for the next image; the labels
    follow the class order, and the result equals a model built for those classes."""
    options = dict(item.split("=", 1) for item in TINY if "pipeline" not in item)
    options = {k: {"True": True, "False": False}.get(v, int(v) if v.isdigit() else v) for k, v in options.items()}
    options["test_dataloader.dataset.pipeline.1.scale"] = (64, 48)
    config = str(REPO / "configs" / "fsa_proxy_sam_voc21.py")
    rgb = np.random.default_rng(2).integers(0, 255, (30, 44, 3), dtype=np.uint8)
    import torch

    torch.manual_seed(0)
    model = init_segmentor(config, options, classes=[["cat", "kitten"], ["dog"]], device="cpu")
    first = segment_image(model, rgb)
    assert first.labels.shape == (30, 44) and first.probabilities.shape == (2, 30, 44)
    assert first.classes == [["cat", "kitten"], ["dog"]]
    assert [s["class"] for s in first.shares()] == ["cat", "dog"]
    assert sum(s["pixels"] for s in first.shares()) == 30 * 44
    second = segment_image(model, rgb, classes=[["dog"], ["grass"], ["cat", "kitten"]])
    assert second.probabilities.shape == (3, 30, 44) and second.classes[2] == ["cat", "kitten"]
    torch.manual_seed(0)
    fresh = segment_image(init_segmentor(config, options, classes=[["dog"], ["grass"], ["cat", "kitten"]],
                                         device="cpu"), rgb)
    torch.testing.assert_close(second.probabilities, fresh.probabilities, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(second.labels, fresh.labels)
    assert not torch.allclose(second.probabilities[:2], first.probabilities)  # really other queries


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "I;16"])
def test_images_of_any_mode_are_read_as_rgb(tmp_path, mode):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (9, 11, 4), dtype=np.uint8), "RGBA")
    img = img.convert(mode) if mode != "I;16" else Image.fromarray(np.full((9, 11), 300, np.uint16))
    img.save(tmp_path / "x.png")
    rgb = read_image(str(tmp_path / "x.png"))
    assert rgb.shape == (9, 11, 3) and rgb.dtype == np.uint8

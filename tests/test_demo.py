"""tools/demo.py: one image, user classes (with synonyms), label PNG, overlay, pixel shares."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tooling import load_tool

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.clip_model=tiny-ViT-16", "model.vfm=tiny-dino", "model.random_weights=True", "model.cache_text=False",
        "model.slide_crop=0", "test_dataloader.dataset.pipeline.1.scale=(64,48)"]


def load_demo():
    return load_tool("demo")


def test_demo_on_an_rgba_image(tmp_path, capsys):
    rgba = np.random.default_rng(0).integers(0, 255, (40, 56, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "pic.png")
    demo = load_demo()
    out = tmp_path / "out"
    code = demo.main([str(tmp_path / "pic.png"), "--classes", "cat, kitten; dog; grass", "--out", str(out),
                      "--cfg-options", *TINY])
    assert code == 0
    printed = capsys.readouterr().out
    assert "kitten" not in printed.split("wrote")[0] and "share" in printed

    assert (out / "classes.txt").read_text() == "cat; kitten\ndog\ngrass\n"
    with Image.open(out / "pic_labels.png") as img:
        assert img.mode == "P" and img.size == (56, 40)
        labels = np.asarray(img)
        assert labels.max() <= 2
    with Image.open(out / "pic_overlay.png") as img:
        assert img.format == "PNG" and img.size[0] > 56
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
    demo = load_demo()
    assert demo.parse_classes("cat,kitten; dog ;grass;") == [["cat", "kitten"], ["dog"], ["grass"]]
    assert demo.parse_classes("a single class") == [["a single class"]]
    for bad in ("", "  ", ";", " ; ,", "cat;;dog", "cat,,kitten; dog", "cat, ; dog"):
        with pytest.raises(demo.UsageError):
            demo.parse_classes(bad)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "I;16"])
def test_images_of_any_mode_are_read_as_rgb(tmp_path, mode):
    demo = load_demo()
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (9, 11, 4), dtype=np.uint8), "RGBA")
    img = img.convert(mode) if mode != "I;16" else Image.fromarray(np.full((9, 11), 300, np.uint16))
    img.save(tmp_path / "x.png")
    rgb = demo.read_image(str(tmp_path / "x.png"))
    assert rgb.shape == (9, 11, 3) and rgb.dtype == np.uint8

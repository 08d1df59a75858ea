"""SAM3Segmentor end to end through the evaluation of tools/test.py (mmengine Runner test loop) on a generated VOC-layout dataset.

Tiny random SAM3 on CPU: checks the pipeline (configs, data preprocessor, whole image and sliding window,
FSA off/on), not accuracy.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from fsa_seg.apis import evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> str:
    """Three 40x56 images with masks (labels 0..2 and a 255 border) in VOC2012's folder layout."""
    root = tmp_path_factory.mktemp("VOC2012")
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(3):
        name = f"2007_00000{i}"
        img = rng.integers(0, 255, size=(40, 56, 3), dtype=np.uint8)
        mask = np.zeros((40, 56), dtype=np.uint8)
        mask[5:25, 8:30] = 1
        mask[20:38, 30:52] = 2
        mask[0, :] = 255
        Image.fromarray(img).save(root / "JPEGImages" / f"{name}.jpg")
        Image.fromarray(mask, mode="L").save(root / "SegmentationClass" / f"{name}.png")
        names.append(name)
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(names) + "\n")
    return str(root)


@pytest.fixture(scope="module")
def names_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("names") / "tiny3.txt"
    path.write_text("background; sky\ncat\ndog\n")
    return str(path)


@pytest.mark.parametrize("config, extra", [
    ("configs/sam3_voc21.py", {}),
    ("configs/fsa_sam3_voc21.py", {}),
    ("configs/fsa_sam3_voc21.py", {"model.slide_crop": 512, "model.slide_stride": 384}),
    ("configs/fsa_sam3_voc21_output.py", {"model.slide_crop": 512, "model.slide_stride": 384}),
])
def test_runner_test_loop(config, extra, voc_root, names_file, tmp_path):
    options = {
        "model.random_weights": True,
        "model.name_path": names_file,
        "test_dataloader.dataset.metainfo.classes": ("background", "cat", "dog"),  # the file's classes
        "model.presence_thd": 0.0,   # random presence logits: keep every prompt so FSA really runs
        "test_dataloader.dataset.data_root": voc_root,
        "test_dataloader.num_workers": 0,
        "test_dataloader.batch_size": 2,
        **extra,
    }
    metrics = evaluate(os.path.join(REPO, config), options, work_dir=str(tmp_path))
    assert "mIoU" in metrics and np.isfinite(metrics["aAcc"])
    with open(os.path.join(str(tmp_path), "results.json")) as f:
        model = json.load(f)["model"]
    assert model["type"] == "SAM3Segmentor" and "clip_model" not in model  # no CLIP keys
    assert model["fsa"] == ("fsa_" in os.path.basename(config))


@pytest.mark.numerics
def test_one_pass_with_and_without_fsa_equals_separate_runs(voc_root, names_file, tmp_path):
    """Frozen SAM3 and SAM3 + FSA in one pass over the data (the README's command): the metrics and results.json
    of each equal a separate run's."""
    from fsa_seg.apis import evaluate_variants

    config = os.path.join(REPO, "configs/fsa_sam3_voc21.py")
    options = {"model.random_weights": True, "model.name_path": names_file, "model.presence_thd": 0.0,
               "test_dataloader.dataset.metainfo.classes": ("background", "cat", "dog"),
               "test_dataloader.dataset.data_root": voc_root, "test_dataloader.num_workers": 0,
               "test_dataloader.batch_size": 2}
    variants = [{"model.fsa": True}, {"model.fsa": False}]
    dirs = [str(tmp_path / "pass" / f"fsa={v['model.fsa']}") for v in variants]
    one_pass = evaluate_variants(config, variants, dirs, options)
    for variant, work_dir, metrics in zip(variants, dirs, one_pass):
        separate = evaluate(config, {**options, **variant}, work_dir=str(tmp_path / f"separate_{variant['model.fsa']}"))
        assert metrics == separate, variant
        with open(os.path.join(work_dir, "results.json")) as f:
            written = json.load(f)
        assert written["model"]["fsa"] is variant["model.fsa"] and written["metrics"] == pytest.approx(separate)
        assert written["cfg_options"]["model.fsa"] is variant["model.fsa"]
    # (that FSA changes the predictions bit for bit is tests/test_one_pass.py's; at this size and rounding the
    # metrics of the two may coincide)

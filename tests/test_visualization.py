"""Figures of what FSA does (fsa_seg.visualization, tools/demo.py --compare, tools/analyze.py, tools/test.py
--show-dir): the files and their numbers, checked against the predictions and evaluations computed directly."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsa_seg.apis import init_segmentor, load_config, read_image, segment_image
from fsa_seg.visualization import BANNER_RGB, Comparison, compare_image, comparison_figure, palette, \
    random_weights_used, save_figure, write_comparison
from fsa_seg.visualization import drawing
from tiny import TINY_CLIP, as_cli, tiny_run_options
from tooling import run_tool

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
VOC = SHARED / "voc_mini"
PHOTOS = SHARED / "photos"
needs_voc = pytest.mark.skipif(not VOC.is_dir(), reason="../shared/data/voc_mini not present")
needs_photos = pytest.mark.skipif(not PHOTOS.is_dir(), reason="../shared/data/photos not present")
DEMO_CONFIG = str(REPO / "configs" / "fsa_proxy_sam_voc21.py")
VOC_CONFIG = str(REPO / "configs" / "fsa_proxy_sam_voc.py")
TINY_MODEL = {**{f"model.{k}": v for k, v in TINY_CLIP.items()}, "model.vfm": "tiny-dino", "model.slide_crop": 0,
              "model.prob_thd": 0.0, "test_dataloader.dataset.pipeline.1.scale": (64, 48)}


def banner_pixels(path) -> np.ndarray:
    """Mask of the pixels of exactly the banner colour."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return (rgb == np.asarray(BANNER_RGB)).all(axis=2)


def labels_of(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "P"
        return np.asarray(img).astype(np.int64)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return init_segmentor(DEMO_CONFIG, TINY_MODEL, classes=[["floor", "ground"], ["dog"], ["person"]])


# --- drawing -----------------------------------------------------------------------------------------------------
def test_banner_only_with_random_weights(tmp_path):
    rgb = np.full((30, 40, 3), 90, dtype=np.uint8)
    base = np.zeros((30, 40), dtype=np.int64)
    fsa = base.copy()
    fsa[5:10, 5:25] = 1
    for random_weights in (False, True):
        c = Comparison(rgb, base, fsa, ["a", "b"], palette(2), random_weights)
        png, pdf = save_figure(comparison_figure(c), str(tmp_path / f"fig{random_weights}"))
        mask = banner_pixels(png)
        if random_weights:  # a band across the top, the full width
            rows = np.nonzero(mask.any(axis=1))[0]
            assert rows.min() == 0 and mask[rows.min()].mean() > 0.95 and mask.sum() > 20 * mask.shape[1]
        else:
            assert mask.sum() == 0
        assert Path(pdf).read_bytes()[:4] == b"%PDF"
    row = drawing.with_banner(rgb, True)
    assert row.shape == (30 + drawing.banner_strip(40).shape[0], 40, 3)
    assert drawing.with_banner(rgb, False) is rgb
    # the changed panel colours exactly the changed pixels in FSA's colour
    panel = drawing.changed_panel(rgb, base, fsa, palette(2))
    assert (panel[5:10, 5:25] == palette(2)[1]).all() and not (panel[0, 0] == palette(2)[0]).all()


def test_random_weights_detection():
    assert random_weights_used(cfg=dict(model=dict(random_weights=True)))
    assert random_weights_used(cfg=dict(model=dict(vfm="tiny-dino")))
    assert not random_weights_used(cfg=dict(model=dict(random_weights=False, vfm="sam")))
    assert not random_weights_used(object())


# --- demo --compare: one pass, the numbers equal separate segmentations -----------------------------------------
@needs_photos
def test_compare_numbers_equal_separate_predictions(tiny_model, tmp_path, one_thread):
    rgb = read_image(str(PHOTOS / "dog.jpg"))
    passes = []  # the proxy runs once per backbone pass (one window: the whole image)
    handle = tiny_model.model.vfm.register_forward_hook(lambda *args: passes.append(1))
    try:
        comparison = compare_image(tiny_model, rgb)
    finally:
        handle.remove()
    assert len(passes) == 1
    paths = write_comparison(comparison, str(tmp_path / "dog"))
    # each variant of the one pass equals a segmentation with that setting
    with tiny_model.model.variant(fsa=False):
        base = segment_image(tiny_model, rgb).labels
    with tiny_model.model.variant(fsa=True):
        fsa = segment_image(tiny_model, rgb).labels
    changed = int((base != fsa).sum())
    assert changed > 0  # FSA changed something here (else the check below is empty)
    summary = json.loads((tmp_path / "dog_compare.json").read_text())
    assert summary["changed_pixels"] == changed == paths["changed_pixels"]
    assert summary["random_weights"] is True and summary["size"] == list(rgb.shape[:2])
    rows = list(csv.DictReader(open(tmp_path / "dog_compare.csv")))
    assert [r["class"] for r in rows] == ["floor", "dog", "person"]
    for k, r in enumerate(rows):
        assert int(r["base_pixels"]) == int((base == k).sum())
        assert int(r["fsa_pixels"]) == int((fsa == k).sum())
        assert int(r["gained_pixels"]) == int(((fsa == k) & (base != fsa)).sum())
        assert int(r["lost_pixels"]) == int(((base == k) & (base != fsa)).sum())
    assert np.array_equal(labels_of(tmp_path / "dog_base_labels.png"), base)
    assert np.array_equal(labels_of(tmp_path / "dog_fsa_labels.png"), fsa)
    assert banner_pixels(tmp_path / "dog_compare.png").sum() > 1000
    assert (tmp_path / "dog_compare.pdf").read_bytes()[:4] == b"%PDF"


@needs_photos
def test_analyze_folder_ranks_images_by_changed_pixels(tiny_model, tmp_path, one_thread):
    from fsa_seg.visualization.analysis import analyze_folder

    images = [str(PHOTOS / name) for name in ("dog.jpg", "truck.jpg")]
    out = analyze_folder(tiny_model, images, str(tmp_path), top=1)
    rows = list(csv.DictReader(open(tmp_path / "per_image_changes.csv")))
    assert sorted(r["image"] for r in rows) == sorted(images)
    assert [float(r["changed_share"]) for r in rows] == sorted((float(r["changed_share"]) for r in rows),
                                                               reverse=True)
    for r in rows:  # each count equals the differing labels of the two settings
        rgb = read_image(r["image"])
        with tiny_model.model.variant(fsa=False):
            base = segment_image(tiny_model, rgb).labels
        fsa = segment_image(tiny_model, rgb).labels
        assert int(r["changed_pixels"]) == int((base != fsa).sum())
    assert [r["image"] for r in out["most_changed"]] == [rows[0]["image"]]
    assert banner_pixels(tmp_path / "most_changed.png").sum() > 1000


# --- demo --point: the rows of fsa_seg.internals.explain, drawn and written -------------------------------------------
@needs_photos
def test_point_files_hold_the_explained_rows(tiny_model, tmp_path, one_thread):
    from fsa_seg.internals import explain
    from fsa_seg.visualization.points import model_pixels, parse_points, write_points

    rgb = read_image(str(PHOTOS / "dog.jpg"))
    points = parse_points(["200,300", "600,100;5,5"])
    assert points == [(200, 300), (600, 100), (5, 5)]
    out = write_points(tiny_model, rgb, points, str(tmp_path / "dog"))
    pixels = model_pixels(tiny_model, rgb)
    h, w = rgb.shape[:2]
    inner = [(int(x * pixels.shape[2] / w), int(y * pixels.shape[1] / h)) for x, y in points]
    direct = explain(tiny_model.model, pixels, inner)
    table = list(csv.DictReader(open(tmp_path / "dog_points.csv")))
    saved = json.loads((tmp_path / "dog_points.json").read_text())
    assert len(table) == 3 and saved["random_weights"] is True
    for k, (row, maps) in enumerate(zip(table, saved["maps"])):
        crop, i = direct.rows_of(k)[0]
        rows = crop.rows
        token = int(rows.query_tokens[i])
        assert (int(row["model_x"]), int(row["model_y"])) == inner[k] and int(row["token"]) == token
        assert float(row["kept_share"]) == pytest.approx(float(rows.kept_share[token]), abs=1e-6)
        assert int(row["kept_count"]) == int(rows.kept[i].sum()) > 0
        for name in ("base", "isolated", "sharpened", "ensembled"):
            assert np.allclose(np.asarray(maps[name]), rows.maps(name)[i].numpy(), atol=1e-6), name
        assert np.array_equal(np.asarray(maps["kept"], dtype=bool), rows.maps("kept")[i].numpy())
    for name, labels in direct.predictions.items():
        assert np.array_equal(labels_of(tmp_path / f"dog_strategy_{name}_labels.png"), labels.numpy()), name
    counts = {r["strategy"]: r for r in csv.DictReader(open(tmp_path / "dog_strategies.csv"))}
    assert int(counts["ensemble"]["dog"]) == int((direct.predictions["ensemble"] == 1).sum())
    for stem in ("dog_points", "dog_strategies"):
        assert banner_pixels(tmp_path / f"{stem}.png").sum() > 1000
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError, match="outside"):
        write_points(tiny_model, rgb, [(w, 0)], str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="X,Y"):
        parse_points(["3"])


@needs_photos
def test_kept_share_per_method(tmp_path, one_thread):
    """Fig. 9's statistic per base method: the kept shares explain() reports for every patch row, summarised."""
    from fsa_seg.internals import explain
    from fsa_seg.visualization.analysis import kept_share_by_method
    from fsa_seg.visualization.points import model_pixels, write_kept_share

    torch.manual_seed(0)
    model = init_segmentor(DEMO_CONFIG, {**TINY_MODEL, "model.vfm": None, "model.base_method": "sclip"},
                           classes=[["dog"], ["floor"]])
    path = str(PHOTOS / "dog.jpg")
    values = kept_share_by_method(model, [path], ["sclip", "naclip"])
    pixels = model_pixels(model, read_image(path))
    assert np.array_equal(values["sclip"], explain(model.model, pixels, []).kept_share.numpy())
    with model.model.variant(base_method="naclip"):
        assert np.array_equal(values["naclip"], explain(model.model, pixels, []).kept_share.numpy())
    assert values["sclip"].size == 12  # one window of 4 x 3 patches (64 x 48 input)
    files = write_kept_share(values, str(tmp_path / "kept"), True)
    rows = {r["method"]: r for r in csv.DictReader(open(tmp_path / "kept.csv"))}
    saved = json.loads((tmp_path / "kept.json").read_text())
    for method, v in values.items():
        assert float(rows[method]["mean"]) == pytest.approx(100 * v.mean(), abs=1e-3)
        assert float(rows[method]["p50"]) == pytest.approx(100 * np.median(v), abs=1e-3)
        assert sum(saved["histogram"][method]) == v.size == int(rows[method]["rows"])
    assert banner_pixels(files[0]).sum() > 1000
    with pytest.raises(ValueError, match="proxy"):
        kept_share_by_method(model, [path], ["proxyclip"])


# --- analyze over a dataset, with the show-dir hook ----------------------------------------------------------------
def _miou(gt: np.ndarray, pred: np.ndarray, num_classes: int):
    valid = gt != 255
    ious = []
    for k in range(num_classes):
        inter = int(((gt == k) & (pred == k) & valid).sum())
        union = int((((gt == k) | (pred == k)) & valid).sum())
        if union:
            ious.append(inter / union)
    return 100.0 * float(np.mean(ious))


@needs_voc
def test_analyze_dataset_numbers_and_show_dir(tmp_path, one_thread):
    from fsa_seg.visualization.analysis import analyze_dataset

    options = tiny_run_options(tmp_path, VOC, **{"test_dataloader.dataset.indices": 3})
    out_dir = tmp_path / "out"
    out = analyze_dataset(VOC_CONFIG, str(out_dir), options, top=1)
    results = {name: json.loads((out_dir / name / "results.json").read_text()) for name in ("base", "fsa")}
    assert results["base"]["model"]["fsa"] is False and results["fsa"]["model"]["fsa"] is True
    # per-class IoU: the evaluations' own numbers, sorted by the difference
    rows = list(csv.DictReader(open(out_dir / "per_class_iou.csv")))
    assert sorted(r["class"] for r in rows) == sorted(results["base"]["per_class"])
    for r in rows:
        for name in ("base", "fsa"):
            expected = results[name]["per_class"][r["class"]]["IoU"]
            assert (r[f"{name}_IoU"] == "") if expected is None else float(r[f"{name}_IoU"]) == expected
    diffs = [float(r["difference"]) for r in rows if r["difference"]]
    assert diffs == sorted(diffs, reverse=True)
    # show dir: one image per sample, ground truth | base | FSA at the image's size, under the banner
    show = out_dir / "show"
    pngs = sorted(show.glob("*.png"))
    assert len(pngs) == 3
    num_classes = len(results["base"]["per_class"])
    per_image = {r["image"]: r for r in csv.DictReader(open(out_dir / "per_image.csv"))}
    assert len(per_image) == 3
    for png in pngs:
        h, w = read_image(str(VOC / "JPEGImages" / f"{png.stem}.jpg")).shape[:2]
        drawn = np.asarray(Image.open(png))
        assert drawn.shape[1] == 3 * w and drawn.shape[0] > h  # three panels, titles (and banner) above
        assert banner_pixels(png)[0].all()
        gt = labels_of(show / "labels" / "ground_truth" / png.name)
        base = labels_of(show / "labels" / "fsa=False" / png.name)
        fsa = labels_of(show / "labels" / "fsa=True" / png.name)
        assert gt.shape == base.shape == fsa.shape == (h, w)
        # per-image mIoU of the table: the one the saved predictions and ground truth give
        row = per_image[str(VOC / "JPEGImages" / f"{png.stem}.jpg")]
        assert float(row["base_mIoU"]) == pytest.approx(_miou(gt, base, num_classes), abs=1e-3)
        assert float(row["fsa_mIoU"]) == pytest.approx(_miou(gt, fsa, num_classes), abs=1e-3)
    assert len(out["gains_losses"]) == 2
    assert banner_pixels(out_dir / "gains_losses.png").sum() > 1000
    assert banner_pixels(out_dir / "per_class_iou.png").sum() > 1000
    kept = list(csv.DictReader(open(out_dir / "kept_share.csv")))
    assert [r["method"] for r in kept] == ["proxyclip"] and int(kept[0]["rows"]) > 0
    for stem in ("per_class_iou", "gains_losses", "kept_share"):
        assert (out_dir / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
        assert json.loads((out_dir / f"{stem}.json").read_text())["random_weights"] is True


def test_show_dir_off_adds_no_hook():
    from fsa_seg.visualization.show_dir import HOOK_TYPE, show_dir_options

    assert show_dir_options(None) == {} and show_dir_options("") == {}
    cfg = load_config(VOC_CONFIG)
    hooks = [h.get("type") for h in cfg.default_hooks.values()] + [h.get("type") for h in cfg.custom_hooks]
    assert HOOK_TYPE not in hooks and "SegVisualizationHook" not in hooks
    assert show_dir_options("d")["default_hooks.visualization"]["type"] == HOOK_TYPE


# --- the command lines -----------------------------------------------------------------------------------------------
@pytest.mark.slow
@needs_voc
def test_tools_test_show_dir(tmp_path):
    options = tiny_run_options(tmp_path, VOC, **{"test_dataloader.dataset.indices": 2})
    done = run_tool("test", VOC_CONFIG, "--work-dir", tmp_path / "w", "--show-dir", tmp_path / "show",
                    "--cfg-options", *as_cli(options))
    assert done.returncode == 0, done.stderr[-3000:]
    pngs = sorted((tmp_path / "show").glob("*.png"))
    assert len(pngs) == 2
    for png in pngs:
        h, w = read_image(str(VOC / "JPEGImages" / f"{png.stem}.jpg")).shape[:2]
        drawn = np.asarray(Image.open(png))
        assert drawn.shape[1] == 2 * w and drawn.shape[0] > h  # ground truth | prediction
        assert banner_pixels(png)[0].all()


@pytest.mark.slow
@needs_photos
def test_demo_compare_and_analyze_folder_tools(tmp_path):
    cli = as_cli(TINY_MODEL)
    done = run_tool("demo", PHOTOS / "truck.jpg", "--classes", "road; truck; sky", "--out", tmp_path / "d",
                    "--compare", "--cfg-options", *cli)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "d" / "truck_compare.json").read_text())
    base, fsa = labels_of(tmp_path / "d" / "truck_base_labels.png"), labels_of(tmp_path / "d" / "truck_fsa_labels.png")
    assert summary["changed_pixels"] == int((base != fsa).sum())
    assert "random weights: not a real result" in done.stdout
    folder = tmp_path / "photos"  # two photos keep the run short; the kept share is checked in-process
    folder.mkdir()
    for name in ("truck.jpg", "dog.jpg"):
        shutil.copy(PHOTOS / name, folder / name)
    done = run_tool("analyze", "--images", folder, "--classes", "road; truck; sky", "--out", tmp_path / "a",
                    "--top", "1", "--no-kept-share", "--cfg-options", *cli)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(csv.DictReader(open(tmp_path / "a" / "per_image_changes.csv")))) == 2
    bad = run_tool("analyze", "--out", tmp_path / "b")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: give either")


def test_kept_share_and_points_need_a_clip_model():
    from fsa_seg.plugin.segmentors import FSAProxySegmentation, FSASegmentor, SAM3Segmentor
    from fsa_seg.visualization.analysis import check_kept_share

    check_kept_share(FSASegmentor)
    check_kept_share(FSAProxySegmentation)
    with pytest.raises(ValueError, match="--no-kept-share"):
        check_kept_share(SAM3Segmentor)

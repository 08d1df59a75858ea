"""Progress a user can watch: images done / total with images/s and ETA per image in evaluations (tools/test.py,
--variants, sweeps), crops in the demo, the text-embedding line, mmengine's logging interval from the dataset size;
one line per update when stdout is not a terminal (as here: captured subprocesses), a bar on a terminal."""
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsa_seg.progress import Progress, format_duration, progress_callback
from tooling import run_tool

REPO = Path(__file__).resolve().parents[1]
SHARED_VOC = REPO.parent / "shared" / "data" / "voc_mini"
needs_voc = pytest.mark.skipif(not SHARED_VOC.is_dir(), reason="../shared/data/voc_mini not present")
CONFIG = str(REPO / "configs" / "fsa_proxy_sam_voc21.py")
TINY = ["model.clip_model=tiny-ViT-16", "model.vfm=tiny-dino", "model.random_weights=True", "model.cache_text=False",
        "model.templates=single", "model.slide_crop=0", "test_dataloader.dataset.pipeline.1.scale=(64,48)",
        "test_dataloader.num_workers=0"]
LINE = re.compile(r"^images (\d+)/(\d+) \((\d+)%\)  (\d+\.\d\d) images/s  ETA (\d+:\d\d:\d\d)  (\S+\.jpg)$")


def image_lines(stdout: str):
    return [m.groups() for m in map(LINE.match, stdout.splitlines()) if m]


def test_lines_without_a_terminal():
    out = io.StringIO()
    progress = Progress(3, "images", stream=out)
    assert not progress.tty
    progress.start_line()
    progress.update(1, "a.jpg")
    progress.update(2, "c.jpg")
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "images 0/3 (0%)  -- images/s  ETA --:--:--"
    assert re.fullmatch(r"images 1/3 \(33%\)  \d+\.\d\d images/s  ETA \d:\d\d:\d\d  a\.jpg", lines[1])
    assert re.fullmatch(r"images 3/3 \(100%\)  \d+\.\d\d images/s  ETA 0:00:00  c\.jpg", lines[2])
    assert len(lines) == 3


def test_eta_is_what_is_left_at_the_rate_so_far(monkeypatch):
    clock = iter([100.0, 130.0])  # start, then 30 s for 3 of 10 items: 0.1/s, 7 left -> 70 s
    monkeypatch.setattr("fsa_seg.progress.time.perf_counter", lambda: next(clock))
    progress = Progress(10, "images", stream=io.StringIO())
    progress.done = 3
    assert progress.text() == "images 3/10 (30%)  0.10 images/s  ETA 0:01:10"
    assert format_duration(3725) == "1:02:05"


def test_bar_on_a_terminal():
    out = io.StringIO()
    progress = Progress(4, "crops", stream=out, tty=True, min_interval_s=0.0)
    for _ in range(4):
        progress.update(1)
    progress.close()
    text = out.getvalue()
    assert text.count("\r[") == 4 and text.endswith("\n") and text.count("\n") == 1
    assert "\r[" + "#" * Progress.BAR_WIDTH + "] crops 4/4 (100%)" in text


def test_callback_restarts_per_image():
    out = io.StringIO()
    callback = progress_callback("crops", stream=out)
    for done, total in ((0, 3), (2, 3), (3, 3), (0, 2), (2, 2)):
        callback(done, total)
    counts = [line.split("  ")[0] for line in out.getvalue().splitlines()]
    assert counts == ["crops 0/3 (0%)", "crops 2/3 (66%)", "crops 3/3 (100%)", "crops 0/2 (0%)", "crops 2/2 (100%)"]


@pytest.mark.parametrize("batches,expected", [(1, 1), (14, 1), (40, 2), (1000, 50), (1449, 50), (5000, 50)])
def test_logging_interval_follows_the_dataset_size(batches, expected):
    from fsa_seg.plugin.hooks import logging_interval

    assert logging_interval(batches) == expected


@pytest.mark.slow
@needs_voc
def test_tools_test_prints_a_line_per_image(tmp_path):
    done = run_tool("test", CONFIG, "--work-dir", tmp_path / "w", "--cfg-options", *TINY,
                    f"test_dataloader.dataset.data_root={SHARED_VOC}", "test_dataloader.dataset.indices=3")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = image_lines(done.stdout)
    assert [(d, t, p) for d, t, p, *_ in lines] == [("1", "3", "33"), ("2", "3", "66"), ("3", "3", "100")]
    assert lines[-1][4] == "0:00:00" and all(float(line[3]) > 0 for line in lines)
    assert len({line[5] for line in lines}) == 3  # each image named once
    assert "images 0/3 (0%)" in done.stdout
    assert "text embeddings: encoding 46 queries x 1 prompt templates" in done.stdout
    assert re.search(r"queries 46/46 \(100%\)", done.stdout)
    # mmengine's own lines: 3 batches -> every batch (its default is every 50)
    assert "Iter(test) [1/3]" in done.stdout and "Iter(test) [2/3]" in done.stdout


@pytest.mark.slow
@needs_voc
def test_variants_and_sweeps_print_a_line_per_image(tmp_path):
    # two images a batch: one line per batch, counting both
    done = run_tool("test", CONFIG, "--work-dir", tmp_path / "v", "--variants", "model.top_p=0.3,0.6",
                    "--cfg-options", *TINY, f"test_dataloader.dataset.data_root={SHARED_VOC}",
                    "test_dataloader.dataset.indices=2", "test_dataloader.batch_size=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line[:2] for line in image_lines(done.stdout)] == [("2", "2")]

    done = run_tool("sweep", CONFIG, "--grid", "model.lamda=2", "--data-root", f"voc21={SHARED_VOC}", "--work-dir",
                    tmp_path / "s", "--cfg-options", *TINY, "test_dataloader.dataset.indices=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line[:2] for line in image_lines(done.stdout)] == [("1", "2"), ("2", "2")]


@pytest.mark.slow
def test_demo_shows_crops_and_the_text_embedding_line(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (60, 100, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "pic.jpg")
    options = [o for o in TINY if not o.startswith(("model.slide_crop", "test_dataloader"))]
    done = run_tool("demo", tmp_path / "pic.jpg", "--classes", "cat,kitten; dog", "--out", tmp_path / "out",
                    "--cfg-options", *options, "model.slide_crop=32", "model.slide_stride=32",
                    "model.crop_batch_size=2", "test_dataloader.dataset.pipeline.1.scale=(96,64)")
    assert done.returncode == 0, done.stderr[-3000:]
    # 96 x 64 -> 3 x 2 windows of 32, two a batch
    crops = re.findall(r"^crops (\d+)/(\d+) \(\d+%\)  (\S+) crops/s  ETA (\S+)$", done.stdout, re.M)
    assert [(d, t) for d, t, *_ in crops] == [("0", "6"), ("2", "6"), ("4", "6"), ("6", "6")]
    assert "text embeddings: encoding 3 queries x 1 prompt templates" in done.stdout


def test_text_embedding_lines_built_then_cached(tmp_path, monkeypatch, capsys):
    from fsa_seg.clip_model import CLIPSegModel

    monkeypatch.setenv("FSA_SEG_CACHE", str(tmp_path))
    model = CLIPSegModel(name_path="voc21", clip_model="tiny-ViT-16", vfm="tiny-dino", random_weights=True,
                         cache_text=False, templates="single")
    capsys.readouterr()
    model._text_embeddings(("a photo of a {}.", "a {}."), cache_key="tiny|progress")
    out = capsys.readouterr().out.splitlines()
    path = next(tmp_path.rglob("*.pt"))
    assert out[0] == f"text embeddings: encoding 46 queries x 2 prompt templates with the text tower (cached " \
                     f"afterwards in {path})"
    assert [line.split("  ")[0] for line in out[1:]] == [f"queries {k}/46 ({100 * k // 46}%)" for k in range(1, 47)]
    model._text_embeddings(("a photo of a {}.", "a {}."), cache_key="tiny|progress")
    assert capsys.readouterr().out == f"text embeddings: 46 queries from the cache ({path})\n"

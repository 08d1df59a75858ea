"""A run a user can trust: the class-name file is checked against the dataset, every bad input is one line with its
exit code before anything is written (no work dir left), an unreadable image or Ctrl-C ends in one line with the
records kept, missing weights fail at once offline, random-weight results say so."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsa_seg.apis.checks import ClassNamesError, WorkDirError, check_class_file, check_writable, dataset_classes
from fsa_seg.benchmarks import BENCHMARKS
from fsa_seg.class_names import check_class_names, list_class_name_files, load_class_names, reference_class_names
from tooling import REPO, run_tool

SHARED_VOC = REPO.parent / "shared" / "data" / "voc_mini"
CONFIG = str(REPO / "configs" / "fsa_proxy_sam_voc21.py")
VOC = {"type": "PascalVOCDataset"}
needs_voc = pytest.mark.skipif(not SHARED_VOC.is_dir(), reason="../shared/data/voc_mini not present")


def tiny(data_root, images=2):
    return ["model.clip_model=tiny-ViT-16", "model.vfm=tiny-dino", "model.random_weights=True",
            "model.cache_text=False", "model.templates=single", f"test_dataloader.dataset.data_root={data_root}",
            f"test_dataloader.dataset.indices={images}"]


def one_line_error(done, code=2) -> str:
    assert done.returncode == code, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    return lines[-1]


def voc_lines(replace=None):
    lines = (REPO / "fsa_seg" / "resources" / "class_names" / "voc21.txt").read_text().splitlines()
    for k, text in (replace or {}).items():
        lines[k] = text
    return lines


# --- the class-name file against the dataset ---------------------------------------------------------------
def write(tmp_path, lines, name="classes.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_four_lines_with_a_repeated_cat_fail_naming_both(tmp_path):
    path = write(tmp_path, ["background", "cat", "dog", "cat"])
    with pytest.raises(ClassNamesError) as err:
        check_class_file({"name_path": path}, VOC)
    message = str(err.value)
    assert "\n" not in message
    assert "4 classes (lines) but VOC21 has 21" in message and "'cat' is on lines 2 and 4" in message
    assert "model.name_path=voc21" in message


@pytest.mark.parametrize("count", [20, 22])
def test_one_line_too_few_or_too_many(tmp_path, count):
    lines = voc_lines()[:count] if count < 21 else voc_lines() + ["zebra"]
    with pytest.raises(ClassNamesError, match=f"{count} classes \\(lines\\) but VOC21 has 21 \\(its background"):
        check_class_file({"name_path": write(tmp_path, lines)}, VOC)


def test_without_background_the_background_line_is_one_too_many(tmp_path):
    with pytest.raises(ClassNamesError, match="21 classes .* VOC20 has 20 \\(it has no background class"):
        check_class_file({"name_path": write(tmp_path, voc_lines())}, {"type": "PascalVOC20Dataset"})
    assert check_class_file({"name_path": write(tmp_path, voc_lines()[1:])}, {"type": "PascalVOC20Dataset"}) is None


def test_a_synonym_repeated_on_another_line_is_an_error_case_and_spacing_ignored(tmp_path):
    lines = voc_lines({8: "cat; Din-ing Table", 11: "dining_table"})
    with pytest.raises(ClassNamesError, match="'(Din-ing Table|dining_table)' is on lines 9 and 12"):
        check_class_file({"name_path": write(tmp_path, lines)}, VOC)


def test_wrong_names_are_a_warning_listing_the_pairs_and_an_error_with_strict(tmp_path):
    path = write(tmp_path, voc_lines({1: "cat", 8: "aeroplane"}))  # aeroplane and cat swapped
    warning = check_class_file({"name_path": path}, VOC)
    assert "2 line(s) do not name VOC21's class at their id" in warning
    assert "line 2 'cat' vs 'aeroplane' (the dataset has it at line 9)" in warning
    assert "line 9 'aeroplane' vs 'cat'" in warning and "--strict" in warning
    with pytest.raises(ClassNamesError, match="line 2 'cat' vs 'aeroplane'"):
        check_class_file({"name_path": path}, VOC, strict=True)


def test_synonyms_background_words_and_the_packaged_names_pass(tmp_path):
    # one matching synonym is enough; the background line may be 'background' or the released stuff words;
    # the packaged files' own spellings (sam3's 'airplane', FSA's 'ship' for boat) are accepted
    lines = voc_lines({0: "background", 1: "airplane; jet", 4: "ship", 12: "puppy; dog", 16: "potted plant"})
    assert check_class_file({"name_path": write(tmp_path, lines)}, VOC, strict=True) is None
    words, to_class = load_class_names("voc21")
    report = check_class_names(words, to_class, dataset_classes(VOC), "VOC21", True, None)
    assert [m[:3] for m in report.mismatches][:1] == [(1, "; ".join(words[:to_class.count(0)]), "background")]


def test_the_background_line_may_share_a_word_with_a_class():
    # the released COCO-Object file has 'bed' on the background line and as class 60
    assert check_class_file({"name_path": "coco_object"}, {"type": "COCOObjectDataset"}, strict=True) is None
    words, to_class = load_class_names("coco_object")
    report = check_class_names(words, to_class, dataset_classes({"type": "COCOObjectDataset"}), "x", False)
    assert any("'bed' is on lines 1 and 61" in e for e in report.errors)  # not exempt without a background line


def test_every_packaged_class_file_fits_its_benchmark():
    checked = 0
    for bench in BENCHMARKS.values():
        dataset = {"type": bench.dataset_type}
        assert len(dataset_classes(dataset)) == bench.num_classes
        for stem in list_class_name_files():
            if stem == bench.class_names or stem.endswith(f"_{bench.class_names}"):
                assert check_class_file({"name_path": stem}, dataset, strict=True) is None, stem
                checked += 1
    assert checked == len(list_class_name_files())
    assert "ship" in reference_class_names("voc21", 21)[4] and "airplane" in reference_class_names("voc21", 21)[1]


def test_metainfo_classes_of_the_config_win(tmp_path):
    dataset = dict(VOC, metainfo=dict(classes=("sky", "cat", "dog")))
    assert check_class_file({"name_path": write(tmp_path, ["sky", "cat", "dog"])}, dataset, strict=True) is None
    with pytest.raises(ClassNamesError, match="2 classes .* has 3"):
        check_class_file({"name_path": write(tmp_path, ["sky", "cat"])}, dataset)


# --- work dirs -----------------------------------------------------------------------------------------------
def test_a_work_dir_that_cannot_be_created_or_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WorkDirError, match="cannot be created: .* is a file"):
        check_writable(str(blocker / "sub" / "dir"))
    check_writable(str(tmp_path / "new" / "dir"))
    assert not (tmp_path / "new").exists()  # nothing created
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            with pytest.raises(WorkDirError, match="not writable"):
                check_writable(str(locked / "w"))
        finally:
            locked.chmod(0o755)


# --- tools/test.py: one line, exit code, no work dir ----------------------------------------------------------
@pytest.mark.slow
@needs_voc
@pytest.mark.parametrize("extra, expected", [
    (["model.name_path={four}"], ["does not fit VOC21: 4 classes (lines) but VOC21 has 21", "'cat' is on lines 2 and 4"]),
    (["model.name_path={empty_line}"], ["line 2: empty line"]),
    (["model.top_p=1.5"], ["top_p must be in (0, 1], got 1.5"]),
])
def test_bad_input_is_one_line_before_anything_is_written(tmp_path, extra, expected):
    four = write(tmp_path, ["background", "cat", "dog", "cat"], "four.txt")
    empty_line = write(tmp_path, ["background", "", "dog"], "empty.txt")
    work = tmp_path / "work"
    done = run_tool("test", CONFIG, "--work-dir", work, "--cfg-options", *tiny(SHARED_VOC),
                    *[e.format(four=four, empty_line=empty_line) for e in extra])
    line = one_line_error(done)
    for part in expected:
        assert part in line
    assert not work.exists()
    assert "RANDOM WEIGHTS" not in done.stdout  # stopped before the model was built, so before any image


@pytest.mark.slow
@needs_voc
def test_work_dir_under_a_file_and_unknown_variant_key(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = one_line_error(run_tool("test", CONFIG, "--work-dir", blocker / "w", "--cfg-options", *tiny(SHARED_VOC)))
    assert line.startswith("error: work dir") and "is a file" in line
    work = tmp_path / "work"
    line = one_line_error(run_tool("test", CONFIG, "--work-dir", work, "--variants", "model.topp=0.3,0.4",
                                   "--cfg-options", *tiny(SHARED_VOC)))
    assert "--variants model.topp" in line and "did you mean 'model.top_p'" in line and "--cfg-options" not in line
    assert not work.exists()


@pytest.mark.slow
@needs_voc
def test_an_unreadable_image_stops_naming_it_and_resume_continues(tmp_path):
    import shutil

    root = tmp_path / "voc"
    shutil.copytree(SHARED_VOC, root)
    second = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[1]
    image = root / "JPEGImages" / f"{second}.jpg"
    good = image.read_bytes()
    image.write_bytes(good[: len(good) // 2])  # a truncated JPEG
    work = tmp_path / "work"
    done = run_tool("test", CONFIG, "--work-dir", work, "--cfg-options", *tiny(root))
    line = one_line_error(done)
    assert f"cannot read image '{image}'" in line and "1/2 images are recorded" in line
    assert "--resume" in line and "--skip-bad-images" in line
    assert len((work / "per_image" / "rank0.jsonl").read_text().splitlines()) == 1
    assert (done.stdout + done.stderr).count("RANDOM WEIGHTS for CLIP") == 1  # the banner once

    done = run_tool("test", CONFIG, "--work-dir", work, "--resume", "--skip-bad-images", "--cfg-options", *tiny(root))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipped unreadable image '{image}'" in done.stdout and "RANDOM WEIGHTS: meaningless" in done.stdout
    result = json.loads((work / "results.json").read_text())
    assert result["images"] == 1 and [s["image"] for s in result["skipped_images"]] == [str(image)]


@pytest.mark.slow
@needs_voc
def test_ctrl_c_says_how_far_and_exits_130(tmp_path):
    work = tmp_path / "work"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "test.py"), CONFIG, "--work-dir", str(work),
                             "--cfg-options", *tiny(SHARED_VOC, images=6), "test_dataloader.num_workers=0"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = work / "per_image" / "rank0.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if records.is_file() and records.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err + out, err[-3000:]
    match = re.fullmatch(r"interrupted after (\d+)/6 images; continue with --resume", err.strip().splitlines()[-1])
    assert match and 1 <= int(match.group(1)) < 6, err[-500:]
    assert len(records.read_text().splitlines()) == int(match.group(1))


# --- weights: offline detected once, the line says how to check the pipeline -----------------------------------
@pytest.mark.slow
def test_missing_weights_offline_fail_at_once_with_the_pipeline_hint(tmp_path):
    # a hub address that refuses connections: offline on any machine; empty caches
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch"), "XDG_CACHE_HOME": str(tmp_path / "cache"), "HTTPS_PROXY": "",
           "https_proxy": "", "HF_HUB_OFFLINE": None}  # not inherited: an earlier test may have set it here
    work = tmp_path / "work"
    done = run_tool("test", CONFIG, "--work-dir", work, "--cfg-options", "model.vfm=dino",
                    f"test_dataloader.dataset.data_root={SHARED_VOC if SHARED_VOC.is_dir() else REPO}", env=env)
    if "data root" in done.stderr:
        pytest.skip("no VOC sample data")
    line = one_line_error(done)
    assert line.startswith("error: weights for CLIP ViT-B-16")
    assert "offline" in line and "model.random_weights=True" in line and "tiny-ViT-16" in line
    assert "offline: the weights hub is unreachable" in done.stdout
    assert "Retrying" not in done.stderr
    assert not work.exists()


# --- sweeps with random weights say so -----------------------------------------------------------------------
def test_sweep_tables_and_plots_say_random_weights(tmp_path, monkeypatch):
    import matplotlib.axes

    from fsa_seg.apis.sweep import write_outputs

    titles = []
    original = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, label, *a, **k: (titles.append(label), original(self, label, *a, **k))[1])
    grid = [("model.top_p", [0.3, 0.45]), ("model.lamda", [2, 3])]
    rows = [dict(dataset="voc21", combo={"model.top_p": p, "model.lamda": l}, status="ok", mIoU=1.0 + p + l,
                 random_weights=True, work_dir="w") for p in (0.3, 0.45) for l in (2, 3)]
    write_outputs(str(tmp_path), "c.py", grid, rows, ["voc21"])
    assert "RANDOM WEIGHTS" in (tmp_path / "sweep.md").read_text().splitlines()[2]
    assert "random_weights" in (tmp_path / "sweep.csv").read_text().splitlines()[0]
    assert titles and all("RANDOM WEIGHTS" in t for t in titles)
    titles.clear()
    for row in rows:
        row["random_weights"] = False
    write_outputs(str(tmp_path), "c.py", grid, rows, ["voc21"])
    assert "RANDOM" not in (tmp_path / "sweep.md").read_text() and titles and not any("RANDOM" in t for t in titles)

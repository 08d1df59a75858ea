"""Bad input to the workflows and tools: one line that says what to fix (exit code 2 from the command line, no
traceback), and nothing runs."""
from pathlib import Path

import pytest

from datagen import write_voc
from fsa_seg.apis import parse_classes
from fsa_seg.apis.paper_table import plan_table
from fsa_seg.apis.grid import parse_grid
from fsa_seg.apis.sweep import SweepError, plan_sweep
from fsa_seg.zoo.published_results import load_published
from tooling import run_tool

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "fsa_proxy_sam_voc21.py")


def one_line_error(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), done.stderr[-3000:]
    return lines[-1]


@pytest.fixture()
def voc(tmp_path):
    write_voc(tmp_path / "voc", [(16, 20)])
    return tmp_path / "voc"


@pytest.mark.parametrize("grid, expected", [
    ("model.topp=0.3,0.4", ["--grid model.topp", "no option 'topp'", "did you mean 'model.top_p'"]),
    ("model.base_method_cfg.windw=3,5", None),  # nested model keys are the model's business: accepted
    ("test_dataloader.batch_size=1,2", None),
    ("test_dataloader.dataset.pipeline.1.scale=[[64,48],[32,24]]", None),
    ("test_dataloader.batchsize=1,2", ["--grid test_dataloader.batchsize", "no key",
                                       "did you mean 'test_dataloader.batch_size'"]),
    ("nosuchkey=1,2", ["--grid nosuchkey", "no key 'nosuchkey'"]),
    ("model.top_p", ["expected KEY=V1,V2"]),
])
def test_sweep_bad_grid(tmp_path, voc, grid, expected):
    def plan():
        return plan_sweep(CONFIG, parse_grid([grid]), data_roots={"voc21": str(voc)}, work_dir=str(tmp_path / "w"))

    if expected is None:  # valid: only check that validation passes (no run)
        assert len(plan()) == 2
        return
    with pytest.raises(SweepError) as err:
        plan()
    message = str(err.value)
    assert "\n" not in message
    for part in expected:
        assert part in message
    assert not (tmp_path / "w").exists()  # nothing ran


def test_sweep_missing_dataset_and_unknown_dataset(tmp_path):
    grid = parse_grid(["model.top_p=0.3"])
    with pytest.raises(FileNotFoundError) as err:
        plan_sweep(CONFIG, grid, ["voc21,voc20"], {"voc21": str(tmp_path / "nope")})
    assert "data root" in str(err.value) and "nope" in str(err.value) and "data_root" in str(err.value)
    with pytest.raises(SweepError, match="unknown dataset 'pascal'.*voc21"):
        plan_sweep(CONFIG, grid, ["pascal"])
    with pytest.raises(SweepError, match="--grid"):
        plan_sweep(CONFIG, [])


@pytest.mark.slow
def test_sweep_command_line_error(tmp_path, voc):
    message = one_line_error(run_tool("sweep", CONFIG, "--grid", "model.topp=0.3,0.4", "--work-dir", tmp_path / "w",
                                      "--data-root", f"voc21={voc}"))
    assert "did you mean 'model.top_p'" in message
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_reproduce_bad_input(tmp_path):
    published = load_published()
    with pytest.raises(FileNotFoundError) as err:
        plan_table("proxyclip", "sam", "ViT-B-16", ["voc21"], published, str(tmp_path),
                   data_roots={"voc21": str(tmp_path / "x")})
    assert "data root" in str(err.value) and str(tmp_path / "x") in str(err.value)
    with pytest.raises(FileNotFoundError, match="none.json"):
        load_published(str(tmp_path / "none.json"))
    message = one_line_error(run_tool("reproduce", "--method", "proxyclip", "--vfm", "sam2", "--work-dir", tmp_path))
    assert "--vfm sam2" in message
    message = one_line_error(run_tool("reproduce", "--datasets", "voc21,pascal", "--work-dir", tmp_path))
    assert "unknown dataset 'pascal'" in message


def test_class_list_errors():
    for classes, expected in (("", "class list is empty"), (" ; ", "class list is empty"),
                              ("cat;;dog", "class 2 is empty"), ("cat,,kitten", "empty synonym")):
        with pytest.raises(ValueError, match=expected):
            parse_classes(classes)


@pytest.mark.slow
def test_demo_bad_input(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"this is not an image")
    message = one_line_error(run_tool("demo", tmp_path / "broken.jpg", "--classes", "cat", "--out", tmp_path / "o"))
    assert "cannot read image" in message and "broken.jpg" in message
    message = one_line_error(run_tool("demo", tmp_path / "broken.jpg", "--classes", " ; ", "--out", tmp_path / "o"))
    assert message.startswith("error: --classes: the class list is empty")

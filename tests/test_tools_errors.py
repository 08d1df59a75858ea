"""Bad input to the tools: one line that says what to fix, exit code 2, no traceback."""
from pathlib import Path

import pytest

from datagen import write_voc
from tooling import load_tool

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "fsa_proxy_sam_voc21.py")


def one_line_error(capsys, code: int) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


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
def test_sweep_bad_grid(tmp_path, voc, capsys, grid, expected):
    sweep = load_tool("sweep")
    argv = [CONFIG, "--grid", grid, "--work-dir", str(tmp_path / "w"), "--data-root", f"voc21={voc}"]
    if expected is None:  # valid: only check that validation passes (no run)
        args = sweep.parse_args(argv)
        grid_, jobs = sweep.plan(args)
        assert len(jobs) == 2
        return
    message = one_line_error(capsys, sweep.main(argv))
    for part in expected:
        assert part in message
    assert not (tmp_path / "w").exists()  # nothing ran


def test_sweep_missing_dataset_and_unknown_dataset(tmp_path, capsys):
    sweep = load_tool("sweep")
    message = one_line_error(capsys, sweep.main([CONFIG, "--grid", "model.top_p=0.3", "--datasets", "voc21,voc20",
                                                 "--data-root", f"voc21={tmp_path / 'nope'}"]))
    assert "data root" in message and "nope" in message and "data_root" in message
    message = one_line_error(capsys, sweep.main([CONFIG, "--grid", "model.top_p=0.3", "--datasets", "voc"]))
    assert "unknown dataset 'voc'" in message and "voc21" in message
    message = one_line_error(capsys, sweep.main([CONFIG]))
    assert "--grid" in message


def test_test_py_missing_data_root(tmp_path, capsys):
    tool = load_tool("test")
    message = one_line_error(capsys, tool.main([CONFIG, "--work-dir", str(tmp_path / "w"), "--cfg-options",
                                                f"test_dataloader.dataset.data_root={tmp_path / 'nope'}"]))
    assert "nope" in message


def test_reproduce_bad_input(tmp_path, capsys):
    tool = load_tool("reproduce")
    message = one_line_error(capsys, tool.main(["--datasets", "voc21,pascal", "--work-dir", str(tmp_path)]))
    assert "unknown dataset 'pascal'" in message
    message = one_line_error(capsys, tool.main(["--method", "proxyclip", "--vfm", "sam2", "--work-dir",
                                                str(tmp_path)]))
    assert "--vfm sam2" in message
    message = one_line_error(capsys, tool.main(["--datasets", "voc21", "--data-root", f"voc21={tmp_path / 'x'}",
                                                "--work-dir", str(tmp_path)]))
    assert "data root" in message and str(tmp_path / "x") in message
    message = one_line_error(capsys, tool.main(["--published", str(tmp_path / "none.json"), "--from-results",
                                                "--work-dir", str(tmp_path)]))
    assert "none.json" in message


def test_demo_bad_input(tmp_path, capsys):
    demo = load_tool("demo")
    (tmp_path / "broken.jpg").write_bytes(b"this is not an image")
    message = one_line_error(capsys, demo.main([str(tmp_path / "broken.jpg"), "--classes", "cat",
                                                "--out", str(tmp_path / "o")]))
    assert "cannot read image" in message and "broken.jpg" in message
    message = one_line_error(capsys, demo.main([str(tmp_path / "missing.jpg"), "--classes", "cat",
                                                "--out", str(tmp_path / "o")]))
    assert "not found" in message
    for classes in ("", " ; "):
        message = one_line_error(capsys, demo.main([str(tmp_path / "broken.jpg"), "--classes", classes,
                                                    "--out", str(tmp_path / "o")]))
        assert "--classes is empty" in message
    message = one_line_error(capsys, demo.main([str(tmp_path / "broken.jpg"), "--classes", "cat;;dog",
                                                "--out", str(tmp_path / "o")]))
    assert "class 2 is empty" in message

"""Sweeps (fsa_seg.apis.sweep and .grid, tools/sweep.py): every combination evaluated once, CSV/markdown/heat map
outputs, dataset swapping."""
import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from datagen import write_voc
from fsa_seg.apis import sweep
from fsa_seg.apis.grid import GridError, combo_dirname, parse_grid
from tiny import as_cli, tiny_run_options as tiny_options
from tooling import run_tool

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "fsa_proxy_sam_voc21.py")


def tiny_cli(tmp_path: Path) -> list:
    return as_cli(tiny_options(tmp_path))


@pytest.mark.slow
def test_sweep_runs_every_combination_once_and_writes_outputs(tmp_path, capsys):
    write_voc(tmp_path / "voc", [(48, 64), (40, 56)])
    work = tmp_path / "sweep"
    grid = parse_grid(["model.top_p=0.3,0.6", "model.lamda=2,4"])

    def run():
        return sweep.run_sweep(CONFIG, grid, data_roots={"voc21": str(tmp_path / "voc")},
                               options=tiny_options(tmp_path), work_dir=str(work))

    assert all(r.status == "ok" for r in run())
    out = capsys.readouterr().out
    for n, label in enumerate(["top_p=0.3 lamda=2", "top_p=0.3 lamda=4", "top_p=0.6 lamda=2",
                               "top_p=0.6 lamda=4"], 1):
        assert f"[{n}/4] voc21 {label} ..." in out
    # top_p and lamda act after the backbone: the four combinations share one pass over the data.
    assert "one pass over the data per dataset, varying model.top_p, model.lamda within it: 1 pass" in out
    assert out.count("one pass, 4 settings") == 1 and "(1 pass over the data)" in out

    rows = list(csv.DictReader(open(work / "sweep.csv")))
    assert [(r["model.top_p"], r["model.lamda"]) for r in rows] == [("0.3", "2"), ("0.3", "4"), ("0.6", "2"),
                                                                    ("0.6", "4")]
    for row in rows:
        result = json.loads((Path(row["work_dir"]) / "results.json").read_text())
        assert row["status"] == "ok"
        assert float(row["mIoU"]) == pytest.approx(result["metrics"]["mIoU"], abs=0.005)
        assert result["cfg_options"]["model.top_p"] == float(row["model.top_p"])
        assert result["cfg_options"]["model.lamda"] == int(row["model.lamda"])
        assert result["model"]["top_p"] == float(row["model.top_p"])  # the model was built with it
    md = (work / "sweep.md").read_text()
    assert "| top_p \\ lamda | 2 | 4 |" in md and "Best: **" in md and "![mIoU](sweep_voc21.png)" in md
    with Image.open(work / "sweep_voc21.png") as img:
        assert img.format == "PNG" and img.size[0] > 100

    # Run again: nothing is re-evaluated.
    stamps = {r["work_dir"]: (Path(r["work_dir"]) / "results.json").stat().st_mtime_ns for r in rows}
    assert all(r.status == "done before" for r in run())
    assert capsys.readouterr().out.count("done before") == 4
    rows2 = list(csv.DictReader(open(work / "sweep.csv")))
    assert [r["mIoU"] for r in rows2] == [r["mIoU"] for r in rows]
    assert all(r["status"] == "done before" for r in rows2)
    assert stamps == {r["work_dir"]: (Path(r["work_dir"]) / "results.json").stat().st_mtime_ns for r in rows}

    # Separate runs (the backbone for each) give the same files and numbers.
    separate = sweep.run_sweep(CONFIG, grid, data_roots={"voc21": str(tmp_path / "voc")},
                               options=tiny_options(tmp_path), work_dir=str(tmp_path / "separate"), separate=True)
    assert all(r.status == "ok" for r in separate)
    assert "separate runs: 4 evaluation(s)" in capsys.readouterr().out
    for row in rows:
        one = json.loads((Path(row["work_dir"]) / "results.json").read_text())
        alone = json.loads((Path(str(row["work_dir"]).replace(str(work), str(tmp_path / "separate"))) /
                            "results.json").read_text())
        for key in ("cfg_options", "model", "metrics", "per_class", "images"):
            assert one[key] == alone[key], key


def test_passes_split_on_keys_that_change_the_backbone(tmp_path, capsys):
    write_voc(tmp_path / "voc", [(40, 56)])
    grid = parse_grid(["model.top_p=0.3,0.6", "model.slide_crop=32,48"])
    jobs = sweep.plan_sweep(CONFIG, grid, data_roots={"voc21": str(tmp_path / "voc")},
                            options=tiny_options(tmp_path), work_dir=str(tmp_path / "w"))
    groups = sweep.plan_passes(jobs, grid)
    out = capsys.readouterr().out
    assert [[job.info["combo"] for job in group] for group in groups] == [
        [{"model.top_p": 0.3, "model.slide_crop": 32}, {"model.top_p": 0.6, "model.slide_crop": 32}],
        [{"model.top_p": 0.3, "model.slide_crop": 48}, {"model.top_p": 0.6, "model.slide_crop": 48}]]
    assert "grid key model.slide_crop splits the passes over the data" in out
    assert "per dataset and value of model.slide_crop, varying model.top_p within it: 2 passes" in out
    assert [len(g) for g in sweep.plan_passes(jobs, grid, separate=True)] == [1, 1, 1, 1]


def _rows(grid, values):
    import itertools

    keys = [k for k, _ in grid]
    combos = itertools.product(*[v for _, v in grid])
    return [dict(dataset="voc21", combo=dict(zip(keys, c)), mIoU=m) for c, m in zip(combos, values)]


def test_plots_for_one_and_three_keys(tmp_path):
    one = [("model.top_p", [0.3, 0.45, 0.6])]
    assert sweep.plot_dataset(str(tmp_path / "one.png"), "voc21", one, _rows(one, [1.0, None, 3.0]))
    words = [("model.vfm", ["sam", "dino"])]
    assert sweep.plot_dataset(str(tmp_path / "words.png"), "voc21", words, _rows(words, [1.0, 2.0]))
    three = [("model.top_p", [0.3, 0.6]), ("model.lamda", [2, 3]), ("model.fsa", [True, False])]
    assert sweep.plot_dataset(str(tmp_path / "three.png"), "voc21", three, _rows(three, list(range(8))))
    many = [("a", [1, 2]), ("b", [1, 2]), ("c", list(range(17)))]
    assert not sweep.plot_dataset(str(tmp_path / "many.png"), "voc21", many, _rows(many, [1.0] * 68))
    for name in ("one", "words", "three"):
        with Image.open(tmp_path / f"{name}.png") as img:
            assert img.format == "PNG"
    assert not (tmp_path / "many.png").exists()


def test_grid_parsing():
    assert parse_grid(["model.top_p=0.3,0.45", "model.fsa=True,False", "model.vfm=sam,None"]) == [
        ("model.top_p", [0.3, 0.45]), ("model.fsa", [True, False]), ("model.vfm", ["sam", None])]
    assert parse_grid(["model.pamr_dilations=[[8,16],[4]]"]) == [("model.pamr_dilations", [[8, 16], [4]])]
    for bad in (["model.top_p"], ["model.top_p="], ["model.top_p=0.3,,0.4"], ["a=1", "a=2"]):
        with pytest.raises(GridError):
            parse_grid(bad)
    assert combo_dirname({"model.top_p": 0.3, "test_dataloader.dataset.data_root": "/a b"}) == \
        "top_p=0.3__test_dataloader.dataset.data_root=-a-b"


def test_config_for_another_dataset():
    from mmengine.config import Config

    from fsa_seg.zoo.experiments import config_for_dataset, dataset_model_keys

    assert config_for_dataset(CONFIG, "voc21") == (CONFIG, {}, "same")
    path, options, how = config_for_dataset(str(REPO / "configs" / "fsa_proxy_sam_voc.py"), "context60")
    assert (Path(path).name, options, how) == ("fsa_proxy_sam_context60.py", {}, "sibling")
    # No sibling: the benchmark's default config + the model keys that are not the benchmark's.
    cfg = Config.fromfile(CONFIG)
    cfg.model.top_p = 0.3
    cfg.model.prob_thd = 0.9
    cfg.model.base_method = "sclip"
    path, options, how = config_for_dataset("/elsewhere/my_voc21.py", "ade20k", cfg)
    assert how == "default config" and path.endswith("configs/fsa_proxy_sam_ade20k.py")
    assert options == {"model.top_p": 0.3, "model.base_method": "sclip"}
    assert {"name_path", "prob_thd", "slide_crop", "slide_stride"} <= set(dataset_model_keys())


@pytest.mark.slow
def test_sweep_command_line(tmp_path):
    """The tool's flags reach the sweep: one combination, outputs written, exit code 0; again: reused."""
    write_voc(tmp_path / "voc", [(40, 56)])
    argv = [CONFIG, "--grid", "model.top_p=0.3", "--data-root", f"voc21={tmp_path / 'voc'}", "--work-dir",
            tmp_path / "w", "--separate", "--cfg-options", *tiny_cli(tmp_path)]
    done = run_tool("sweep", *argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[1/1] voc21 top_p=0.3 ..." in done.stdout and "sweep: 1/1 combinations evaluated" in done.stdout
    assert "s wall time (separate runs)" in done.stdout
    assert (tmp_path / "w" / "sweep.csv").is_file() and (tmp_path / "w" / "voc21" / "top_p=0.3").is_dir()

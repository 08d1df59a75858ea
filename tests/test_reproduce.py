"""The paper table (fsa_seg.apis.paper_table, tools/reproduce.py): config lookup, runs, the ours-vs-published
table (empty cells stay empty)."""
import csv
import json
from pathlib import Path

import pytest

from mmengine.config import DictAction

from datagen import write_voc
from fsa_seg.apis.paper_table import reproduce_table
from fsa_seg.benchmarks import BENCHMARKS
from fsa_seg.experiments import find_config
from fsa_seg.published_results import PUBLISHED, cell, find_entry, load_published
from tooling import run_tool

REPO = Path(__file__).resolve().parents[1]


def tiny_cli(tmp_path: Path) -> list:
    names = tmp_path / "names.txt"
    names.write_text("background\ncat\naeroplane\n")
    return ["model.clip_model=tiny-ViT-16", "model.vfm=tiny-dino", "model.random_weights=True",
            "model.cache_text=False", f"model.name_path={names}", "model.slide_crop=0",
            "test_dataloader.dataset.pipeline.1.scale=(64,48)", "test_dataloader.num_workers=0"]


def published_file(tmp_path: Path) -> Path:
    """Numbers for +FSA on VOC21 and VOC20 only; the base row has an entry with no numbers."""
    data = {"paper": "test paper", "entries": [
        {"method": "proxyclip", "vfm": "sam", "backbone": "ViT-B-16", "fsa": True, "source": "Table 9, row X",
         "mIoU": {"voc21": 61.5, "voc20": {"value": 80.25, "source": "Table 10"}}, "avg": None},
        {"method": "proxyclip", "vfm": "sam", "backbone": "ViT-B-16", "fsa": False, "source": "Table 9, row Y",
         "mIoU": {}, "avg": None}]}
    path = tmp_path / "published.json"
    path.write_text(json.dumps(data))
    return path


def read_table(path: Path) -> dict:
    return {(r["method"], r["row"]): r for r in csv.DictReader(open(path))}


def test_runs_base_and_fsa_and_compares_with_published(tmp_path, capsys):
    write_voc(tmp_path / "voc", [(48, 64), (40, 56)])
    work = tmp_path / "rep"
    options = {k: DictAction._parse_iterable(v) for k, v in (item.split("=", 1) for item in tiny_cli(tmp_path))}

    def run():
        return reproduce_table("proxyclip", "sam", "ViT-B-16", ["voc21"], str(work), options,
                               {"voc21": str(tmp_path / "voc")}, load_published(str(published_file(tmp_path))))

    assert run()[2] == 0  # no failed run
    base = json.loads((work / "base" / "voc21" / "results.json").read_text())
    fsa = json.loads((work / "fsa" / "voc21" / "results.json").read_text())
    assert base["config"].endswith("configs/proxyclip/proxy_sam_vit-b16_voc21.py") and base["model"]["fsa"] is False
    assert fsa["config"].endswith("configs/fsa_proxy_sam_voc21.py") and fsa["model"]["fsa"] is True

    table = read_table(work / "table.csv")
    ours_fsa = table[("ProxyCLIP (SAM) + FSA", "ours")]
    assert float(ours_fsa["voc21"]) == pytest.approx(fsa["metrics"]["mIoU"], abs=0.005)
    assert float(table[("ProxyCLIP (SAM)", "ours")]["voc21"]) == pytest.approx(base["metrics"]["mIoU"], abs=0.005)
    assert table[("ProxyCLIP (SAM) + FSA", "paper")]["voc21"] == "61.5"
    assert table[("ProxyCLIP (SAM) + FSA", "paper")]["source"] == "Table 9, row X"
    assert float(table[("ProxyCLIP (SAM) + FSA", "diff")]["voc21"]) == pytest.approx(
        round(fsa["metrics"]["mIoU"] - 61.5, 2), abs=0.011)
    # No published number: paper and diff stay empty.
    assert table[("ProxyCLIP (SAM)", "paper")]["voc21"] == ""
    assert table[("ProxyCLIP (SAM)", "diff")]["voc21"] == ""
    md = (work / "table.md").read_text()
    assert "| Method | | VOC21 | Avg |" in md and "Table 9, row X" in md and "| ProxyCLIP (SAM) + FSA | ours |" in md

    # Again: finished runs are reused, not re-evaluated.
    stamp = (work / "fsa" / "voc21" / "results.json").stat().st_mtime_ns
    assert run()[2] == 0
    assert capsys.readouterr().out.count("done before") == 2
    assert (work / "fsa" / "voc21" / "results.json").stat().st_mtime_ns == stamp


def _fake_results(path: Path, miou: float) -> None:
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"metrics": {"mIoU": miou, "aAcc": 90.0, "mAcc": 50.0},
                                                   "cfg_options": {}}))


def test_from_results_leaves_unknown_cells_empty(tmp_path):
    work = tmp_path / "rep"
    _fake_results(work / "fsa" / "voc21", 60.0)
    _fake_results(work / "fsa" / "voc20", 81.0)
    _fake_results(work / "base" / "voc21", 55.5)  # base voc20 missing
    argv = ["--method", "proxyclip", "--vfm", "sam", "--datasets", "voc21,voc20", "--work-dir", str(work),
            "--from-results", "--published", str(published_file(tmp_path))]
    done = run_tool("reproduce", *argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| ProxyCLIP (SAM) + FSA | ours |" in done.stdout and "table: " in done.stdout
    table = read_table(work / "table.csv")
    fsa, base = "ProxyCLIP (SAM) + FSA", "ProxyCLIP (SAM)"
    assert [table[(fsa, "ours")][c] for c in ("voc21", "voc20", "avg")] == ["60.0", "81.0", "70.5"]
    assert [table[(fsa, "paper")][c] for c in ("voc21", "voc20", "avg")] == ["61.5", "80.25", "70.88"]
    assert [table[(fsa, "diff")][c] for c in ("voc21", "voc20", "avg")] == ["-1.5", "0.75", "-0.38"]
    assert [table[(base, "ours")][c] for c in ("voc21", "voc20", "avg")] == ["55.5", "", ""]
    assert all(table[(base, k)][c] == "" for k in ("paper", "diff") for c in ("voc21", "voc20", "avg"))
    md = (work / "table.md").read_text()
    assert "| ProxyCLIP (SAM) + FSA | ours | 60.00 | 81.00 | 70.50 |" in md
    assert "|  | diff | -1.50 | +0.75 | -0.38 |" in md
    assert "no results.json" in md


def test_config_lookup_follows_the_generated_naming():
    path, options, how = find_config("proxyclip", True, "ViT-B-16", "sam", "ade20k")
    assert Path(path) == REPO / "configs" / "fsa_proxy_sam_ade20k.py" and options == {} and how == "config"
    path, _, how = find_config("proxyclip", False, "ViT-B-16", "dino", "voc20")
    assert Path(path) == REPO / "configs" / "proxyclip" / "proxy_dino_vit-b16_voc20.py" and how == "config"
    path, _, how = find_config("proxyclip", True, "ViT-L-14", "mae", "cityscapes")
    assert Path(path) == REPO / "configs" / "proxyclip" / "fsa_proxy_mae_vit-l14_cityscapes.py"
    path, _, how = find_config("sclip", True, "vit-h14", None, "context59")
    assert Path(path) == REPO / "configs" / "sclip" / "fsa_sclip_vit-h14_context59.py"
    for args in [("proxyclip", True, "ViT-B-16", "sam", "voc21"), ("proxyclip", False, "ViT-B-16", "sam", "voc21"),
                 ("naclip", False, "ViT-B-16", None, "ade20k")]:
        assert Path(find_config(*args)[0]).is_file()
    path, options, how = find_config("proxyclip", True, "tiny-ViT-16", "tiny-dino", "voc21")
    assert how == "fallback" and path.endswith("configs/fsa_proxy_sam_voc21.py")
    assert options == {"model.base_method": "proxyclip", "model.fsa": True, "model.clip_model": "tiny-ViT-16",
                       "model.vfm": "tiny-dino"}


def test_packaged_published_numbers_are_sourced_and_never_guessed():
    data = load_published()
    assert "arXiv:2508.20265" in data["paper"]
    for entry in PUBLISHED["entries"]:
        assert entry["source"]
        assert set(entry["mIoU"]) <= set(BENCHMARKS)
        for ds in BENCHMARKS:
            value, source = cell(entry, ds)
            assert value is None or (isinstance(value, float) and source)
    assert find_entry(data, "proxyclip", "sam", "vit-b16", True) is not None
    assert find_entry(data, "proxyclip", "sam", "ViT-B-16", True)["fsa"] is True
    assert find_entry(data, "sclip", None, "ViT-B-16", True) is None

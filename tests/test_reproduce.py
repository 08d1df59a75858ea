"""The paper table (fsa_seg.apis.paper_table, tools/reproduce.py): config lookup, runs, the ours-vs-published
table (empty cells stay empty)."""
import csv
import json
from pathlib import Path

import pytest

from datagen import write_voc
from fsa_seg.apis.paper_table import reproduce_table
from fsa_seg.benchmarks import BENCHMARKS
from fsa_seg.zoo.experiments import find_config
from fsa_seg.zoo.published_results import PUBLISHED, cell, find_entry, load_published
from tiny import tiny_run_options
from tooling import run_tool

REPO = Path(__file__).resolve().parents[1]


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
    options = tiny_run_options(tmp_path)

    def run():
        return reproduce_table("proxyclip", "sam", "ViT-B-16", ["voc21"], str(work), options,
                               {"voc21": str(tmp_path / "voc")}, load_published(str(published_file(tmp_path))))

    assert run()[2] == 0  # no failed run
    # The two configs differ only in FSA on/off: one pass over the data evaluates both.
    assert "voc21: ProxyCLIP (SAM) and ProxyCLIP (SAM) + FSA in one pass over the data" in capsys.readouterr().out
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


def test_one_pass_only_where_the_configs_differ_in_variant_keys(tmp_path, capsys):
    from fsa_seg.apis.paper_table import plan_passes, plan_table

    _, jobs = plan_table("proxyclip", "sam", "ViT-B-16", ["voc21", "cityscapes"], load_published(), str(tmp_path),
                         check=False)
    groups = plan_passes(jobs)
    out = capsys.readouterr().out
    assert [[(job.info["row"].fsa, job.info["dataset"]) for job in group] for group in groups] == [
        [(False, "voc21"), (True, "voc21")], [(False, "cityscapes")], [(True, "cityscapes")]]
    # ProxyCLIP's Cityscapes window stride (112) is not FSA's (80): the crops differ.
    assert "cityscapes: separate passes (model.slide_stride cannot differ between the variants" in out
    assert [len(group) for group in plan_passes(jobs, separate=True)] == [1, 1, 1, 1]


def _fake_results(path: Path, miou: float) -> None:
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"metrics": {"mIoU": miou, "aAcc": 90.0, "mAcc": 50.0},
                                                   "cfg_options": {}}))


@pytest.mark.slow
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


# The published rows (columns VOC21, Context60, COCO-Object, VOC20, Context59, COCO-Stuff, Cityscapes, ADE20K;
# then the printed 8-benchmark average, None where none is printed), typed again independently of the package.
ISSUE_ROWS = {
    ("maskclip", None, "ViT-B-16", "base", "re-run"): ([43.4, 23.2, 20.6, 74.9, 26.4, 16.7, 24.9, 11.9], 30.3),
    ("sclip", None, "ViT-B-16", "base", "paper"): ([59.1, 30.4, 30.5, 80.4, 34.2, 22.4, 32.2, 16.1], 38.2),
    ("clearclip", None, "ViT-B-16", "base", "paper"): ([51.8, 32.6, 33.0, 80.9, 35.9, 23.9, 30.0, 16.7], 38.1),
    ("naclip", None, "ViT-B-16", "base", "re-run"): ([64.07, 34.99, 36.19, 83.03, 38.35, 25.69, 38.27, 19.05],
                                                     42.46),
    ("proxyclip", "dino", "ViT-B-16", "base", "paper"): ([61.3, 35.3, 37.5, 80.3, 39.1, 26.5, 38.1, 20.2], 42.3),
    ("proxyclip", "dino", "ViT-H-14", "base", "paper"): ([65.0, 35.4, 38.6, 83.3, 39.6, 26.8, 42.0, 24.2], 44.4),
    ("sclip", None, "ViT-L-14", "base", "reprint"): ([44.4, 22.3, 24.9, 60.3, 20.5, 13.1, 17.0, 7.1], None),
    ("clearclip", None, "ViT-L-14", "base", "reprint"): ([48.7, 28.3, 29.7, 80.0, 29.6, 19.9, 27.9, 15.0], None),
    ("naclip", None, "ViT-L-14", "base", "reprint"): ([52.2, 28.7, 29.9, 78.7, 32.1, 21.4, 31.4, 17.3], None),
    ("proxyclip", "dino", "ViT-B-16", "fsa", "re-run"): ([63.7, None, None, 82.3, None, None, None, None], None),
}
SOURCE_WORDS = {"maskclip": "re-run in the SCLIP paper", "sclip": "SCLIP (Wang et al., ECCV 2024)",
                "clearclip": "ClearCLIP (Lan et al., ECCV 2024)", "naclip": "NACLIP's repository README",
                "proxyclip": "ProxyCLIP (Lan et al., ECCV 2024)"}
EIGHT = list(BENCHMARKS)[:8]


def _title(method, vfm):
    from fsa_seg.zoo.experiments import method_title
    return method_title(method, vfm)


@pytest.mark.parametrize("key", sorted(ISSUE_ROWS, key=str))
def test_from_results_prints_the_published_rows_with_sources(key, tmp_path, capsys):
    method, vfm, backbone, which, kind = key
    numbers, avg = ISSUE_ROWS[key]
    work = tmp_path / "rep"
    for part in ("base", "fsa"):
        for ds in EIGHT:
            _fake_results(work / part / ds, 50.0)
    assert reproduce_table(method, vfm, backbone, work_dir=str(work), from_results=True)[2] == 0
    out = capsys.readouterr().out
    title = _title(method, vfm) + (" + FSA" if which == "fsa" else "")
    paper = read_table(work / "table.csv")[(title, "paper")]
    assert [float(paper[ds]) if paper[ds] else None for ds in EIGHT] == numbers
    expected_avg = avg if avg is not None else (round(sum(numbers) / 8, 2) if None not in numbers else None)
    assert (float(paper["avg"]) if paper["avg"] else None) == expected_avg
    line = next(x for x in out.splitlines() if x.startswith(f"- {title}: "))
    assert f"[{kind}]" in line, line
    if which == "fsa":
        assert "chi-chi-zx/FSA issue #2" in line and "recorded swapped" in line
    elif kind == "reprint":
        assert "in the ResCLIP (CVPR 2025) README results figures" in line, line
    else:
        assert SOURCE_WORDS[method] in line, line
    assert f"| {title} | ours |" in out


def test_naclip_configs_compare_with_the_pamr_run_and_list_the_paper(tmp_path, capsys):
    work = tmp_path / "rep"
    _fake_results(work / "base" / "voc21", 60.0)

    def table(**options):
        return reproduce_table("naclip", None, "ViT-B-16", ["voc21"], str(work), options, from_results=True)

    assert table()[2] == 0
    out = capsys.readouterr().out
    assert read_table(work / "table.csv")[("NACLIP", "paper")]["voc21"] == "64.07"  # README run, PAMR on
    assert "also published, not compared (setting pamr=False (run: True)): [paper] NACLIP (Hajimiri" in out
    assert "VOC21 58.9" in out
    # The same run without PAMR is compared with the paper's number (and lists the README run).
    assert table(**{"model.pamr": False})[2] == 0
    out = capsys.readouterr().out
    assert read_table(work / "table.csv")[("NACLIP", "paper")]["voc21"] == "58.9"
    assert "setting pamr=True (run: False)): [re-run] NACLIP's repository README" in out


def test_sclip_lists_its_readme_run_below_the_paper_row(tmp_path, capsys):
    work = tmp_path / "rep"
    assert reproduce_table("sclip", None, "ViT-B-16", ["voc21", "voc20"], str(work), from_results=True)[2] == 0
    out = capsys.readouterr().out
    assert read_table(work / "table.csv")[("SCLIP", "paper")]["voc21"] == "59.1"
    assert ("also published, not compared (an earlier entry fits this run): [re-run] SCLIP's repository README"
            in out) and "VOC21 59.63, VOC20 81.54" in out


def test_published_averages_match_their_cells():
    """A mistyped cell or average shows as an average that is not the mean of its cells (to the printed digit)."""
    for entry in PUBLISHED["entries"]:
        values = [cell(entry, ds)[0] for ds in EIGHT]
        assert entry["kind"] in ("paper", "re-run", "reprint")
        if entry["avg"] is not None:
            digits = len(str(entry["avg"]).split(".")[1])
            assert abs(sum(values) / 8 - entry["avg"]) <= 0.5 * 10 ** -digits + 1e-9, entry["source"]


def test_sam3_published_numbers():
    (entry,) = [e for e in PUBLISHED["entries"] if e["method"] == "sam3"]
    assert entry["backbone"] is None and entry["fsa"] is False and entry["kind"] == "paper"
    assert {ds: cell(entry, ds)[0] for ds in BENCHMARKS if cell(entry, ds)[0] is not None} == {
        "ade847": 13.8, "context59": 60.8, "cityscapes": 65.2}
    assert "arXiv:2511.16719" in entry["source"]

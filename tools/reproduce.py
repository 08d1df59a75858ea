"""Reproduce the paper's comparison table for one method: the method and the method + FSA on the eight
benchmarks, next to the published numbers.

    python tools/reproduce.py --method proxyclip --vfm sam [--backbone ViT-B-16] \\
        [--datasets voc21,context60,...] [--data-root voc21=PATH ...] [--work-dir DIR] \\
        [--cfg-options KEY=VALUE ...] [--from-results] [--published FILE.json] [--rerun]

For each benchmark and for FSA off/on the config is looked up in configs/ (``fsa_seg.experiments.find_config``:
``configs/fsa_proxy_{vfm}_{dataset}.py``, ``configs/proxyclip/{fsa_}proxy_{vfm}_{backbone}_{dataset}.py``,
``configs/{method}/{fsa_}{method}_{backbone}_{dataset}.py``; without a file, the dataset config with
``--cfg-options model.base_method=... model.fsa=... model.clip_model=... model.vfm=...``) and evaluated with
``tools/test.py``'s ``run`` into ``WORK_DIR/{base,fsa}/<dataset>/`` (a finished run is reused, an
interrupted one resumes). ``--from-results`` runs nothing and reads those ``results.json`` files; a missing
one leaves its cell empty.

Writes ``WORK_DIR/table.md`` and ``WORK_DIR/table.csv`` (default WORK_DIR:
``work_dirs/reproduce/<method>[_<vfm>]_<backbone>``): rows method and method + FSA, each as ``ours`` /
``paper`` / ``diff`` (ours - paper); columns the benchmarks in the paper's order and their average (only when
every benchmark of the row has a number). Published numbers and their sources come from
``fsa_seg/published_results.py`` (or ``--published``); unknown ones stay empty, never guessed. Each row is
compared with the first published entry whose settings its config has (e.g. NACLIP's configs use PAMR, so they
are compared with NACLIP's run with PAMR); the table's notes say whether that number is the paper's own, a
re-run or a reprint, and list the other published numbers of the row.

Exit codes: 0 table written, 1 some runs failed (their cells are empty), 2 bad input (one-line message).
"""
from __future__ import annotations

import argparse
import csv
import gc
import os
import os.path as osp
import sys
import time
from typing import Any, Dict, List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import DictAction  # noqa: E402

EXIT_FAILED = 1
EXIT_USAGE = 2


def _sweep_module():
    import importlib.util

    name = "fsa_tools_sweep_for_reproduce"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, osp.join(REPO_ROOT, "tools", "sweep.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Method vs method + FSA on the eight benchmarks, next to the "
                                                 "published numbers.")
    parser.add_argument("--method", default="proxyclip",
                        help="base method: proxyclip, sclip, clearclip, naclip, maskclip, vanilla")
    parser.add_argument("--vfm", default="sam", help="ProxyCLIP's proxy model: sam, dino, dinov2, mae")
    parser.add_argument("--backbone", default="ViT-B-16", help="CLIP backbone: ViT-B-16, ViT-L-14, ViT-H-14")
    parser.add_argument("--datasets", nargs="+", default=None, help="subset of the eight benchmarks")
    parser.add_argument("--data-root", nargs="+", action="extend", default=[], metavar="DS=PATH",
                        help="data root of a benchmark, e.g. voc21=data/VOCdevkit/VOC2012")
    parser.add_argument("--work-dir", help="default: work_dirs/reproduce/<method>[_<vfm>]_<backbone>")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="overrides applied to every run")
    parser.add_argument("--from-results", action="store_true",
                        help="run nothing: build the table from the results.json files in WORK_DIR")
    parser.add_argument("--published", help="JSON file of published numbers (default: the packaged ones)")
    parser.add_argument("--rerun", action="store_true", help="re-evaluate runs that already have results")
    return parser.parse_args(argv)


class Row:
    """One table row (the method, or the method + FSA): runs and published numbers."""

    def __init__(self, fsa: bool, title: str, entry: Optional[dict] = None) -> None:
        self.fsa = fsa
        self.title = title
        self.entry = entry
        self.others: List[dict] = []  # the row's other published entries (listed, not compared)
        self.model: Optional[dict] = None  # model config of the row's runs (selects the entry)
        self.ours: Dict[str, Optional[float]] = {}
        self.runs: Dict[str, str] = {}


def _round(value: Optional[float], digits: int = 2) -> Optional[float]:
    return None if value is None else round(float(value), digits)


def _mean(values: List[Optional[float]]) -> Optional[float]:
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def table_rows(rows: List[Row], datasets: List[str]) -> List[Dict[str, Any]]:
    """The numbers of the table: per row ``ours`` / ``paper`` / ``diff`` dicts (dataset or 'avg' -> value)."""
    from fsa_seg.benchmarks import paper_benchmarks
    from fsa_seg.published_results import cell, published_average

    out = []
    for row in rows:
        ours = {ds: _round(row.ours.get(ds)) for ds in datasets}
        paper = {ds: cell(row.entry, ds)[0] for ds in datasets}
        ours["avg"] = _round(_mean([row.ours.get(ds) for ds in datasets]))
        paper_avg = published_average(row.entry) if list(datasets) == list(paper_benchmarks()) else None
        paper["avg"] = paper_avg if paper_avg is not None else _round(_mean([paper[ds] for ds in datasets]), 2)
        diff = {k: (_round(ours[k] - paper[k]) if ours[k] is not None and paper[k] is not None else None)
                for k in ours}
        out.append(dict(row=row, ours=ours, paper=paper, diff=diff))
    return out


def _fmt(value: Optional[float], kind: str) -> str:
    if value is None:
        return ""
    if kind == "diff":
        return f"{value:+.2f}"
    if kind == "paper":
        return f"{value:g}"
    return f"{value:.2f}"


def write_table(work_dir: str, title: str, rows: List[Row], datasets: List[str], data: dict,
                notes: List[str]) -> Dict[str, str]:
    from fsa_seg.benchmarks import get_benchmark
    from fsa_seg.published_results import describe_entry, entry_numbers, settings_mismatch

    numbers = table_rows(rows, datasets)
    columns = list(datasets) + ["avg"]
    head = [get_benchmark(ds).column for ds in datasets] + ["Avg"]
    md = [f"# {title}: ours vs published (mIoU, %)", "",
          "`ours`: this repository's results.json; `paper`: the published number compared with (below: its "
          "source and kind: [paper] the method's own paper, [re-run] a run of the released code reported "
          "elsewhere, [reprint] another work's table); "
          "`diff`: ours - paper. Empty: not evaluated / not published or not transcribed. "
          "Avg: mean over the columns, only when every column has a number (paper: the published average "
          "when the table has all eight benchmarks).", "",
          "| Method | | " + " | ".join(head) + " |",
          "|---|---|" + "---:|" * len(head)]
    csv_rows = []
    for item in numbers:
        row = item["row"]
        for kind in ("ours", "paper", "diff"):
            label = row.title if kind == "ours" else ""
            md.append(f"| {label} | {kind} | " + " | ".join(_fmt(item[kind][c], kind) for c in columns) + " |")
            csv_rows.append({"method": row.title, "fsa": row.fsa, "row": kind,
                             **{c: ("" if item[kind][c] is None else item[kind][c]) for c in columns},
                             "source": (row.entry or {}).get("source", "") if kind == "paper" else ""})
    md += ["", "Sources of the published numbers:", ""]
    paper = data.get("paper")
    if paper:
        md.append(f"- Paper: {paper}")
    for row in rows:
        md.append(f"- {row.title}: " + (describe_entry(row.entry) if row.entry else
                                        "no entry in the published-results file fits this run"))
        for other in row.others:
            differs = settings_mismatch(other, row.model)
            why = f"setting {', '.join(differs)}" if differs else "an earlier entry fits this run"
            md.append(f"  - also published, not compared ({why}): {describe_entry(other)}: "
                      f"{entry_numbers(other, datasets)}")
    runs_at = len(md)
    md += ["", "Runs:", ""]
    for row in rows:
        for ds in datasets:
            md.append(f"- {row.title}, {ds}: {row.runs.get(ds, '')}")
    if notes:
        md += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    md_path, csv_path = osp.join(work_dir, "table.md"), osp.join(work_dir, "table.csv")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["method", "fsa", "row", *columns, "source"])
        writer.writeheader()
        writer.writerows(csv_rows)
    print("\n".join(md[:runs_at]))
    return {"markdown": md_path, "csv": csv_path}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from fsa_seg.datasets import check_data_root
    from fsa_seg.benchmarks import check_benchmarks, paper_benchmarks
    from fsa_seg.experiments import find_config, method_title, parse_data_roots, read_results
    from fsa_seg.last_block import list_base_methods
    from fsa_seg.published_results import find_entry, load_published, matching_entries
    from fsa_seg.vfm import list_vfms
    from fsa_seg.weights import WeightsUnavailableError

    sweep = _sweep_module()
    tool = sweep.load_test_tool()
    try:
        if args.method not in list_base_methods():
            raise ValueError(f"--method {args.method}: unknown; choose from {', '.join(list_base_methods())}")
        vfm = args.vfm if args.method == "proxyclip" else None
        if vfm is not None and vfm not in list_vfms():
            raise ValueError(f"--vfm {vfm}: unknown; choose from {', '.join(list_vfms())}")
        datasets = check_benchmarks(args.datasets) if args.datasets else list(paper_benchmarks())
        roots = parse_data_roots(args.data_root)
        data = load_published(args.published)
        title = method_title(args.method, vfm)
        rows = [Row(fsa, title + (" + FSA" if fsa else "")) for fsa in (False, True)]
        from fsa_seg.experiments import backbone_tag
        work_dir = args.work_dir or osp.join("work_dirs", "reproduce",
                                             f"{args.method}{'_' + vfm if vfm else ''}_{backbone_tag(args.backbone)}")
        jobs = []
        for row in rows:
            for ds in datasets:
                config, options, how = find_config(args.method, row.fsa, args.backbone, vfm, ds)
                options = dict(options)
                options.update(args.cfg_options)
                if ds in roots:
                    options["test_dataloader.dataset.data_root"] = roots[ds]
                run_dir = osp.join(work_dir, "fsa" if row.fsa else "base", ds)
                shown = osp.relpath(config, REPO_ROOT) if config.startswith(REPO_ROOT) else config
                row.runs[ds] = f"`{shown}`" + (" (no config file: dataset config + " +
                                               ", ".join(f"{k}={v}" for k, v in options.items()
                                                         if k.startswith("model.")) + ")"
                                               if how == "fallback" else "")
                jobs.append((row, ds, config, options, run_dir))
                if row.model is None or not args.from_results:
                    cfg = tool.load_config(config, options)
                    row.model = row.model or cfg.model
                if not args.from_results:
                    try:
                        tool.check_options(cfg, options)
                    except KeyError as err:
                        raise ValueError(err.args[0]) from None
                    check_data_root(cfg.test_dataloader.dataset)
        for row in rows:  # the published entry each row is compared with, by its runs' model settings
            row.entry = find_entry(data, args.method, vfm, args.backbone, row.fsa, row.model)
            row.others = [e for e in matching_entries(data, args.method, vfm, args.backbone, row.fsa)
                          if e is not row.entry]
    except (FileNotFoundError, ValueError, WeightsUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE

    os.makedirs(work_dir, exist_ok=True)
    notes: List[str] = []
    failed = 0
    for n, (row, ds, config, options, run_dir) in enumerate(jobs, 1):
        prefix = f"[{n}/{len(jobs)}] {row.title} {ds}"
        previous = read_results(run_dir)
        if args.from_results:
            if previous is None:
                notes.append(f"{row.title}, {ds}: no results.json in {run_dir}")
                print(f"{prefix}: no results in {run_dir}")
            row.ours[ds] = previous["metrics"].get("mIoU") if previous else None
            continue
        if previous is not None and not args.rerun and \
                sweep._same_options(previous.get("cfg_options", {}), options):
            row.ours[ds] = previous["metrics"].get("mIoU")
            print(f"{prefix} ... done before: mIoU {row.ours[ds]}")
            continue
        print(f"{prefix} ...", flush=True)
        t0 = time.time()
        try:
            try:
                metrics = tool.run(config, options, run_dir, resume=previous is None)
            except ValueError as err:
                if not str(err).startswith("cannot resume"):
                    raise
                metrics = tool.run(config, options, run_dir, resume=False)
            row.ours[ds] = float(metrics["mIoU"])
            print(f"{prefix} -> mIoU {row.ours[ds]:.2f} ({time.time() - t0:.1f} s)", flush=True)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # keep going; the cell stays empty
            failed += 1
            message = (str(err).splitlines() or [""])[0][:300]
            notes.append(f"{row.title}, {ds}: failed: {type(err).__name__}: {message}")
            print(f"{prefix} -> FAILED: {type(err).__name__}: {message}", file=sys.stderr, flush=True)
            row.ours[ds] = None
        finally:
            gc.collect()
    title = f"{rows[0].title}, {args.backbone}"
    paths = write_table(work_dir, title, rows, datasets, data, notes)
    print(f"table: {paths['markdown']}, {paths['csv']}")
    return EXIT_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The paper's comparison table for one method: the method and the method + FSA on the benchmarks, next to
the published numbers (``tools/reproduce.py``).

:func:`plan_table` finds each cell's config (:func:`fsa_seg.zoo.experiments.find_config`) and makes one
:class:`~.jobs.Job` per (row, benchmark) into ``WORK_DIR/{base,fsa}/<dataset>/``; :func:`write_table` writes
``table.md`` / ``table.csv``: rows ``ours`` / ``paper`` / ``diff``, columns the benchmarks in the paper's
order and their average (only when every benchmark of the row has a number). :func:`plan_passes` pairs the two
jobs of a benchmark into one pass over the data when their configs differ only in settings that act after the
backbone (FSA on/off and the protocol's thresholds; :mod:`.one_pass`), e.g. not on Cityscapes with ProxyCLIP,
whose window stride differs between the ProxyCLIP and FSA protocols.
"""
from __future__ import annotations

import csv
import os
import os.path as osp
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..benchmarks import get_benchmark, paper_benchmarks
from ..open_vocab import VariantError
from ..plugin.datasets import check_data_root
from ..resources import shown_path
from ..zoo.experiments import backbone_tag, find_config, method_title, needs_proxy
from ..zoo.published_results import (cell, describe_entry, entry_numbers, find_entry, load_published,
                                     matching_entries, published_average, settings_mismatch)
from .config import ConfigKeyError, check_options, load_config
from .jobs import Job, collect_job, run_job_groups
from .one_pass import pass_variants


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


def default_table_dir(method: str, vfm: Optional[str], backbone: str) -> str:
    return osp.join("work_dirs", "reproduce", f"{method}{'_' + vfm if vfm else ''}_{backbone_tag(backbone)}")


def plan_table(method: str, vfm: Optional[str], backbone: str, datasets: Sequence[str], published: dict,
               work_dir: str, options: Optional[Mapping[str, Any]] = None,
               data_roots: Optional[Mapping[str, str]] = None, check: bool = True) -> Tuple[List[Row], List[Job]]:
    """The two rows (method, method + FSA) and one job per (row, dataset); with ``check`` every config,
    override and data root is validated before anything runs."""
    title = method_title(method, vfm)
    rows = [Row(fsa, title + (" + FSA" if fsa else "")) for fsa in (False, True)]
    jobs = []
    for row in rows:
        for ds in datasets:
            config, found, how = find_config(method, row.fsa, backbone, vfm, ds)
            job_options = dict(found)
            job_options.update(options or {})
            if ds in (data_roots or {}):
                job_options["test_dataloader.dataset.data_root"] = data_roots[ds]
            shown = shown_path(config)
            row.runs[ds] = f"`{shown}`" + (" (no config file: dataset config + " +
                                           ", ".join(f"{k}={v}" for k, v in job_options.items()
                                                     if k.startswith("model.")) + ")" if how == "fallback" else "")
            jobs.append(Job(config, job_options, osp.join(work_dir, "fsa" if row.fsa else "base", ds),
                            label=f"{row.title} {ds}", info=dict(row=row, dataset=ds)))
            if row.model is None or check:
                cfg = load_config(config, job_options)
                row.model = row.model or cfg.model
            if check:
                try:
                    check_options(cfg, job_options)
                except ConfigKeyError as err:
                    raise ValueError(str(err)) from None
                check_data_root(cfg.test_dataloader.dataset)
    for row in rows:  # the published entry each row is compared with, by its runs' model settings
        row.entry = find_entry(published, method, vfm, backbone, row.fsa, row.model)
        row.others = [e for e in matching_entries(published, method, vfm, backbone, row.fsa) if e is not row.entry]
    return rows, jobs


def plan_passes(jobs: Sequence[Job], separate: bool = False) -> List[List[Job]]:
    """The passes over the data: per benchmark, its jobs (method, method + FSA) in one pass when their configs
    differ only in variant keys (:func:`~.one_pass.pass_variants`), else one each; printed. ``separate``: one
    each."""
    if separate:
        return [[job] for job in jobs]
    by_dataset: Dict[str, List[Job]] = {}
    for job in jobs:
        by_dataset.setdefault(job.info["dataset"], []).append(job)
    groups: List[List[Job]] = []
    for ds, group in by_dataset.items():
        try:
            pass_variants([load_config(job.config, job.options) for job in group])
        except VariantError as err:
            print(f"{ds}: separate passes ({str(err).split(' (')[0].split(';')[0]})")
            groups += [[job] for job in group]
            continue
        print(f"{ds}: {' and '.join(job.info['row'].title for job in group)} in one pass over the data")
        groups.append(group)
    return groups


def reproduce_table(method: str, vfm: Optional[str], backbone: str, datasets: Optional[Sequence[str]] = None,
                    work_dir: Optional[str] = None, options: Optional[Mapping[str, Any]] = None,
                    data_roots: Optional[Mapping[str, str]] = None, published: Optional[dict] = None,
                    from_results: bool = False, rerun: bool = False, separate: bool = False
                    ) -> Tuple[List[Row], Dict[str, str], int]:
    """Evaluate (or, ``from_results``, only read) the method and the method + FSA on ``datasets`` (default:
    the paper's eight) and write the table; returns the rows, the written files and how many runs failed.
    Each benchmark's two runs share one pass over the data when they can (:func:`plan_passes`; ``separate``:
    never)."""
    vfm = vfm if needs_proxy(method) else None
    datasets = list(datasets or paper_benchmarks())
    published = published if published is not None else load_published()
    work_dir = work_dir or default_table_dir(method, vfm, backbone)
    rows, jobs = plan_table(method, vfm, backbone, datasets, published, work_dir, options, data_roots,
                            check=not from_results)
    os.makedirs(work_dir, exist_ok=True)
    results = ([collect_job(job) for job in jobs] if from_results else
               run_job_groups(plan_passes(jobs, separate), rerun=rerun))
    notes: List[str] = []
    for result in results:
        row, ds = result.job.info["row"], result.job.info["dataset"]
        row.ours[ds] = result.miou
        if result.status == "no results":
            notes.append(f"{row.title}, {ds}: no results.json in {result.job.work_dir}")
            print(f"{row.title} {ds}: no results in {result.job.work_dir}")
        elif result.status.startswith("failed"):
            notes.append(f"{row.title}, {ds}: {result.status}")
    paths = write_table(work_dir, f"{rows[0].title}, {backbone}", rows, datasets, published, notes)
    return rows, paths, sum(r.status.startswith("failed") for r in results)

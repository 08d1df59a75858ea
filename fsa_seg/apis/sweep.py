"""Grid sweeps: every combination of config values, on one or more benchmarks (``tools/sweep.py``).

* the grid (``--grid KEY=V1,V2,...``) is read, expanded and named by :mod:`.grid`;
* :func:`plan_sweep` checks every key and benchmark before anything runs and makes one :class:`~.jobs.Job`
  per (benchmark, combination), into ``WORK_DIR/<dataset>/<key=value__...>/`` (:func:`.grid.combo_dir`); on
  another benchmark the sibling config (name differing only in the dataset part) is used, else the dataset
  base config plus the config's model keys (:func:`fsa_seg.zoo.experiments.config_for_dataset`);
* :func:`plan_passes` groups the jobs into passes over the data: combinations that differ only in settings that
  act after the backbone (the model's ``VARIANT_KEYS``, :mod:`.one_pass`) share one pass; a grid key that
  changes anything else (the dataset, the window, the backbone, ...) splits them into one pass per value;
* :func:`write_outputs` writes ``sweep.csv``, ``sweep.md`` and the mIoU plots (``sweep_<dataset>.png``).
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import os
import os.path as osp
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mmengine.config import Config

from ..benchmarks import check_benchmarks
from ..open_vocab import VariantError
from ..plugin.datasets import check_data_root
from ..resources import shown_path
from ..zoo.experiments import config_for_dataset, dataset_of_config
from .checks import check_writable
from .config import ConfigKeyError, check_config_keys, check_options, load_config
from .grid import Grid, GridError, combo_dir, combo_label, expand_grid, short_key
from .jobs import Job, JobResult, run_job_groups
from .one_pass import pass_variants

# Bad sweep input (a bad --grid item, an unknown key or benchmark); the message (one line) says what to fix.
SweepError = GridError


# -- plots and tables ---------------------------------------------------------------------------------------
def _fmt(value: Optional[float]) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS (model.random_weights=True): the numbers are meaningless, a pipeline check"


def random_weights(rows: Sequence[dict]) -> bool:
    """Whether any row was evaluated with random weights (the tables and plots then say so)."""
    return any(r.get("random_weights") for r in rows)


def write_csv(path: str, rows: List[dict], keys: Sequence[str]) -> None:
    fields = ["dataset", *keys, "mIoU", "aAcc", "mAcc", "seconds", "status", "work_dir", "random_weights"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            out = {k: row.get(k) for k in fields}
            for k in ("mIoU", "aAcc", "mAcc"):
                out[k] = _fmt(row.get(k))
            out.update({k: json.dumps(row["combo"][k]) if not isinstance(row["combo"][k], str)
                        else row["combo"][k] for k in keys})
            writer.writerow(out)


def write_markdown(path: str, config: str, grid: Grid, rows: List[dict],
                   datasets: Sequence[str], plots: Dict[str, str]) -> None:
    keys = [k for k, _ in grid]
    lines = [f"# Sweep of `{config}`", ""]
    if random_weights(rows):
        lines += [f"**{RANDOM_WEIGHTS_NOTE}.**", ""]
    lines += [f"- `{k}`: {', '.join(str(v) for v in values)}" for k, values in grid]
    lines += ["", "mIoU in %; empty cells: not evaluated (yet) or failed.", ""]
    for ds in datasets:
        ds_rows = [r for r in rows if r["dataset"] == ds]
        lines += [f"## {ds}", ""]
        done = [r for r in ds_rows if r.get("mIoU") is not None]
        if done:
            best = max(done, key=lambda r: r["mIoU"])
            lines += [f"Best: **{_fmt(best['mIoU'])}** mIoU with {combo_label(best['combo'])}", ""]
        if len(keys) == 2:
            (k1, v1), (k2, v2) = grid
            table = {(json.dumps(r["combo"][k1]), json.dumps(r["combo"][k2])): r.get("mIoU") for r in ds_rows}
            lines.append(f"| {short_key(k1)} \\ {short_key(k2)} | " + " | ".join(str(v) for v in v2) + " |")
            lines.append("|---" * (len(v2) + 1) + "|")
            for a in v1:
                cells = [_fmt(table.get((json.dumps(a), json.dumps(b)))) for b in v2]
                lines.append(f"| {a} | " + " | ".join(cells) + " |")
            lines.append("")
        lines.append("| " + " | ".join([short_key(k) for k in keys] + ["mIoU", "aAcc", "mAcc", "status"]) + " |")
        lines.append("|---" * (len(keys) + 4) + "|")
        for r in ds_rows:
            cells = [str(r["combo"][k]) for k in keys] + [_fmt(r.get(m)) for m in ("mIoU", "aAcc", "mAcc")]
            lines.append("| " + " | ".join(cells + [r.get("status", "")]) + " |")
        if ds in plots:
            lines += ["", f"![mIoU]({osp.basename(plots[ds])})"]
        lines.append("")
    if "" in plots:
        lines += [f"![mIoU per dataset]({osp.basename(plots[''])})", ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def _heatmap(ax, matrix, v1, v2, k1, k2, title: str) -> None:
    import numpy as np

    data = np.array([[np.nan if x is None else x for x in row] for row in matrix], dtype=float)
    image = ax.imshow(data, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(v2)), [str(v) for v in v2])
    ax.set_yticks(range(len(v1)), [str(v) for v in v1])
    ax.set_xlabel(short_key(k2))
    ax.set_ylabel(short_key(k1))
    ax.set_title(title, fontsize=9)
    finite = data[np.isfinite(data)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if np.isfinite(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if data[i, j] < mid else "black")
    return image


def plot_dataset(path: str, ds: str, grid: Grid, rows: List[dict],
                 max_panels: int = 16) -> bool:
    """The mIoU plot of one dataset (see the module docstring); False when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    value = {tuple(json.dumps(r["combo"][k]) for k, _ in grid): r.get("mIoU") for r in rows}
    if not any(v is not None for v in value.values()):
        return False
    if random_weights(rows):
        ds = f"{ds} (RANDOM WEIGHTS: meaningless)"
    if len(grid) == 1:
        (k1, v1), = grid
        ys = [value.get((json.dumps(v),)) for v in v1]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        if all(_is_number(v) for v in v1):
            pts = [(x, y) for x, y in zip(v1, ys) if y is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        else:
            ax.bar(range(len(v1)), [y if y is not None else 0 for y in ys], tick_label=[str(v) for v in v1])
        ax.set_xlabel(short_key(k1))
        ax.set_ylabel("mIoU (%)")
        ax.set_title(ds)
    else:
        (k1, v1), (k2, v2) = grid[0], grid[1]
        extra = grid[2:]
        panels = list(itertools.product(*[vals for _, vals in extra])) if extra else [()]
        if len(panels) > max_panels:
            return False
        cols = min(4, len(panels))
        nrows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(1.2 + 0.9 * len(v2) * cols, 0.8 + 0.7 * len(v1) * nrows),
                                 squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.axis("off")
        for ax, panel in zip(axes.flat, panels):
            suffix = tuple(json.dumps(v) for v in panel)
            matrix = [[value.get((json.dumps(a), json.dumps(b)) + suffix) for b in v2] for a in v1]
            title = ds + ("  " + " ".join(f"{short_key(k)}={v}" for (k, _), v in zip(extra, panel)) if panel
                          else "  mIoU (%)")
            image = _heatmap(ax, matrix, v1, v2, k1, k2, title)
        fig.colorbar(image, ax=axes.ravel().tolist(), label="mIoU (%)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_datasets(path: str, rows: List[dict]) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("mIoU") is not None]
    if not done:
        return False
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(done), 3.5))
    ax.bar(range(len(done)), [r["mIoU"] for r in done], tick_label=[r["dataset"] for r in done])
    ax.set_ylabel("mIoU (%)")
    if random_weights(done):
        ax.set_title("RANDOM WEIGHTS: meaningless", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return True


def write_outputs(work_dir: str, config: str, grid, rows: List[dict], datasets: Sequence[str]) -> Dict[str, str]:
    keys = [k for k, _ in grid]
    write_csv(osp.join(work_dir, "sweep.csv"), rows, keys)
    plots: Dict[str, str] = {}
    if grid:
        for ds in datasets:
            path = osp.join(work_dir, f"sweep_{ds}.png")
            if plot_dataset(path, ds, grid, [r for r in rows if r["dataset"] == ds]):
                plots[ds] = path
    elif plot_datasets(osp.join(work_dir, "sweep.png"), rows):
        plots[""] = osp.join(work_dir, "sweep.png")
    write_markdown(osp.join(work_dir, "sweep.md"), config, grid, rows, datasets, plots)
    return plots


def plan_sweep(config: str, grid: Grid, datasets: Optional[Sequence[str]] = None,
               data_roots: Optional[Mapping[str, str]] = None, options: Optional[Mapping[str, Any]] = None,
               work_dir: Optional[str] = None) -> List[Job]:
    """Validate everything before the first run; one job per (dataset, combination).

    ``datasets``: benchmarks to sweep on (default: the config's own); ``data_roots``: benchmark -> data
    root; ``options``: overrides applied to every combination.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f"config file '{config}' not found (see configs/)")
    try:
        datasets = check_benchmarks(datasets) if datasets else []
    except ValueError as err:
        raise SweepError(str(err)) from None
    if not grid and not datasets:
        raise SweepError("nothing to sweep: give at least one --grid KEY=V1,V2 (or --datasets)")
    work_dir = work_dir or default_sweep_dir(config)
    base_cfg = Config.fromfile(config)
    own = dataset_of_config(base_cfg)
    if not datasets:
        datasets = [own or "dataset"]
    keys = [k for k, _ in grid]
    combos = expand_grid(grid)
    jobs = []
    for ds in datasets:
        if ds == own or ds == "dataset":
            ds_config, swap, how = config, {}, "same"
        else:
            ds_config, swap, how = config_for_dataset(config, ds, base_cfg)
        ds_options = dict(swap)
        ds_options.update(options or {})
        if ds in (data_roots or {}):
            ds_options["test_dataloader.dataset.data_root"] = data_roots[ds]
        cfg = load_config(ds_config, ds_options)
        try:
            check_options(cfg, ds_options)
            check_config_keys(cfg, keys, ds_config, flag="--grid")
        except ConfigKeyError as err:
            raise SweepError(str(err)) from None
        check_data_root(cfg.test_dataloader.dataset)
        if how != "same":
            shown = shown_path(ds_config)
            print(f"{ds}: {shown} ({how})")
        for combo in combos:
            random = bool(combo.get("model.random_weights", cfg.model.get("random_weights", False)))
            jobs.append(Job(ds_config, {**ds_options, **combo}, combo_dir(osp.join(work_dir, ds), combo),
                            label=f"{ds} {combo_label(combo)}",
                            info=dict(dataset=ds, combo=combo, random_weights=random)))
    return jobs


def plan_passes(jobs: Sequence[Job], grid: Grid, separate: bool = False) -> List[List[Job]]:
    """Group ``jobs`` (of :func:`plan_sweep`) into passes over the data, printing what it does.

    Without ``separate``: a grid key is a variant key when each of its values, alone on top of the config,
    could share a pass with the config (:func:`~.one_pass.pass_variants`); the combinations of one dataset with
    the same values of the other keys form one pass (checked again as a whole; if that fails they run
    separately, with the reason printed). ``separate``: one evaluation per job.
    """
    if separate or len(jobs) < 2:
        if separate:
            print(f"separate runs: {len(jobs)} evaluation(s), the backbone runs for each")
        return [[job] for job in jobs]
    keys = [k for k, _ in grid]
    datasets = list(dict.fromkeys(job.info["dataset"] for job in jobs))
    first = {ds: next(job for job in jobs if job.info["dataset"] == ds) for ds in datasets}
    others: Dict[str, str] = {}
    for key, values in grid:
        job = first[datasets[0]]
        plain = {k: v for k, v in job.options.items() if k not in keys}
        try:
            pass_variants([load_config(job.config, plain)] + [load_config(job.config, {**plain, key: v})
                                                              for v in values])
        except VariantError as err:
            others[key] = str(err)
    for key, why in others.items():
        print(f"grid key {key} splits the passes over the data: {why.split(' (')[0].split(';')[0]}")
    groups: Dict[Tuple, List[Job]] = {}
    for job in jobs:
        marker = (job.info["dataset"],) + tuple(json.dumps(job.info["combo"][k], default=str) for k in others)
        groups.setdefault(marker, []).append(job)
    out: List[List[Job]] = []
    for group in groups.values():
        if len(group) > 1:
            try:
                pass_variants([load_config(job.config, job.options) for job in group])
            except VariantError as err:
                print(f"{group[0].info['dataset']}: {len(group)} settings in separate runs ({err})")
                out += [[job] for job in group]
                continue
        out.append(list(group))
    varying = [k for k in keys if k not in others]
    if any(len(g) > 1 for g in out):
        per = "dataset" + (" and value of " + ", ".join(others) if others else "")
        print(f"one pass over the data per {per}, varying {', '.join(varying)} within it: {len(out)} "
              f"pass{'es' if len(out) > 1 else ''} for {len(jobs)} evaluations (--separate: one each)")
    return out


def default_sweep_dir(config: str) -> str:
    return osp.join("work_dirs", "sweep_" + osp.splitext(osp.basename(config))[0])


def result_rows(results: Sequence[JobResult]) -> List[dict]:
    """The rows of ``sweep.csv`` / ``sweep.md`` from job results."""
    rows = []
    for r in results:
        row = dict(dataset=r.job.info["dataset"], combo=r.job.info["combo"], work_dir=r.job.work_dir,
                   status=r.status, seconds=r.seconds, random_weights=bool(r.job.info.get("random_weights")))
        for k in ("mIoU", "aAcc", "mAcc"):
            if r.metrics.get(k) is not None:
                row[k] = float(r.metrics[k])
        rows.append(row)
    return rows


def run_sweep(config: str, grid: Grid, datasets: Optional[Sequence[str]] = None,
              data_roots: Optional[Mapping[str, str]] = None, options: Optional[Mapping[str, Any]] = None,
              work_dir: Optional[str] = None, rerun: bool = False, separate: bool = False) -> List[JobResult]:
    """Plan (everything checked first), evaluate every combination (in as few passes over the data as
    :func:`plan_passes` allows, or one each with ``separate``), and keep ``sweep.csv``, ``sweep.md`` and the
    plots of ``work_dir`` up to date after each one."""
    work_dir = work_dir or default_sweep_dir(config)
    check_writable(work_dir, "sweep work dir")
    jobs = plan_sweep(config, grid, datasets, data_roots, options, work_dir)
    groups = plan_passes(jobs, grid, separate)
    os.makedirs(work_dir, exist_ok=True)
    names = list(dict.fromkeys(job.info["dataset"] for job in jobs))
    order = {id(job): n for n, job in enumerate(jobs)}

    def in_grid_order(results: Sequence[JobResult]) -> List[JobResult]:  # passes may group them otherwise
        return sorted(results, key=lambda r: order[id(r.job)])

    results = run_job_groups(groups, rerun=rerun, on_result=lambda _, done: write_outputs(
        work_dir, config, grid, result_rows(in_grid_order(done)), names))
    return in_grid_order(results)

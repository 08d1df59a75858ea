"""Hyper-parameter sweep: evaluate every combination of config values, on one or more benchmarks.

    python tools/sweep.py CONFIG --grid model.top_p=0.3,0.45,0.6 --grid model.lamda=2,3,4 \\
        [--datasets voc21,context60] [--data-root voc21=PATH ...] [--work-dir DIR] \\
        [--cfg-options KEY=VALUE ...] [--rerun]

* ``--grid KEY=V1,V2,...`` (repeatable): any config key; ``model.*`` keys are checked against the model's
  options, other keys must exist in the config. Values are parsed like ``--cfg-options`` (int, float, bool,
  None, else string); a value holding commas is given as a JSON list: ``--grid 'k=[[1,2],[3,4]]'``.
* ``--datasets``: run the sweep on these benchmarks instead of CONFIG's own. For each benchmark the tool uses
  the sibling config whose file name differs only in the dataset part (``fsa_proxy_sam_voc21.py`` ->
  ``fsa_proxy_sam_context60.py``); without one it uses ``configs/_base_/datasets/<ds>.py`` plus CONFIG's
  model keys that are not benchmark keys (name_path, prob_thd, slide_crop, slide_stride stay the
  benchmark's) as ``--cfg-options``. The choice is printed for each benchmark.
* ``--data-root DS=PATH``: the data root of one benchmark (``--cfg-options
  test_dataloader.dataset.data_root=...`` would set one root for all).

Every combination runs in this process (``tools/test.py``'s ``run``; the model is rebuilt for each, with its
own mmengine experiment name) into ``WORK_DIR/<dataset>/<key=value__...>/``. A combination whose
``results.json`` exists (with the same options) is not run again; an interrupted one resumes where it
stopped (``--resume`` of tools/test.py). ``--rerun`` re-evaluates everything.

Outputs in WORK_DIR (default ``work_dirs/sweep_<config name>``), rewritten after every combination:

* ``sweep.csv`` - one row per (dataset, combination): the grid values, mIoU, aAcc, mAcc, seconds, status;
* ``sweep.md`` - per dataset: the mIoU table (for two keys a matrix: first key down, second across) and
  the best combination;
* ``sweep_<dataset>.png`` - mIoU plot: 1 key -> line plot (bar plot for non-numeric values), 2 keys -> heat
  map, more keys -> one heat map (first two keys) per combination of the other keys' values, up to 16 panels
  (beyond that, the tables only). Without ``--grid``: ``sweep.png``, mIoU per dataset.

Exit codes: 0 all combinations evaluated, 1 some failed (see ``status``), 2 bad input (one-line message).
"""
from __future__ import annotations

import argparse
import csv
import gc
import importlib.util
import itertools
import json
import math
import os
import os.path as osp
import re
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, DictAction  # noqa: E402

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input; the message says what to fix."""


def load_test_tool():
    """``tools/test.py`` as a module (``test`` would clash with the standard library's package)."""
    name = "fsa_tools_test_for_sweep"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO_ROOT, "tools", "test.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- parsing ------------------------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    text = text.strip()
    if text in ("None", "none", "null"):
        return None
    return DictAction._parse_int_float_bool(text)


def parse_grid(items: Sequence[str]) -> List[Tuple[str, List[Any]]]:
    grid: List[Tuple[str, List[Any]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise UsageError(f"--grid {item}: expected KEY=V1,V2,... e.g. --grid model.top_p=0.3,0.45,0.6")
        if values.strip().startswith("["):
            try:
                parsed = json.loads(values)
            except ValueError as err:
                raise UsageError(f"--grid {item}: the value list is not valid JSON ({err})") from None
        else:
            parsed = [parse_value(v) for v in values.split(",")]
            if any(isinstance(v, str) and not v for v in parsed):
                raise UsageError(f"--grid {item}: empty value (check for doubled or trailing commas)")
        if any(key == k for k, _ in grid):
            raise UsageError(f"--grid {key} is given twice; put all its values in one --grid")
        grid.append((key, list(parsed)))
    return grid


def short_key(key: str) -> str:
    return key[len("model."):] if key.startswith("model.") else key


def combo_label(combo: Dict[str, Any]) -> str:
    return " ".join(f"{short_key(k)}={v}" for k, v in combo.items()) or "(config as is)"


def combo_dirname(combo: Dict[str, Any]) -> str:
    if not combo:
        return "default"
    text = "__".join(f"{short_key(k)}={v}" for k, v in combo.items())
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", text)[:200]


# -- validation ---------------------------------------------------------------------------------------------
def _lookup(cfg: Any, key: str) -> bool:
    node: Any = cfg.to_dict() if isinstance(cfg, Config) else cfg
    for part in key.split("."):
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


def check_grid_keys(cfg: Config, keys: Sequence[str], config: str) -> None:
    """Model keys must be model options; other keys must exist in the config (a typo would do nothing)."""
    tool = load_test_tool()
    for key in keys:
        parts = key.split(".")
        if parts[0] == "model" and len(parts) >= 2:  # deeper levels (model.X.Y) are the model's to check
            try:
                tool.check_options(cfg, {"model." + parts[1]: None}, flag="--grid")
            except KeyError as err:
                raise UsageError(err.args[0].replace(f"--grid model.{parts[1]}:", f"--grid {key}:")) from None
        elif not _lookup(cfg, key):
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            siblings: List[str] = []
            if parent and _lookup(cfg, parent):
                node: Any = cfg.to_dict()
                for part in parent.split("."):
                    node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
                if isinstance(node, dict):
                    siblings = [f"{parent}.{k}" for k in node]
            elif not parent:
                siblings = list(cfg.to_dict().keys())
            import difflib
            close = difflib.get_close_matches(key, siblings, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UsageError(f"--grid {key}: {osp.basename(config)} has no key '{key}'{hint}")


# -- plots and tables ---------------------------------------------------------------------------------------
def _fmt(value: Optional[float]) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def write_csv(path: str, rows: List[dict], keys: Sequence[str]) -> None:
    fields = ["dataset", *keys, "mIoU", "aAcc", "mAcc", "seconds", "status", "work_dir"]
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


def write_markdown(path: str, config: str, grid: List[Tuple[str, List[Any]]], rows: List[dict],
                   datasets: Sequence[str], plots: Dict[str, str]) -> None:
    keys = [k for k, _ in grid]
    lines = [f"# Sweep of `{config}`", ""]
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


def plot_dataset(path: str, ds: str, grid: List[Tuple[str, List[Any]]], rows: List[dict],
                 max_panels: int = 16) -> bool:
    """The mIoU plot of one dataset (see the module docstring); False when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    value = {tuple(json.dumps(r["combo"][k]) for k, _ in grid): r.get("mIoU") for r in rows}
    if not any(v is not None for v in value.values()):
        return False
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


# -- main ---------------------------------------------------------------------------------------------------
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate every combination of config values (a grid sweep).")
    parser.add_argument("config", help="config file, e.g. configs/fsa_proxy_sam_voc21.py")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="a config key and its values; repeat for more keys")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="benchmarks to sweep on (comma- or space-separated), default: CONFIG's own")
    parser.add_argument("--data-root", nargs="+", action="extend", default=[], metavar="DS=PATH",
                        help="data root of a benchmark, e.g. voc21=data/VOCdevkit/VOC2012")
    parser.add_argument("--work-dir", help="default: work_dirs/sweep_<config name>")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="overrides applied to every combination")
    parser.add_argument("--rerun", action="store_true", help="re-evaluate combinations that have results")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> Tuple[List[Tuple[str, List[Any]]], List[dict]]:
    """Validate everything before the first run; returns the grid and one job per (dataset, combination)."""
    from fsa_seg.datasets import check_data_root
    from fsa_seg.experiments import check_benchmarks, config_for_dataset, dataset_of_config, parse_data_roots

    tool = load_test_tool()
    if not osp.isfile(args.config):
        raise FileNotFoundError(f"config file '{args.config}' not found (see configs/)")
    grid = parse_grid(args.grid)
    try:
        roots = parse_data_roots(args.data_root)
        datasets = check_benchmarks(args.datasets) if args.datasets else []
    except ValueError as err:
        raise UsageError(str(err)) from None
    base_cfg = Config.fromfile(args.config)
    own = dataset_of_config(base_cfg)
    if not datasets:
        datasets = [own or "dataset"]
    if not grid and not args.datasets:
        raise UsageError("nothing to sweep: give at least one --grid KEY=V1,V2 (or --datasets)")
    keys = [k for k, _ in grid]
    combos = [dict(zip(keys, values)) for values in itertools.product(*[v for _, v in grid])]
    jobs = []
    for ds in datasets:
        if ds == own or ds == "dataset":
            config, swap, how = args.config, {}, "same"
        else:
            config, swap, how = config_for_dataset(args.config, ds, base_cfg)
        options = dict(swap)
        options.update(args.cfg_options)
        if ds in roots:
            options["test_dataloader.dataset.data_root"] = roots[ds]
        cfg = tool.load_config(config, options)
        try:
            tool.check_options(cfg, options)
        except KeyError as err:
            raise UsageError(err.args[0]) from None
        check_grid_keys(cfg, keys, config)
        check_data_root(cfg.test_dataloader.dataset)
        if how != "same":
            print(f"{ds}: {osp.relpath(config, REPO_ROOT) if config.startswith(REPO_ROOT) else config} ({how})")
        for combo in combos:
            jobs.append(dict(dataset=ds, config=config, options={**options, **combo}, combo=combo))
    return grid, jobs


def _empty_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - best effort
        pass


def _same_options(stored: dict, options: dict) -> bool:
    return json.loads(json.dumps(stored, default=str)) == json.loads(json.dumps(options, default=str))


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from fsa_seg.experiments import read_results
    from fsa_seg.weights import WeightsUnavailableError

    try:
        grid, jobs = plan(args)
    except (UsageError, FileNotFoundError, WeightsUnavailableError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    tool = load_test_tool()
    work_dir = args.work_dir or osp.join("work_dirs", "sweep_" + osp.splitext(osp.basename(args.config))[0])
    os.makedirs(work_dir, exist_ok=True)
    datasets = list(dict.fromkeys(j["dataset"] for j in jobs))
    rows: List[dict] = []
    failed = 0
    start = time.time()
    for n, job in enumerate(jobs, 1):
        run_dir = osp.join(work_dir, job["dataset"], combo_dirname(job["combo"]))
        row = dict(dataset=job["dataset"], combo=job["combo"], work_dir=run_dir)
        prefix = f"[{n}/{len(jobs)}] {job['dataset']} {combo_label(job['combo'])}"
        previous = read_results(run_dir)
        reuse = (previous is not None and not args.rerun
                 and _same_options(previous.get("cfg_options", {}), job["options"]))
        if reuse:
            metrics = previous["metrics"]
            row.update(status="done before", seconds=previous.get("seconds"))
            print(f"{prefix} ... done before: mIoU {metrics.get('mIoU', float('nan')):.2f}", flush=True)
        else:
            print(f"{prefix} ...", flush=True)
            t0 = time.time()
            try:
                # A run cut short earlier resumes; a finished one with other options starts over.
                try:
                    metrics = tool.run(job["config"], job["options"], run_dir, resume=previous is None)
                except ValueError as err:
                    if not str(err).startswith("cannot resume"):
                        raise
                    print(f"{prefix}: {str(err).split(';')[0]}; starting over", flush=True)
                    metrics = tool.run(job["config"], job["options"], run_dir, resume=False)
                row.update(status="ok", seconds=round(time.time() - t0, 2))
                print(f"{prefix} -> mIoU {float(metrics.get('mIoU', float('nan'))):.2f} "
                      f"({time.time() - t0:.1f} s, sweep {time.time() - start:.0f} s)", flush=True)
            except KeyboardInterrupt:
                raise
            except Exception as err:  # keep sweeping; the row records why
                failed += 1
                metrics = {}
                message = (str(err).splitlines() or [""])[0][:300]
                row.update(status=f"failed: {type(err).__name__}: {message}")
                print(f"{prefix} -> FAILED: {type(err).__name__}: {message}", file=sys.stderr, flush=True)
            finally:
                gc.collect()
                _empty_cuda_cache()
        for k in ("mIoU", "aAcc", "mAcc"):
            if k in metrics and metrics[k] is not None:
                row[k] = float(metrics[k])
        rows.append(row)
        write_outputs(work_dir, args.config, grid, rows, datasets)
    print(f"sweep: {len(jobs) - failed}/{len(jobs)} combinations evaluated; results in "
          f"{osp.join(work_dir, 'sweep.csv')}, {osp.join(work_dir, 'sweep.md')}")
    return EXIT_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())

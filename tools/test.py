"""Evaluate a training-free segmentation config with mmengine's Runner.

    python tools/test.py configs/fsa_proxy_sam_voc.py [--work-dir DIR] [--cfg-options model.top_p=0.3 ...]
                         [--resume]

Prints progress while it runs, the per-class IoU table and mIoU at the end, and writes
``WORK_DIR/results.json`` with the config, the overrides and the metrics. Multi-GPU evaluation:
``bash tools/dist_test.sh CONFIG GPUS`` (torchrun + ``--launcher pytorch``).

Every run records each image's areas in ``WORK_DIR/per_image/`` as it goes (fsync'ed per batch). A run
that was interrupted (killed, out of time, crashed) continues where it stopped with ``--resume``: the
images already recorded are skipped and their stored areas merged, giving exactly the metric of an
uninterrupted run. Without ``--resume`` (the default) a run starts over and replaces the records.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import itertools
import json
import logging
import os
import os.path as osp
import sys
import time
import uuid
from typing import List, Optional

from mmengine.config import Config, DictAction

# Exit codes: 2 = bad input the user can fix (message says how); 1 = unexpected failure.
EXIT_USAGE = 2


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate an fsa-seg config (training-free OVSS).")
    parser.add_argument("config", help="config file, e.g. configs/fsa_proxy_sam_voc.py")
    parser.add_argument("--work-dir", help="where logs and results.json go (default: work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config keys, e.g. model.top_p=0.3 model.lamda=2.0")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in the same --work-dir: skip the images it already "
                             "evaluated (WORK_DIR/per_image/) and merge their results; default: start over")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def load_config(path: str, options: dict, work_dir: Optional[str] = None) -> Config:
    if not osp.isfile(path):
        raise FileNotFoundError(f"config file '{path}' not found (see configs/ or python tools/list_configs.py)")
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    cfg.work_dir = work_dir or cfg.get("work_dir") or osp.join("work_dirs", osp.splitext(osp.basename(path))[0])
    return cfg


def model_option_names(cfg: Config) -> set:
    """Keyword arguments the config's model class accepts (over its ``__init__`` MRO), plus ``type``."""
    import inspect

    from mmseg.registry import MODELS

    model_type = cfg.model.get("type")
    cls = MODELS.get(model_type) if isinstance(model_type, str) else model_type
    if cls is None:
        return set()
    accepted = {"type"}
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters
            accepted |= {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return accepted - {"self"}


def check_options(cfg: Config, options: dict, flag: str = "--cfg-options") -> None:
    """Reject overrides of model keys the model does not have (a typo would silently do nothing)."""
    accepted = model_option_names(cfg)
    if not accepted:
        return
    model_type = cfg.model.get("type")
    for key in options:
        parts = key.split(".")
        if parts[0] == "model" and len(parts) == 2 and parts[1] not in accepted:
            close = difflib.get_close_matches(parts[1], sorted(accepted), n=1)
            hint = f"did you mean 'model.{close[0]}'? " if close else ""
            raise KeyError(f"{flag} {key}: {model_type} has no option '{parts[1]}'; {hint}"
                           f"known options: {sorted(accepted)}")


def write_results(cfg: Config, config_path: str, options: dict, metrics: dict, per_class: dict,
                  seconds: float, extra: Optional[dict] = None) -> str:
    """Write ``WORK_DIR/results.json`` atomically (a killed run never leaves a half-written file)."""
    out = {
        "config": config_path,
        "cfg_options": {k: v for k, v in options.items()},
        "model": cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model),
        "dataset": {"type": cfg.test_dataloader.dataset.get("type"),
                    "data_root": cfg.test_dataloader.dataset.get("data_root")},
        "metrics": {k: float(v) for k, v in metrics.items()},
        "per_class": per_class,
        "seconds": round(seconds, 2),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out.update(extra or {})
    path = osp.join(cfg.work_dir, "results.json")
    os.makedirs(cfg.work_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


_RUN_COUNTER = itertools.count()


def unique_experiment_name(cfg: Config, config_path: str) -> str:
    """A fresh experiment name per run: mmengine keys its logger, visualizer, message hub and default
    scope instances by it, so runs in one process (sweeps, tests) must not share one."""
    base = cfg.get("experiment_name") or osp.splitext(osp.basename(config_path))[0]
    return f"{base}_{time.strftime('%Y%m%d_%H%M%S')}_{next(_RUN_COUNTER)}_{uuid.uuid4().hex[:6]}"


def _launch_rank(launcher: str) -> int:
    """This process's rank before the runner initialises distributed mode (0 without a launcher)."""
    if launcher == "none":
        return 0
    for var in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _record_metric(evaluator) -> Optional[dict]:
    """The PerClassIoUMetric entry of ``test_evaluator`` (a dict or a list of dicts), if any."""
    entries = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    for entry in entries:
        if isinstance(entry, dict) and entry.get("type") in ("PerClassIoUMetric", "mmseg.PerClassIoUMetric"):
            return entry
    return None


def setup_resume(cfg: Config, resume: bool, launcher: str = "none") -> Optional[str]:
    """Turn on per-image records (``WORK_DIR/per_image``) and, with ``resume``, skipping of done images.

    Returns the record folder, or ``None`` when the evaluator is not a ``PerClassIoUMetric``.
    """
    from fsa_seg.resume import config_signature, prepare_records, record_dir_for

    metric = _record_metric(cfg.get("test_evaluator"))
    if metric is None:
        if resume:
            raise ValueError("--resume needs test_evaluator type='PerClassIoUMetric' (it records per-image "
                             "results); this config uses another evaluator")
        return None
    record_dir = osp.abspath(record_dir_for(cfg.work_dir))
    dataset_cfg = cfg.test_dataloader.dataset
    signature = config_signature(cfg.model, dataset_cfg, cfg.get("test_evaluator"))
    if _launch_rank(launcher) == 0:
        done = prepare_records(record_dir, signature, resume)
        if resume:
            print(f"resume: {done} image(s) already evaluated in {record_dir}; skipping them" if done else
                  f"resume: nothing recorded yet in {record_dir}; evaluating every image")
    metric["record_dir"] = record_dir
    cfg.test_dataloader.dataset = dict(type="SkipDoneDataset", dataset=copy.deepcopy(dataset_cfg),
                                       record_dir=record_dir if resume else None)
    return record_dir


def _evaluate_records_only(cfg: Config, dataset_cfg: dict, record_dir: str) -> Optional[tuple]:
    """When every image of the dataset is already recorded, the metric from the records alone (no model,
    no runner): ``(metrics, per_class, num_images)``; ``None`` while images remain."""
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS, METRICS

    from fsa_seg.resume import SkipDoneDataset, load_records

    if not load_records(record_dir):
        return None
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "mmseg")):
        wrapped = SkipDoneDataset(DATASETS.build(copy.deepcopy(dataset_cfg)), record_dir)
        if len(wrapped) > 0:
            return None
        metric = METRICS.build(copy.deepcopy(_record_metric(cfg.get("test_evaluator"))))
        metric.dataset_meta = wrapped.metainfo
        metrics = metric.compute_metrics([])
    return metrics, metric.per_class, metric.num_images


def _close_log_files(runner) -> None:
    """Close the run's log file handlers (loggers are global; many runs in one process would leak them)."""
    logger = getattr(runner, "logger", None)
    for handler in list(getattr(logger, "handlers", [])):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logger.removeHandler(handler)


def run(config: str, options: Optional[dict] = None, work_dir: Optional[str] = None,
        launcher: str = "none", resume: bool = False) -> dict:
    """Evaluate ``config``; returns the metrics dict (also written to ``work_dir/results.json``).

    Per-image results are recorded in ``work_dir/per_image``; ``resume=True`` continues an interrupted
    run there (see the module docstring).
    """
    import fsa_seg  # noqa: F401  (registers models, datasets, metric)
    from fsa_seg.datasets import check_data_root
    from mmengine.runner import Runner

    options = dict(options or {})
    cfg = load_config(config, options, work_dir)
    cfg.launcher = launcher
    if launcher != "none":  # distributed: backend for the device (nccl on CUDA, gloo on CPU), a model
        from fsa_seg.distributed import setup_distributed  # wrapper for a frozen model, CPU process group
        setup_distributed(cfg, launcher)
    check_options(cfg, options)
    check_data_root(cfg.test_dataloader.dataset)
    if cfg.model.get("random_weights") and cfg.get("randomness") is None:
        cfg.randomness = dict(seed=0)  # random weights: the same model in every run (resumable, comparable)
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    start = time.time()
    record_dir = setup_resume(cfg, resume, launcher)
    if resume and record_dir:
        finished = _evaluate_records_only(cfg, dataset_cfg, record_dir)
        if finished is not None:  # nothing left to evaluate (killed after the last image)
            metrics, per_class, num_images = finished
            cfg.test_dataloader.dataset = dataset_cfg
            if _launch_rank(launcher) == 0:
                path = write_results(cfg, config, options, metrics, per_class, time.time() - start,
                                     {"images": num_images})
                print(f"mIoU {metrics.get('mIoU', float('nan')):.2f}  (every image was already evaluated)  "
                      f"results: {path}")
            return metrics
    cfg.experiment_name = unique_experiment_name(cfg, config)
    runner = Runner.from_cfg(cfg)
    cfg.test_dataloader.dataset = dataset_cfg  # results.json names the dataset, not the resume wrapper
    try:
        metrics = runner.test()
    finally:
        _close_log_files(runner)
    per_class, extra = {}, {}
    for metric in getattr(runner.test_evaluator, "metrics", []):
        per_class = getattr(metric, "per_class", per_class)
        if hasattr(metric, "num_images"):
            extra["images"] = metric.num_images
    if runner.rank == 0:
        path = write_results(cfg, config, options, metrics, per_class, time.time() - start, extra)
        print(f"mIoU {metrics.get('mIoU', float('nan')):.2f}  (aAcc {metrics.get('aAcc', float('nan')):.2f}, "
              f"mAcc {metrics.get('mAcc', float('nan')):.2f})  results: {path}")
    return metrics


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    from fsa_seg.weights import WeightsUnavailableError

    try:
        run(args.config, args.cfg_options, args.work_dir, args.launcher, resume=args.resume)
    except (FileNotFoundError, WeightsUnavailableError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())

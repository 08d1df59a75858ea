"""Evaluating a config with mmengine's Runner: resumable per-image records and ``results.json``.

Every evaluation records each image's areas in ``WORK_DIR/per_image/`` as it goes (fsync'ed per batch,
:mod:`fsa_seg.plugin.resume`). An interrupted run continues with ``resume=True``: the images already
recorded are skipped and their stored areas merged, giving exactly the metric of an uninterrupted run.
Without it a run starts over and replaces the records.
"""
from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import os.path as osp
import time
import uuid
from typing import Any, Dict, Mapping, Optional

from mmengine.config import Config

from .config import check_options, load_config


def write_results(cfg: Config, config_path: str, options: Mapping[str, Any], metrics: Mapping[str, float],
                  per_class: dict, seconds: float, extra: Optional[dict] = None) -> str:
    """Write ``WORK_DIR/results.json`` atomically (a killed run never leaves a half-written file)."""
    out = {
        "config": config_path,
        "cfg_options": dict(options),
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


def read_results(work_dir: str) -> Optional[dict]:
    """``work_dir/results.json`` as a dict, or ``None`` if absent or unreadable (e.g. cut short)."""
    try:
        with open(osp.join(work_dir, "results.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("metrics"), dict) else None


_RUN_COUNTER = itertools.count()


def unique_experiment_name(cfg: Config, config_path: str) -> str:
    """A fresh experiment name per run: mmengine keys its logger, visualizer, message hub and default
    scope instances by it, so runs in one process (sweeps, tests) must not share one."""
    base = cfg.get("experiment_name") or osp.splitext(osp.basename(config_path))[0]
    return f"{base}_{time.strftime('%Y%m%d_%H%M%S')}_{next(_RUN_COUNTER)}_{uuid.uuid4().hex[:6]}"


def launch_rank(launcher: str) -> int:
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
    from ..plugin.resume import config_signature, prepare_records, record_dir_for

    metric = _record_metric(cfg.get("test_evaluator"))
    if metric is None:
        if resume:
            raise ValueError("--resume needs test_evaluator type='PerClassIoUMetric' (it records per-image "
                             "results); this config uses another evaluator")
        return None
    record_dir = osp.abspath(record_dir_for(cfg.work_dir))
    dataset_cfg = cfg.test_dataloader.dataset
    signature = config_signature(cfg.model, dataset_cfg, cfg.get("test_evaluator"))
    if launch_rank(launcher) == 0:
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

    from ..plugin.resume import SkipDoneDataset, load_records

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


def evaluate(config: str, options: Optional[Mapping[str, Any]] = None, work_dir: Optional[str] = None,
             launcher: str = "none", resume: bool = False) -> Dict[str, float]:
    """Evaluate ``config`` (with ``options`` merged) on its test set; returns the metrics dict, also written
    with the per-class IoU to ``work_dir/results.json`` (default ``work_dirs/<config name>``).

    ``resume=True`` continues an interrupted run in the same ``work_dir`` (see the module docstring).
    """
    import fsa_seg.plugin  # noqa: F401  (registers models, datasets, metric)
    from mmengine.runner import Runner

    from ..plugin.datasets import check_data_root

    from ..distributed import setup_distributed
    from ..env_info import announce_run

    options = dict(options or {})
    cfg = load_config(config, options, work_dir)
    cfg.launcher = launcher
    check_options(cfg, options)
    check_data_root(cfg.test_dataloader.dataset)
    # Distributed: the backend for the device (nccl on CUDA, gloo on CPU), a model wrapper that accepts a
    # frozen model, and on CPU the process group (see fsa_seg.distributed).
    setup_distributed(cfg, launcher)
    if launch_rank(launcher) == 0:
        announce_run(cfg.model.get("precision", "auto"), cfg.model.get("device"))
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
            if launch_rank(launcher) == 0:
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

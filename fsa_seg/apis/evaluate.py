"""Evaluating a config with mmengine's Runner: resumable per-image records and ``results.json``.

Every evaluation records each image's areas in ``WORK_DIR/per_image/`` as it goes (fsync'ed per batch,
:mod:`fsa_seg.plugin.resume`). An interrupted run continues with ``resume=True``: the images already
recorded are skipped and their stored areas merged, giving exactly the metric of an uninterrupted run.
Without it a run starts over and replaces the records.

Several runs whose configs differ only in model settings that act after the backbone (the model's
``VARIANT_KEYS``) can be evaluated in one pass over the data (:func:`evaluate_runs`, :mod:`.one_pass`): the
backbone runs once per crop batch, one metric per run scores its variant, and each run's ``results.json`` and
per-image records land where, and as, its own :func:`evaluate` would write them.
"""
from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import os.path as osp
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from mmengine.config import Config

from ..plugin.loop import UnreadableImageError, skipped_images
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
    record_dirs = _setup_records(cfg, [cfg], [resume], launcher)
    return record_dirs[0] if record_dirs else None


def _record_dirs(runner_cfg: Config, cfgs: Sequence[Config], resumes: Sequence[bool]) -> Optional[List[str]]:
    """The per-image record folder of each run (``WORK_DIR/per_image``), checked without writing anything (one-line
    ``ValueError``: an evaluator that cannot record, shared work dirs); ``None`` when the evaluator is not a
    ``PerClassIoUMetric``."""
    from ..plugin.resume import record_dir_for

    metric = _record_metric(runner_cfg.get("test_evaluator"))
    if metric is None:
        if any(resumes):
            raise ValueError("--resume needs test_evaluator type='PerClassIoUMetric' (it records per-image "
                             "results); this config uses another evaluator")
        if len(cfgs) > 1:
            raise ValueError("evaluating several settings in one pass needs test_evaluator "
                             "type='PerClassIoUMetric'; use separate runs")
        return None
    record_dirs = [osp.abspath(record_dir_for(cfg.work_dir)) for cfg in cfgs]
    if len(set(record_dirs)) < len(record_dirs):
        raise ValueError("the runs of one pass need different work dirs (each writes its own results.json)")
    evaluator = runner_cfg.test_evaluator
    if len(cfgs) > 1 and isinstance(evaluator, (list, tuple)) and len(evaluator) != 1:
        raise ValueError("evaluating several settings in one pass needs a single test_evaluator "
                         "(PerClassIoUMetric); use separate runs")
    return record_dirs


def _signature(cfg: Config) -> dict:
    from ..plugin.resume import config_signature

    return config_signature(cfg.model, cfg.test_dataloader.dataset, cfg.get("test_evaluator"))


def _setup_records(runner_cfg: Config, cfgs: Sequence[Config], resumes: Sequence[bool],
                   launcher: str = "none", skip_unreadable: bool = False) -> Optional[List[str]]:
    """Per-image records for each run of ``cfgs`` in its own ``WORK_DIR/per_image`` (signature: its own config),
    and the evaluator, dataset and test loop of ``runner_cfg`` set up for them: one run keeps its evaluator (record
    dir added); several get one ``PerClassIoUMetric`` each (``variant=k``, ``prefix='variant<k>'``). With resume,
    the images recorded for every run are skipped. An unreadable image stops the run, or with ``skip_unreadable``
    is skipped (:mod:`fsa_seg.plugin.loop`). ``None`` when the evaluator is not a ``PerClassIoUMetric``.
    """
    from ..plugin.resume import prepare_records

    record_dirs = _record_dirs(runner_cfg, cfgs, resumes)
    if record_dirs is None:
        return None
    metric = _record_metric(runner_cfg.get("test_evaluator"))
    dataset_cfg = runner_cfg.test_dataloader.dataset
    if launch_rank(launcher) == 0:
        for cfg, record_dir, resume in zip(cfgs, record_dirs, resumes):
            done = prepare_records(record_dir, _signature(cfg), resume)
            if resume:
                print(f"resume: {done} image(s) already evaluated in {record_dir}; skipping them" if done else
                      f"resume: nothing recorded yet in {record_dir}; evaluating every image")
    if len(cfgs) == 1:
        metric["record_dir"] = record_dirs[0]
    else:
        runner_cfg.test_evaluator = [dict(copy.deepcopy(metric), record_dir=record_dir, variant=k,
                                          prefix=f"variant{k}") for k, record_dir in enumerate(record_dirs)]
    # Skip an image only when every run resumes and has it (a run that starts over has no records left).
    skip = (record_dirs[0] if len(cfgs) == 1 else record_dirs) if all(resumes) else None
    runner_cfg.test_dataloader.dataset = dict(type="SkipDoneDataset", dataset=copy.deepcopy(dataset_cfg),
                                              record_dir=skip)
    runner_cfg.test_dataloader.collate_fn = dict(type="fsa_collate_readable",
                                                 inner=runner_cfg.test_dataloader.get("collate_fn"))
    loop = runner_cfg.get("test_cfg") or {}
    if loop.get("type", "TestLoop") in ("TestLoop", "RecordedTestLoop"):
        runner_cfg.test_cfg = dict(loop, type="RecordedTestLoop", skip_unreadable=skip_unreadable)
    return record_dirs


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
        metric = METRICS.build(dict(copy.deepcopy(_record_metric(cfg.get("test_evaluator"))), record_dir=record_dir))
        metric.dataset_meta = wrapped.metainfo
        metrics = metric.compute_metrics([])
    return metrics, metric.per_class, metric.num_images


def add_progress_hook(cfg: Config) -> None:
    """Progress per image (``ImageProgressHook``) for a config whose ``custom_hooks`` lack it."""
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(str(h.get("type", "")).split(".")[-1] == "ImageProgressHook" for h in hooks if isinstance(h, dict)):
        cfg.custom_hooks = hooks + [dict(type="ImageProgressHook")]


def _close_log_files(runner) -> None:
    """Close the run's log file handlers (loggers are global; many runs in one process would leak them)."""
    logger = getattr(runner, "logger", None)
    for handler in list(getattr(logger, "handlers", [])):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logger.removeHandler(handler)


@dataclass
class Run:
    """One evaluation: ``config`` with ``options`` merged, into ``work_dir`` (default ``work_dirs/<config name>``)."""

    config: str
    options: Dict[str, Any] = field(default_factory=dict)
    work_dir: Optional[str] = None


def evaluate(config: str, options: Optional[Mapping[str, Any]] = None, work_dir: Optional[str] = None,
             launcher: str = "none", resume: bool = False, strict: bool = False,
             skip_unreadable: bool = False) -> Dict[str, float]:
    """Evaluate ``config`` (with ``options`` merged) on its test set; returns the metrics dict, also written
    with the per-class IoU to ``work_dir/results.json`` (default ``work_dirs/<config name>``).

    ``resume=True`` continues an interrupted run in the same ``work_dir`` (see the module docstring). ``strict``:
    a class-name line that does not name the dataset's class at its id is an error (else a warning).
    ``skip_unreadable``: an image that cannot be read is skipped and listed (else the run stops, naming it).
    """
    return evaluate_runs([Run(config, dict(options or {}), work_dir)], launcher, resume, strict,
                         skip_unreadable)[0]


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C during an evaluation; ``str()`` is the one line to print (how far it got, how to continue)."""

    def __init__(self, done: Optional[int], total: Optional[int]) -> None:
        super().__init__(f"interrupted after {done}/{total} images; continue with --resume"
                         if done is not None and total is not None else "interrupted before any image was evaluated")
        self.done, self.total = done, total

    def __str__(self) -> str:
        return str(self.args[0])


def _print_metrics(metrics: Mapping[str, float], path: str, label: str = "", random_weights: bool = False) -> None:
    note = "  RANDOM WEIGHTS: meaningless, a pipeline check" if random_weights else ""
    print(f"{label}mIoU {metrics.get('mIoU', float('nan')):.2f}  (aAcc {metrics.get('aAcc', float('nan')):.2f}, "
          f"mAcc {metrics.get('mAcc', float('nan')):.2f})  results: {path}{note}")


def evaluate_runs(runs: Sequence[Run], launcher: str = "none", resume: Union[bool, Sequence[bool]] = False,
                  strict: bool = False, skip_unreadable: bool = False) -> List[Dict[str, float]]:
    """Evaluate ``runs`` in one pass over the data; each run's metrics (also in its ``results.json``).

    One run is a plain evaluation. Several must differ only in model settings that act after the backbone
    (:func:`fsa_seg.apis.one_pass.pass_variants` says which; anything else raises a one-line ``ValueError``):
    the first run's config drives the runner (its logs go to the first work dir), its model evaluates every
    run's settings as variants, and each run gets the ``results.json`` and per-image records a separate
    :func:`evaluate` would write (``seconds``: the wall time of the whole pass). ``resume``: for all runs,
    or one flag per run; an image is skipped only when every run resumes and has it recorded.

    Everything is checked before anything is written: the config keys, the data root, the class-name file
    against the dataset (:func:`~.checks.check_class_file`; ``strict`` as in :func:`evaluate`), the work dirs, the
    records to resume, then the model is built (value ranges, weights); only then does the runner create the work
    dir. Ctrl-C raises :class:`EvaluationInterrupted` (the records so far are kept); an unreadable image raises
    :class:`~fsa_seg.plugin.loop.UnreadableImageError` (records kept) unless ``skip_unreadable``.
    """
    from ..distributed import process_group_scope

    with process_group_scope(launcher):  # the group this evaluation opens is closed when it ends
        return _evaluate_runs(runs, launcher, resume, strict, skip_unreadable)


def _build_model(cfg: Config):
    """The config's segmentor, built as the runner would (its default scope; seeded as ``cfg.randomness`` says, so
    random weights are the same in every run)."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import set_random_seed
    from mmseg.registry import MODELS

    randomness = cfg.get("randomness")
    if randomness and randomness.get("seed") is not None:
        set_random_seed(**randomness)
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "mmseg")):
        return MODELS.build(copy.deepcopy(cfg.model))


def _runner_with_model(cfg: Config, model):
    """``Runner.from_cfg(cfg)`` that uses the already built ``model`` (checked before the runner writes anything)."""
    from mmengine.runner import Runner

    class _BuiltModelRunner(Runner):
        def build_model(self, model_cfg):
            return model if isinstance(model_cfg, dict) else super().build_model(model_cfg)

    return _BuiltModelRunner.from_cfg(cfg)


def _images_done(runner, record_dirs: Optional[List[str]]) -> tuple:
    """``(done, total)`` images of an evaluation cut short: the records on disk and the dataset's images (``None``
    when unknown)."""
    from ..plugin.resume import load_records

    loop = getattr(runner, "_test_loop", None)
    dataset = getattr(getattr(loop, "dataloader", None), "dataset", None)
    total = len(getattr(dataset, "all_keys", [])) or None
    if not record_dirs:
        return None, total
    done = min(len(load_records(d)) for d in record_dirs)
    return done, total


def _close_records(runner) -> None:
    """Flush and close the metrics' record files (an evaluation cut short keeps what it recorded)."""
    loop = getattr(runner, "_test_loop", None)
    for metric in getattr(getattr(loop, "evaluator", None), "metrics", []):
        writer = getattr(metric, "_writer", None)
        if writer is not None:
            writer.close()
            metric._writer = None


def _evaluate_runs(runs: Sequence[Run], launcher: str, resume: Union[bool, Sequence[bool]], strict: bool = False,
                   skip_unreadable: bool = False) -> List[Dict[str, float]]:
    import fsa_seg.plugin  # noqa: F401  (registers models, datasets, metric)

    from ..distributed import setup_distributed
    from ..diagnostics.env_info import announce_run
    from ..plugin.datasets import check_data_root
    from ..plugin.resume import check_resumable
    from .checks import check_class_file, check_writable
    from .one_pass import pass_variants

    if not runs:
        raise ValueError("nothing to evaluate: no runs given")
    resumes = [bool(resume)] * len(runs) if isinstance(resume, bool) else [bool(r) for r in resume]
    if len(resumes) != len(runs):
        raise ValueError(f"resume: {len(resumes)} flags for {len(runs)} runs")
    # -- checks: nothing is built or written until they pass -------------------------------------------------
    cfgs = []
    for run in runs:
        cfg = load_config(run.config, run.options, run.work_dir)
        check_options(cfg, run.options)
        cfgs.append(cfg)
    variants = pass_variants(cfgs) if len(cfgs) > 1 else [{}]
    cfg = copy.deepcopy(cfgs[0])  # the runner's config; cfgs keep each run's own for its results.json
    cfg.launcher = launcher
    check_data_root(cfg.test_dataloader.dataset)
    class_warning = check_class_file(cfg.model, cfg.test_dataloader.dataset, strict)
    for run_cfg in cfgs:
        check_writable(run_cfg.work_dir)
    record_dirs = _record_dirs(cfg, cfgs, resumes)
    if record_dirs and launch_rank(launcher) == 0:
        for run_cfg, record_dir, run_resume in zip(cfgs, record_dirs, resumes):
            if run_resume:
                check_resumable(record_dir, _signature(run_cfg))
    random_weights = bool(cfg.model.get("random_weights"))
    # Distributed: the backend for the device (nccl on CUDA, gloo on CPU), a model wrapper that accepts a
    # frozen model, and on CPU the process group (see fsa_seg.distributed).
    setup_distributed(cfg, launcher)
    if launch_rank(launcher) == 0:
        announce_run(cfg.model.get("precision", "auto"), cfg.model.get("device"))
        if class_warning:
            print(f"warning: {class_warning}", file=sys.stderr, flush=True)
        if len(runs) > 1:
            print(f"one pass, {len(runs)} settings: " + "; ".join(
                " ".join(f"{k}={v}" for k, v in variant.items()) or "as configured" for variant in variants),
                flush=True)
    if random_weights and cfg.get("randomness") is None:
        cfg.randomness = dict(seed=0)  # random weights: the same model in every run (resumable, comparable)
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    start = time.time()
    if all(resumes) and record_dirs:
        finished = []
        for run_cfg, record_dir in zip(cfgs, record_dirs):  # up to the first run with images left
            finished.append(_evaluate_records_only(run_cfg, dataset_cfg, record_dir))
            if finished[-1] is None:
                break
        if all(f is not None for f in finished):  # nothing left to evaluate (killed after the last image)
            out = []
            for run, run_cfg, (metrics, per_class, num_images) in zip(runs, cfgs, finished):
                if launch_rank(launcher) == 0:
                    path = write_results(run_cfg, run.config, run.options, metrics, per_class,
                                         time.time() - start, {"images": num_images})
                    print(f"mIoU {metrics.get('mIoU', float('nan')):.2f}  (every image was already evaluated)  "
                          f"results: {path}")
                out.append(metrics)
            return out
    if len(runs) > 1:
        cfg.model["variants"] = variants
    try:
        model = _build_model(cfg)  # value ranges, class file, weights: before the runner creates the work dir
    except KeyboardInterrupt:
        raise EvaluationInterrupted(None, None) from None
    # -- the run: from here on the work dir is written -------------------------------------------------------
    record_dirs = _setup_records(cfg, cfgs, resumes, launcher, skip_unreadable)
    cfg.experiment_name = unique_experiment_name(cfg, runs[0].config)
    add_progress_hook(cfg)
    runner = _runner_with_model(cfg, model)
    try:
        metrics = runner.test()
    except KeyboardInterrupt:
        _close_records(runner)
        raise EvaluationInterrupted(*_images_done(runner, record_dirs)) from None
    except UnreadableImageError as err:
        _close_records(runner)
        done, total = _images_done(runner, record_dirs)
        kept = f"{done}/{total} images are recorded; " if done is not None and total else ""
        raise UnreadableImageError(f"{err}; {kept}fix or remove the file and continue with --resume, or pass "
                                   f"--skip-bad-images", err.path) from None
    finally:
        _close_log_files(runner)
    skipped = skipped_images(runner) or []
    metric_objects = list(getattr(runner.test_evaluator, "metrics", []))
    out = []
    for k, (run, run_cfg) in enumerate(zip(runs, cfgs)):
        if len(runs) > 1:
            prefix = f"variant{k}/"
            run_metrics = {name[len(prefix):]: v for name, v in metrics.items() if name.startswith(prefix)}
            scored = [metric_objects[k]]
        else:
            run_metrics, scored = dict(metrics), metric_objects
        per_class, extra = {}, {}
        for metric in scored:
            per_class = getattr(metric, "per_class", per_class)
            if hasattr(metric, "num_images"):
                extra["images"] = metric.num_images
        if skipped:
            extra["skipped_images"] = [{"image": path, "reason": reason} for path, reason in skipped]
        if runner.rank == 0:
            path = write_results(run_cfg, run.config, run.options, run_metrics, per_class, time.time() - start,
                                 extra)
            _print_metrics(run_metrics, path, random_weights=random_weights)
        out.append(run_metrics)
    if skipped and runner.rank == 0:
        print(f"warning: {len(skipped)} unreadable image(s) skipped (no result; --resume evaluates them once "
              f"fixed): " + ", ".join(path for path, _ in skipped), file=sys.stderr, flush=True)
    return out

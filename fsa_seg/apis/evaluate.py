"""Evaluating a config with mmengine's Runner: resumable per-image records and ``results.json``.

Every evaluation records each image's areas in ``WORK_DIR/per_image/`` as it goes (fsync'ed per batch,
:mod:`fsa_seg.plugin.resume`). An interrupted run continues with ``resume=True``: the images already
recorded are skipped and their stored areas merged, giving exactly the metric of an uninterrupted run.
Without it a run starts over and replaces the records. ``results.json`` is written by :mod:`.results`.

Several runs whose configs differ only in model settings that act after the backbone (the model's
``VARIANT_KEYS``; :mod:`.one_pass` says which runs can) are evaluated in one pass over the data
(:func:`evaluate_runs`, :func:`evaluate_variants`): the backbone runs once per crop batch, one metric per run
scores its variant, and each run's ``results.json`` and per-image records land where, and as, its own
:func:`evaluate` would write them.
"""
from __future__ import annotations

import copy
import itertools
import logging
import os
import os.path as osp
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from mmengine.config import Config

from .. import plugin  # noqa: F401  (registers the segmentors, datasets, metric, loop and hooks)
from ..diagnostics.env_info import announce_run
from ..distributed import process_group_scope, setup_distributed
from ..plugin.datasets import check_data_root
from ..plugin.loop import UnreadableImageError, skipped_images
from ..plugin.resume import (check_resumable, close_records, images_done, metrics_from_records, record_dirs,
                             run_signature, setup_records)
from .checks import check_class_file, check_writable
from .config import check_config_keys, check_options, load_config
from .one_pass import pass_variants
from .results import write_results


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
    (:func:`.one_pass.pass_variants` says which; anything else raises a one-line ``ValueError``):
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
    with process_group_scope(launcher):  # the group this evaluation opens is closed when it ends
        return _evaluate_runs(runs, launcher, resume, strict, skip_unreadable)


def evaluate_variants(config: str, variants: Sequence[Mapping[str, Any]], work_dirs: Sequence[str],
                      options: Optional[Mapping[str, Any]] = None, launcher: str = "none",
                      resume: Union[bool, Sequence[bool]] = False, strict: bool = False,
                      skip_unreadable: bool = False) -> List[Dict[str, float]]:
    """Evaluate ``config`` with ``options`` and each of ``variants`` (``--cfg-options`` keys, e.g.
    ``{'model.top_p': 0.3}``) merged, into ``work_dirs[k]``, in one pass over the data; returns each variant's
    metrics. The files are those of ``evaluate(config, {**options, **variants[k]}, work_dirs[k])``. An unknown
    variant key is a :class:`~.config.ConfigKeyError` naming ``--variants``."""
    if len(variants) != len(work_dirs):
        raise ValueError(f"{len(variants)} variants but {len(work_dirs)} work dirs")
    options = dict(options or {})
    keys = list(dict.fromkeys(k for v in variants for k in v))
    check_config_keys(load_config(config, options), keys, config, flag="--variants")
    return evaluate_runs([Run(config, {**options, **dict(v)}, w) for v, w in zip(variants, work_dirs)],
                         launcher, resume, strict, skip_unreadable)


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


def _evaluate_runs(runs: Sequence[Run], launcher: str, resume: Union[bool, Sequence[bool]], strict: bool = False,
                   skip_unreadable: bool = False) -> List[Dict[str, float]]:
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
    run_record_dirs = record_dirs(cfg, cfgs, resumes)
    if run_record_dirs and launch_rank(launcher) == 0:
        for run_cfg, record_dir, run_resume in zip(cfgs, run_record_dirs, resumes):
            if run_resume:
                check_resumable(record_dir, run_signature(run_cfg))
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
    if all(resumes) and run_record_dirs:
        finished = []
        for run_cfg, record_dir in zip(cfgs, run_record_dirs):  # up to the first run with images left
            finished.append(metrics_from_records(run_cfg, dataset_cfg, record_dir))
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
    run_record_dirs = setup_records(cfg, cfgs, resumes, prepare=launch_rank(launcher) == 0,
                                    skip_unreadable=skip_unreadable)
    cfg.experiment_name = unique_experiment_name(cfg, runs[0].config)
    add_progress_hook(cfg)
    runner = _runner_with_model(cfg, model)
    try:
        metrics = runner.test()
    except KeyboardInterrupt:
        close_records(runner)
        raise EvaluationInterrupted(*images_done(runner, run_record_dirs)) from None
    except UnreadableImageError as err:
        close_records(runner)
        done, total = images_done(runner, run_record_dirs)
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

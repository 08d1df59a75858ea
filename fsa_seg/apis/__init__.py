"""The workflows, as mmseg's ``apis``: build a segmentor from a config and segment images with it, evaluate a
config (resumable, ``results.json``), several settings in one pass over the data, and run many evaluations
(sweeps, the paper table). ``tools/*.py`` are command-line front ends over these. Needs mmseg/mmcv (the models
themselves do not).

The modules, from the bottom up (each imports only modules of the package listed before it): :mod:`.config`
(loading and checking overrides), :mod:`.checks` (pre-run checks), :mod:`.results` (``results.json``),
:mod:`.grid` (``KEY=V1,V2`` grids: parsing, expansion, naming), :mod:`.inference` (single images);
:mod:`.one_pass` (which runs can share a pass); :mod:`.evaluate` (:func:`evaluate`, :func:`evaluate_runs`,
:func:`evaluate_variants`); :mod:`.jobs` (the job loop); :mod:`.sweep` and :mod:`.paper_table` (planners over the
job loop). Per-image records and resuming are the plugin's (:mod:`fsa_seg.plugin.resume`).
"""
from .config import ConfigKeyError, check_options, load_config
from .evaluate import EvaluationInterrupted, Run, evaluate, evaluate_runs, evaluate_variants
from .grid import GridError, combo_dirname, expand_grid, parse_grid
from .inference import Segmentation, init_segmentor, parse_classes, read_image, segment_image
from .jobs import Job, JobResult, run_jobs
from .one_pass import pass_variants
from .results import read_results, write_results

__all__ = ["ConfigKeyError", "EvaluationInterrupted", "GridError", "Job", "JobResult", "Run", "Segmentation",
           "check_options", "combo_dirname", "evaluate", "evaluate_runs", "evaluate_variants", "expand_grid",
           "init_segmentor", "load_config", "parse_classes", "parse_grid", "pass_variants", "read_image",
           "read_results", "run_jobs", "segment_image", "write_results"]

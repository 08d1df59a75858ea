"""The workflows, as mmseg's ``apis``: build a segmentor from a config and segment images with it, evaluate a
config (resumable, ``results.json``), several settings in one pass over the data (``one_pass``), and run many
evaluations (sweeps, the paper table). ``tools/*.py`` are command-line front ends over these. Needs mmseg/mmcv
(the models themselves do not)."""
from .config import ConfigKeyError, check_options, load_config
from .evaluate import EvaluationInterrupted, Run, evaluate, evaluate_runs, read_results, write_results
from .inference import Segmentation, init_segmentor, parse_classes, read_image, segment_image
from .jobs import Job, JobResult, run_jobs
from .one_pass import evaluate_variants

__all__ = ["ConfigKeyError", "EvaluationInterrupted", "Job", "JobResult", "Run", "Segmentation", "check_options", "evaluate", "evaluate_runs",
           "evaluate_variants", "init_segmentor", "load_config", "parse_classes", "read_image", "read_results",
           "run_jobs", "segment_image", "write_results"]

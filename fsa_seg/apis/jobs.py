"""The job loop of the experiment tools (sweep, paper table): many evaluations, each into its own work dir.

A job whose ``results.json`` exists with the same options is not run again (``rerun`` forces it); one cut
short earlier resumes where it stopped; a failure is recorded and the loop goes on.
"""
from __future__ import annotations

import gc
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from .evaluate import evaluate, read_results


@dataclass
class Job:
    """One evaluation: a config with overrides, into ``work_dir``; ``label`` names it in the progress lines."""

    config: str
    options: Dict[str, Any]
    work_dir: str
    label: str = ""
    info: Dict[str, Any] = field(default_factory=dict)  # the caller's bookkeeping (dataset, grid values, ...)


@dataclass
class JobResult:
    job: Job
    status: str                       # 'ok', 'done before', 'no results' or 'failed: <why>'
    metrics: Dict[str, float] = field(default_factory=dict)
    seconds: Optional[float] = None

    @property
    def miou(self) -> Optional[float]:
        value = self.metrics.get("mIoU")
        return None if value is None else float(value)


def same_options(stored: Dict[str, Any], options: Dict[str, Any]) -> bool:
    """Options equal as their JSON forms (what results.json stores)."""
    return json.loads(json.dumps(stored, default=str)) == json.loads(json.dumps(options, default=str))


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_job(job: Job, rerun: bool = False, prefix: str = "") -> JobResult:
    """Evaluate one job (or reuse its finished result), never raising for a failed evaluation."""
    prefix = prefix or job.label
    previous = read_results(job.work_dir)
    if previous is not None and not rerun and same_options(previous.get("cfg_options", {}), job.options):
        result = JobResult(job, "done before", previous["metrics"], previous.get("seconds"))
        print(f"{prefix} ... done before: mIoU {_fmt(result.miou)}", flush=True)
        return result
    print(f"{prefix} ...", flush=True)
    start = time.time()
    try:
        try:  # a run cut short earlier resumes; a finished one with other options starts over
            metrics = evaluate(job.config, job.options, job.work_dir, resume=previous is None)
        except ValueError as err:
            if not str(err).startswith("cannot resume"):
                raise
            print(f"{prefix}: {str(err).split(';')[0]}; starting over", flush=True)
            metrics = evaluate(job.config, job.options, job.work_dir, resume=False)
        result = JobResult(job, "ok", {k: float(v) for k, v in metrics.items()}, round(time.time() - start, 2))
        print(f"{prefix} -> mIoU {_fmt(result.miou)} ({result.seconds:.1f} s)", flush=True)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # keep going; the result records why
        message = (str(err).splitlines() or [""])[0][:300]
        result = JobResult(job, f"failed: {type(err).__name__}: {message}")
        print(f"{prefix} -> FAILED: {type(err).__name__}: {message}", file=sys.stderr, flush=True)
    finally:
        gc.collect()
        _empty_cuda_cache()
    return result


def collect_job(job: Job) -> JobResult:
    """A job's finished result from its ``results.json``, without running anything."""
    previous = read_results(job.work_dir)
    if previous is None:
        return JobResult(job, "no results")
    return JobResult(job, "done before", previous["metrics"], previous.get("seconds"))


def run_jobs(jobs: Sequence[Job], rerun: bool = False,
             on_result: Optional[Callable[[JobResult, List[JobResult]], None]] = None) -> List[JobResult]:
    """Run ``jobs`` in order; ``on_result(result, results_so_far)`` after each (e.g. to rewrite a table)."""
    results: List[JobResult] = []
    start = time.time()
    for n, job in enumerate(jobs, 1):
        result = run_job(job, rerun, prefix=f"[{n}/{len(jobs)}] {job.label}")
        results.append(result)
        if on_result is not None:
            on_result(result, results)
    ok = sum(not r.status.startswith("failed") for r in results)
    print(f"{ok}/{len(jobs)} evaluations done in {time.time() - start:.0f} s", flush=True)
    return results


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"

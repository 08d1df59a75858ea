"""The job loop of the experiment tools (sweep, paper table): many evaluations, each into its own work dir.

A job whose ``results.json`` exists with the same options is not run again (``rerun`` forces it); one cut
short earlier resumes where it stopped; a failure is recorded and the loop goes on. Jobs that differ only in
settings acting after the backbone can run as a group in one pass over the data (:func:`run_pass`,
:func:`run_job_groups`; the caller forms the groups, e.g. :func:`fsa_seg.apis.sweep.plan_passes`).
"""
from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from .evaluate import Run, evaluate, evaluate_runs
from .results import read_results, same_options


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


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_job(job: Job, rerun: bool = False, prefix: str = "") -> JobResult:
    """Evaluate one job (or reuse its finished result), never raising for a failed evaluation."""
    return run_pass([job], rerun, [prefix or job.label])[0]


def run_pass(jobs: Sequence[Job], rerun: bool = False, prefixes: Optional[Sequence[str]] = None) -> List[JobResult]:
    """Evaluate ``jobs`` together in one pass over the data (:func:`~.evaluate.evaluate_runs`; one job left:
    :func:`~.evaluate.evaluate`), each into its own work dir; finished jobs are reused (not re-run), cut-short ones
    resume, finished ones with other options start over. Never raises for a failed evaluation: then every job of
    the pass records the failure."""
    prefixes = list(prefixes or [job.label for job in jobs])
    results: List[Optional[JobResult]] = [None] * len(jobs)
    todo, resumes = [], []
    for n, job in enumerate(jobs):
        previous = read_results(job.work_dir)
        if previous is not None and not rerun and same_options(previous.get("cfg_options", {}), job.options):
            results[n] = JobResult(job, "done before", previous["metrics"], previous.get("seconds"))
            print(f"{prefixes[n]} ... done before: mIoU {_fmt(results[n].miou)}", flush=True)
        else:
            todo.append(n)
            resumes.append(previous is None)
    if not todo:
        return results  # type: ignore[return-value]
    single = len(todo) == 1
    if single:
        job = jobs[todo[0]]
        label, how = prefixes[todo[0]], ""

        def run(resume):
            return [evaluate(job.config, job.options, job.work_dir, resume=resume)]
        resume = resumes[0]
    else:
        print(f"one pass over {len(todo)} settings (the backbone runs once per crop batch):", flush=True)
        label, how = "one pass", "one pass, "
        runs = [Run(jobs[n].config, jobs[n].options, jobs[n].work_dir) for n in todo]

        def run(resume):
            return evaluate_runs(runs, resume=resume)
        resume = resumes
    for n in todo:
        print(f"{prefixes[n]} ...", flush=True)
    start = time.time()
    try:
        try:
            metrics = run(resume)
        except ValueError as err:
            if not str(err).startswith("cannot resume"):
                raise
            print(f"{label}: {str(err).split(';')[0]}; starting over", flush=True)
            metrics = run(False)
        seconds = round(time.time() - start, 2)
        for n, m in zip(todo, metrics):
            results[n] = JobResult(jobs[n], "ok", {k: float(v) for k, v in m.items()}, seconds)
            print(f"{prefixes[n]} -> mIoU {_fmt(results[n].miou)} ({how}{seconds:.1f} s)", flush=True)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # keep going; the results record why
        message = (str(err).splitlines() or [""])[0][:300]
        for n in todo:
            results[n] = JobResult(jobs[n], f"failed: {type(err).__name__}: {message}")
        print(f"{label} -> FAILED: {type(err).__name__}: {message}", file=sys.stderr, flush=True)
    finally:
        gc.collect()
        _empty_cuda_cache()
    return results  # type: ignore[return-value]


def collect_job(job: Job) -> JobResult:
    """A job's finished result from its ``results.json``, without running anything."""
    previous = read_results(job.work_dir)
    if previous is None:
        return JobResult(job, "no results")
    return JobResult(job, "done before", previous["metrics"], previous.get("seconds"))


def run_jobs(jobs: Sequence[Job], rerun: bool = False,
             on_result: Optional[Callable[[JobResult, List[JobResult]], None]] = None) -> List[JobResult]:
    """Run ``jobs`` in order; ``on_result(result, results_so_far)`` after each (e.g. to rewrite a table)."""
    return run_job_groups([[job] for job in jobs], rerun, on_result)


def run_job_groups(groups: Sequence[Sequence[Job]], rerun: bool = False,
                   on_result: Optional[Callable[[JobResult, List[JobResult]], None]] = None) -> List[JobResult]:
    """Run groups of jobs in order, each group of several jobs in one pass (:func:`run_pass`); results in job
    order; ``on_result(result, results_so_far)`` after each job."""
    results: List[JobResult] = []
    total = sum(len(group) for group in groups)
    start = time.time()
    for group in groups:
        first = len(results) + 1
        prefixes = [f"[{n}/{total}] {job.label}" for n, job in enumerate(group, first)]
        done = [run_job(group[0], rerun, prefix=prefixes[0])] if len(group) == 1 else run_pass(group, rerun, prefixes)
        for result in done:
            results.append(result)
            if on_result is not None:
                on_result(result, results)
    ok = sum(not r.status.startswith("failed") for r in results)
    passes = f" ({len(groups)} pass{'es' if len(groups) != 1 else ''} over the data)" if len(groups) < total else ""
    print(f"{ok}/{total} evaluations done in {time.time() - start:.1f} s{passes}", flush=True)
    return results


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"

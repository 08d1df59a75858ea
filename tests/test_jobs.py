"""The job loop (fsa_seg/apis/jobs.py) around the evaluation: reuse of finished runs, the restart of a run that
cannot resume, and failures recorded instead of raised; the evaluation itself is replaced by stand-ins."""
import json

import pytest

from fsa_seg.apis import jobs
from fsa_seg.apis.jobs import Job, run_job, run_pass


@pytest.fixture
def calls(monkeypatch):
    """Stand-ins for evaluate / evaluate_runs that record their calls and answer from ``calls['answers']``."""
    state = {"single": [], "pass": [], "answers": []}

    def answer():
        item = state["answers"].pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def fake_evaluate(config, options, work_dir, resume=False):
        state["single"].append((work_dir, resume))
        return answer()

    def fake_evaluate_runs(runs, resume=False):
        state["pass"].append(([r.work_dir for r in runs], resume))
        return answer()

    monkeypatch.setattr(jobs, "evaluate", fake_evaluate)
    monkeypatch.setattr(jobs, "evaluate_runs", fake_evaluate_runs)
    return state


def job(tmp_path, name, **options):
    return Job("cfg.py", dict(options), str(tmp_path / name), label=name)


def finished(work_dir, options, miou):
    import os

    os.makedirs(work_dir, exist_ok=True)
    with open(os.path.join(work_dir, "results.json"), "w") as f:
        json.dump({"cfg_options": options, "metrics": {"mIoU": miou}, "seconds": 3.0}, f)


def test_finished_job_is_reused_unless_its_options_differ_or_rerun(tmp_path, calls, capsys):
    a = job(tmp_path, "a", **{"model.top_p": 0.3})
    finished(a.work_dir, a.options, 50.0)
    result = run_job(a)
    assert result.status == "done before" and result.miou == 50.0 and calls["single"] == []
    calls["answers"] = [{"mIoU": 51.0}, {"mIoU": 52.0}]
    assert run_job(a, rerun=True).miou == 51.0
    other = Job(a.config, {"model.top_p": 0.6}, a.work_dir, label="a")
    assert run_job(other).miou == 52.0
    # a finished run with other options is not resumed (its records belong to other options)
    assert calls["single"] == [(a.work_dir, False), (a.work_dir, False)]
    assert "a ... done before: mIoU 50.00" in capsys.readouterr().out


def test_cannot_resume_starts_over_and_failures_are_recorded(tmp_path, calls, capsys):
    calls["answers"] = [ValueError("cannot resume: records of another config; run without --resume"),
                        {"mIoU": 40.0}]
    result = run_job(job(tmp_path, "b"))
    assert result.status == "ok" and result.miou == 40.0
    assert calls["single"] == [(str(tmp_path / "b"), True), (str(tmp_path / "b"), False)]
    assert "b: cannot resume: records of another config; starting over" in capsys.readouterr().out
    calls["answers"] = [RuntimeError("out of memory\nmore")]
    failed = run_job(job(tmp_path, "c"))
    assert failed.status == "failed: RuntimeError: out of memory" and failed.metrics == {}
    assert "c -> FAILED: RuntimeError: out of memory" in capsys.readouterr().err
    calls["answers"] = [ValueError("bad value")]  # a ValueError that is not about resuming is a failure too
    assert run_job(job(tmp_path, "d")).status == "failed: ValueError: bad value"


def test_pass_runs_only_the_unfinished_jobs_together(tmp_path, calls, capsys):
    done, x, y = job(tmp_path, "done"), job(tmp_path, "x"), job(tmp_path, "y")
    finished(done.work_dir, done.options, 60.0)
    calls["answers"] = [[{"mIoU": 10.0}, {"mIoU": 20.0}]]
    results = run_pass([x, done, y])
    assert [r.status for r in results] == ["ok", "done before", "ok"]
    assert [r.miou for r in results] == [10.0, 60.0, 20.0]
    assert calls["pass"] == [([x.work_dir, y.work_dir], [True, True])] and calls["single"] == []
    out = capsys.readouterr().out
    assert "one pass over 2 settings" in out and "x -> mIoU 10.00 (one pass, " in out
    calls["answers"] = [RuntimeError("boom")]
    failed = run_pass([job(tmp_path, "p"), job(tmp_path, "q")])
    assert [r.status for r in failed] == ["failed: RuntimeError: boom"] * 2
    assert "one pass -> FAILED: RuntimeError: boom" in capsys.readouterr().err
    # one unfinished job left: a single evaluation
    calls["answers"] = [{"mIoU": 30.0}]
    assert [r.miou for r in run_pass([done, job(tmp_path, "z")])] == [60.0, 30.0]
    assert calls["single"] == [(str(tmp_path / "z"), True)]

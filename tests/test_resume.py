"""Resumable evaluation: per-image records, skipping finished images, exact merge; a real SIGKILL + --resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from datagen import write_voc
from fsa_seg.apis import evaluate, evaluate_variants, load_config
from fsa_seg.plugin.evaluation import PerClassIoUMetric
from fsa_seg.plugin.resume import (ALL_KEYS, RecordWriter, SkipDoneDataset, load_records, prepare_records,
                                   record_file, setup_resume)
from tiny import as_cli, tiny_run_options

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "fsa_proxy_sam_voc21.py")
SIZES = [(48, 64), (40, 56), (48, 64), (56, 40), (48, 64), (44, 60), (48, 64), (52, 48)]


def slow_config(tmp_path: Path) -> Path:
    """CONFIG slowed down by a hook (0.6 s per batch), so that a run can be killed midway; hooks are not part of
    what the records depend on."""
    (tmp_path / "slow_hook.py").write_text(SLOW_HOOK)
    slow_cfg = tmp_path / "slow_voc21.py"
    slow_cfg.write_text(f"_base_ = ['{CONFIG}']\n"
                        "custom_imports = dict(imports=['fsa_seg.plugin', 'slow_hook'], allow_failed_imports=False)\n"
                        "custom_hooks = [dict(type='SlowTestHook', seconds=0.6)]\n")
    return slow_cfg


def kill_when(proc: subprocess.Popen, ready, timeout: float = 240.0) -> None:
    """SIGKILL ``proc`` (started with ``stderr=PIPE``) as soon as ``ready()``; it must still be running then."""
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def tiny_options(tmp_path: Path, data_root: Path) -> dict:
    return tiny_run_options(tmp_path, data_root, **{"test_dataloader.batch_size": 2})


SLOW_HOOK = '''
import time
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class SlowTestHook(Hook):
    """Sleeps after every test batch so that the test can kill the run midway."""

    def __init__(self, seconds=0.5):
        self.seconds = seconds

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        time.sleep(self.seconds)
'''


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_clean_metric(tmp_path):
    write_voc(tmp_path / "voc", SIZES, seed=3)
    options = tiny_options(tmp_path, tmp_path / "voc")

    # Every run is a separate process with the same thread count: the metric must be equal to the last
    # bit, and random tiny models give near-tied logits whose argmax follows the reduction order.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")

    def run_cli(config, work_dir, *extra):
        return subprocess.run([sys.executable, str(REPO / "tools" / "test.py"), str(config), "--work-dir",
                               str(work_dir), *extra, "--cfg-options", *as_cli(options)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)

    clean = run_cli(CONFIG, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr.decode()[-2000:]
    clean_result = json.loads((tmp_path / "clean" / "results.json").read_text())
    assert clean_result["images"] == len(SIZES)
    assert len(load_records(str(tmp_path / "clean" / "per_image"))) == len(SIZES)

    # The same config, slowed down by a hook (hooks are not part of what the records depend on).
    slow_cfg = slow_config(tmp_path)
    work = tmp_path / "killed"
    records = work / "per_image" / "rank0.jsonl"
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "test.py"), str(slow_cfg), "--work-dir", str(work),
                             "--cfg-options", *as_cli(options)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # SIGKILL once one batch is flushed
    kill_when(proc, lambda: records.is_file() and len(records.read_text().splitlines()) >= 2)
    assert not (work / "results.json").exists()
    done = len(load_records(str(work / "per_image")))
    assert 2 <= done < len(SIZES)
    with open(records, "a") as f:  # as if the kill had cut a line in half
        f.write('{"key": "/half/written')

    resumed_run = run_cli(CONFIG, work, "--resume")
    assert resumed_run.returncode == 0, resumed_run.stderr.decode()[-2000:]
    resumed = json.loads((work / "results.json").read_text())
    assert resumed["metrics"] == clean_result["metrics"]
    assert resumed["per_class"] == clean_result["per_class"]
    assert resumed["images"] == len(SIZES)
    stored = load_records(str(work / "per_image"))
    clean_stored = load_records(str(tmp_path / "clean" / "per_image"))
    assert sorted(stored) == sorted(clean_stored)
    for key in stored:
        np.testing.assert_array_equal(stored[key], clean_stored[key])

    # Resuming a finished run evaluates nothing and gives the same numbers again.
    again = evaluate(CONFIG, options, str(work), resume=True)
    assert {k: float(v) for k, v in again.items()} == clean_result["metrics"]


@pytest.mark.slow
def test_one_pass_sigkill_then_resume_gives_the_clean_metrics(tmp_path):
    """tools/test.py --variants killed midway, one variant's last batch missing (a kill between two metrics'
    flushes): --resume evaluates only the images some variant lacks, and every variant ends as a clean run."""
    write_voc(tmp_path / "voc", SIZES, seed=3)
    options = tiny_options(tmp_path, tmp_path / "voc")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    variants = ["--variants", "model.top_p=0.3,0.6,1.0"]
    names = ["top_p=0.3", "top_p=0.6", "top_p=1.0"]

    def command(config, work_dir, *extra):
        return [sys.executable, str(REPO / "tools" / "test.py"), str(config), "--work-dir", str(work_dir), *variants,
                *extra, "--cfg-options", *as_cli(options)]

    clean = subprocess.run(command(CONFIG, tmp_path / "clean"), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=600)
    assert clean.returncode == 0, clean.stderr.decode()[-2000:]
    clean_results = [json.loads((tmp_path / "clean" / n / "results.json").read_text()) for n in names]
    assert len({json.dumps(r["metrics"]) for r in clean_results}) > 1  # the variants differ

    slow_cfg = slow_config(tmp_path)
    work = tmp_path / "killed"
    files = [work / n / "per_image" / "rank0.jsonl" for n in names]
    proc = subprocess.Popen(command(slow_cfg, work), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    # SIGKILL once a batch is flushed in each variant's records
    kill_when(proc, lambda: all(f.is_file() and len(f.read_text().splitlines()) >= 2 for f in files))
    assert not any((work / n / "results.json").exists() for n in names)
    lines = files[2].read_text().splitlines(keepends=True)
    files[2].write_text("".join(lines[:-1]))  # the last variant lost its last image
    recorded = [set(load_records(str(f.parent))) for f in files]
    done = set.intersection(*recorded)
    assert 1 <= len(done) < len(SIZES)

    resumed_run = subprocess.run(command(CONFIG, work, "--resume"), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, timeout=600)
    assert resumed_run.returncode == 0, resumed_run.stderr.decode()[-2000:]
    for n, clean_result in zip(names, clean_results):
        resumed = json.loads((work / n / "results.json").read_text())
        for key in ("metrics", "per_class", "images", "cfg_options", "model"):
            assert resumed[key] == clean_result[key], (n, key)
        stored, expected = load_records(str(work / n / "per_image")), load_records(str(tmp_path / "clean" / n /
                                                                                        "per_image"))
        assert sorted(stored) == sorted(expected)
        for key in stored:
            np.testing.assert_array_equal(stored[key], expected[key])
    # Only the images that some variant lacked were evaluated again (and recorded again where already present).
    for f, before in zip(files, recorded):
        keys = [json.loads(line)["key"] for line in f.read_text().splitlines()]
        for key in set(keys):
            assert keys.count(key) == (2 if key in before and key not in done else 1), (f, key)

    # Resuming the finished pass evaluates nothing and gives every variant's numbers again.
    again = evaluate_variants(CONFIG, [{"model.top_p": v} for v in (0.3, 0.6, 1.0)], [str(work / n) for n in names],
                              options, resume=True)
    assert [{k: float(v) for k, v in m.items()} for m in again] == [r["metrics"] for r in clean_results]


def test_resume_refuses_records_of_another_config(tmp_path):
    write_voc(tmp_path / "voc", SIZES[:2])
    options = tiny_options(tmp_path, tmp_path / "voc")
    cfg = load_config(CONFIG, options, str(tmp_path / "w"))
    setup_resume(cfg, resume=False)  # records prepared for top_p=0.45
    with pytest.raises(ValueError, match="cannot resume") as err:
        evaluate(CONFIG, {**options, "model.top_p": 0.3}, str(tmp_path / "w"), resume=True)
    assert "model.top_p" in str(err.value) and "without --resume" in str(err.value) and "\n" not in str(err.value)



def _voc_dataset_cfg(root: Path) -> dict:
    from mmengine.config import Config

    cfg = Config.fromfile(CONFIG)
    dataset = cfg.test_dataloader.dataset.to_dict()
    dataset["data_root"] = str(root)
    return dataset


@pytest.mark.parametrize("batch_size", [1, 3])
def test_skip_done_dataset_with_default_sampler(tmp_path, batch_size):
    from mmengine.dataset import DefaultSampler, pseudo_collate
    from mmengine.registry import DefaultScope
    from torch.utils.data import DataLoader

    write_voc(tmp_path / "voc", [(16, 20)] * 7)
    with DefaultScope.overwrite_default_scope("mmseg"):
        full = SkipDoneDataset(_voc_dataset_cfg(tmp_path / "voc"), None)
        keys = full.all_keys
        writer = RecordWriter(str(tmp_path / "rec"), 0)
        for key in (keys[0], keys[3], keys[4]):
            writer.write(key, np.ones((4, 21), dtype=np.int64))
        writer.close()
        wrapped = SkipDoneDataset(_voc_dataset_cfg(tmp_path / "voc"), str(tmp_path / "rec"))
    assert len(full) == 7 and len(wrapped) == 4 and wrapped.num_done == 3
    assert wrapped.metainfo[ALL_KEYS] == tuple(keys)
    loader = DataLoader(wrapped, batch_size=batch_size, sampler=DefaultSampler(wrapped, shuffle=False),
                        collate_fn=pseudo_collate)
    seen = [s.img_path for batch in loader for s in batch["data_samples"]]
    assert seen == [keys[i] for i in (1, 2, 5, 6)]


def test_skip_done_dataset_skips_what_every_variant_recorded(tmp_path):
    from mmengine.registry import DefaultScope

    write_voc(tmp_path / "voc", [(16, 20)] * 5)
    with DefaultScope.overwrite_default_scope("mmseg"):
        keys = SkipDoneDataset(_voc_dataset_cfg(tmp_path / "voc"), None).all_keys
        for name, done in (("a", (0, 1, 2)), ("b", (1, 2, 4))):
            writer = RecordWriter(str(tmp_path / name), 0)
            for i in done:
                writer.write(keys[i], np.ones((4, 21), dtype=np.int64))
            writer.close()
        both = SkipDoneDataset(_voc_dataset_cfg(tmp_path / "voc"), [str(tmp_path / "a"), str(tmp_path / "b")])
    assert both.num_done == 2 and [both.get_data_info(i)["img_path"] for i in range(len(both))] == \
        [keys[0], keys[3], keys[4]]


def _sample(key: str, pred: np.ndarray, label: np.ndarray) -> dict:
    return {"img_path": key, "pred_sem_seg": {"data": torch.as_tensor(pred)[None]},
            "gt_sem_seg": {"data": torch.as_tensor(label)[None]}}


def test_metric_merges_stored_records_exactly(tmp_path):
    rng = np.random.default_rng(0)
    samples = [_sample(f"img{i}", rng.integers(0, 3, (8, 9)), rng.integers(0, 3, (8, 9))) for i in range(5)]
    meta = {"classes": ("a", "b", "c"), ALL_KEYS: tuple(f"img{i}" for i in range(5))}

    whole = PerClassIoUMetric()
    whole.dataset_meta = meta
    whole.process({}, samples)
    expected = whole.compute_metrics(whole.results)

    record_dir = str(tmp_path / "per_image")
    first = PerClassIoUMetric(record_dir=record_dir)
    first.dataset_meta = meta
    first.process({}, samples[:2])
    first.process({}, samples[2:3])  # then "killed": nothing computed
    assert len(load_records(record_dir)) == 3
    second = PerClassIoUMetric(record_dir=record_dir)
    second.dataset_meta = meta
    second.process({}, samples[3:])
    assert second.compute_metrics(second.results) == expected
    assert second.per_class == whole.per_class and second.num_images == 5


def test_torn_last_line_is_ignored_and_cut(tmp_path):
    record_dir = str(tmp_path)
    writer = RecordWriter(record_dir, 0)
    writer.write("a", np.zeros((4, 2), dtype=np.int64))
    writer.close()
    with open(record_file(record_dir, 0), "a") as f:
        f.write('{"key": "b", "areas": [[1')
    assert list(load_records(record_dir)) == ["a"]
    writer = RecordWriter(record_dir, 0)  # cuts the torn line before appending
    writer.write("c", np.ones((4, 2), dtype=np.int64))
    writer.close()
    assert sorted(load_records(record_dir)) == ["a", "c"]
    assert all(json.loads(line) for line in open(record_file(record_dir, 0)))


def test_fresh_run_clears_records_and_resume_keeps_them(tmp_path):
    record_dir = str(tmp_path / "per_image")
    signature = {"model": {"top_p": 0.45}, "dataset": {}, "evaluator": {}}
    assert prepare_records(record_dir, signature, resume=False) == 0
    writer = RecordWriter(record_dir, 0)
    writer.write("a", np.zeros((4, 2), dtype=np.int64))
    writer.close()
    assert prepare_records(record_dir, signature, resume=True) == 1
    assert prepare_records(record_dir, signature, resume=False) == 0
    assert load_records(record_dir) == {}

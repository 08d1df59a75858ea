"""Resumable evaluation: per-image areas are flushed as they are computed, finished images are skipped.

Layout of ``WORK_DIR/per_image/`` (written by ``tools/test.py``, which always records; ``--resume`` reuses):

* ``meta.json`` - what the records belong to: the model, dataset and evaluator configs. A resume with a
  different config is refused (a one-line error), so records of two configs are never mixed.
* ``rank<R>.jsonl`` - one JSON line per evaluated image, appended by rank ``R``'s metric and fsync'ed after
  every batch: ``{"key": <img_path>, "areas": [[intersect], [union], [pred], [label]]}`` (integer pixel
  counts per class). A line cut short by a kill is ignored (and cut off before appending again).

On a restart with resume, :class:`SkipDoneDataset` wraps the test dataset and drops the images that
already have a line (so any sampler - mmengine's ``DefaultSampler``, any batch size, any number of
ranks - only sees the remaining ones), and :class:`fsa_seg.plugin.evaluation.PerClassIoUMetric` merges the
stored areas with the new ones. Areas are integer counts summed in int64, so the final metric is
exactly that of an uninterrupted run.

An evaluation (:func:`fsa_seg.apis.evaluate.evaluate_runs`) sets its runner config up for records with
:func:`setup_records` (one run, or the variants of a one-pass run, each into its own folder), scores a run whose
images are all recorded from the records alone (:func:`metrics_from_records`), and when cut short closes the
record files and counts what they hold (:func:`close_records`, :func:`images_done`).
"""
from __future__ import annotations

import copy
import glob
import json
import os
import os.path as osp
import shutil
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
from mmseg.registry import DATASETS

RECORD_DIRNAME = "per_image"
META_FILE = "meta.json"
# Key of the dataset metainfo entry listing every image key of the full (unfiltered) dataset.
ALL_KEYS = "fsa_seg_all_keys"


def record_dir_for(work_dir: str) -> str:
    return osp.join(work_dir, RECORD_DIRNAME)


def record_file(record_dir: str, rank: int) -> str:
    return osp.join(record_dir, f"rank{rank}.jsonl")


def _jsonable(obj: Any) -> Any:
    """Config values as plain JSON (tuples -> lists, classes/functions -> names)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return getattr(obj, "__name__", str(obj))


def config_signature(model: dict, dataset: dict, evaluator: Any) -> dict:
    """What the per-image records depend on."""
    return _jsonable({"model": dict(model), "dataset": dict(dataset), "evaluator": evaluator})


def _flatten(obj: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(obj, dict):
        out: Dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _differences(old: dict, new: dict, limit: int = 3) -> str:
    a, b = _flatten(old), _flatten(new)
    diffs = [f"{k} ({a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r})"
             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ", ".join(diffs[:limit]) + more


def check_resumable(record_dir: str, signature: dict) -> None:
    """``ValueError`` (one line) when the records in ``record_dir`` cannot be resumed with ``signature`` (written
    by another config, or records without ``meta.json``); reads only."""
    meta_path = osp.join(record_dir, META_FILE)
    if osp.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            old = json.load(f).get("signature", {})
        if old != signature:
            raise ValueError(
                f"cannot resume: the per-image results in {record_dir} were written by a different config "
                f"({_differences(old, signature)}); run without --resume to start over, or use another "
                f"--work-dir")
    elif load_records(record_dir):
        raise ValueError(f"cannot resume: {record_dir} has per-image results but no {META_FILE}; run without "
                         f"--resume to start over")


def prepare_records(record_dir: str, signature: dict, resume: bool) -> int:
    """Make ``record_dir`` ready for a run; returns how many finished images it already holds.

    Without ``resume`` earlier records are deleted (a fresh run). With ``resume`` they are kept if they
    were written for the same config (``signature``), otherwise ``ValueError`` (one line) is raised.
    Call on the main process only, before the runner starts.
    """
    meta_path = osp.join(record_dir, META_FILE)
    if resume:
        check_resumable(record_dir, signature)
    if not resume and osp.isdir(record_dir):
        shutil.rmtree(record_dir)
    os.makedirs(record_dir, exist_ok=True)
    if resume and osp.isfile(meta_path):
        return len(load_records(record_dir))
    tmp = meta_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"signature": signature}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, meta_path)
    return 0


def _repair_tail(path: str) -> None:
    """Cut a last line that a kill left without its newline (so appending starts on a fresh line)."""
    if not osp.isfile(path):
        return
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos = size - 1
        while pos > 0:
            step = min(4096, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                f.truncate(pos - step + idx + 1)
                return
            pos -= step
        f.truncate(0)


class RecordWriter:
    """Appends per-image lines to ``rank<R>.jsonl``; ``flush()`` makes them durable (fsync)."""

    def __init__(self, record_dir: str, rank: int = 0) -> None:
        os.makedirs(record_dir, exist_ok=True)
        self.path = record_file(record_dir, rank)
        _repair_tail(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, key: str, areas: np.ndarray) -> None:
        line = json.dumps({"key": key, "areas": np.asarray(areas, dtype=np.int64).tolist()},
                          separators=(",", ":"))
        self._file.write(line + "\n")

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()


def areas_to_array(intersect, union, pred, label) -> np.ndarray:
    """The four per-class area vectors of one image as an int64 array ``[4, K]`` (exact pixel counts)."""
    rows = [np.rint(np.asarray(a.cpu() if hasattr(a, "cpu") else a, dtype=np.float64))
            for a in (intersect, union, pred, label)]
    return np.stack(rows).astype(np.int64)


def load_records(record_dir: Optional[str]) -> Dict[str, np.ndarray]:
    """``key -> int64 [4, K]`` from every ``rank*.jsonl`` in ``record_dir`` (torn lines skipped)."""
    out: Dict[str, np.ndarray] = {}
    if not record_dir or not osp.isdir(record_dir):
        return out
    for path in sorted(glob.glob(osp.join(record_dir, "rank*.jsonl"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    item = json.loads(line)
                    out[str(item["key"])] = np.asarray(item["areas"], dtype=np.int64)
                except (ValueError, KeyError, TypeError):
                    continue  # the last line of a killed run may be cut short
    return out


def _sample_key(info: dict, index: int) -> str:
    return str(info.get("img_path", f"#{index}"))


@DATASETS.register_module()
class SkipDoneDataset:
    """Wraps a dataset and leaves out the images that already have a per-image record.

    Args:
        dataset: the dataset config (or object) to wrap.
        record_dir: the ``per_image`` folder; its records (on rank 0, broadcast to the other ranks so
            every rank filters the same way) decide which images are done. ``None`` skips nothing. A list of
            folders (the variants of a one-pass run): an image is done when every folder records it.
    """

    def __init__(self, dataset: Any, record_dir: Union[None, str, Sequence[str]] = None) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        if hasattr(self.dataset, "full_init"):
            self.dataset.full_init()
        self.all_keys: List[str] = [_sample_key(self.dataset.get_data_info(i), i)
                                    for i in range(len(self.dataset))]
        record_dirs = [record_dir] if isinstance(record_dir, str) else list(record_dir or [])
        done_sets = [set(load_records(d)) for d in record_dirs]
        done = sorted(set.intersection(*done_sets)) if done_sets else []
        from mmengine.dist import broadcast_object_list, is_distributed
        if is_distributed():
            box = [done]
            broadcast_object_list(box, src=0)
            done = box[0]
        done_set = set(done)
        self.indices: List[int] = [i for i, k in enumerate(self.all_keys) if k not in done_set]
        self.num_done = len(self.all_keys) - len(self.indices)

    @property
    def metainfo(self) -> dict:
        meta = dict(self.dataset.metainfo)
        meta[ALL_KEYS] = tuple(self.all_keys)
        return meta

    def full_init(self) -> None:
        pass

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(self.indices[idx])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, idx: int) -> Any:
        try:
            return self.dataset[self.indices[idx]]
        except Exception as err:  # a truncated image, a broken mask: named by the test loop, not a traceback
            from .loop import unreadable

            return unreadable(_sample_key(self.get_data_info(idx), idx), err)


def merge_records(stored: Dict[str, np.ndarray], new: Iterable[Sequence[Any]],
                  keys: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Stored records updated with this run's ``(key, areas)``; limited to ``keys`` when given."""
    merged = dict(stored)
    for key, areas in new:
        merged[key] = np.asarray(areas, dtype=np.int64)
    if keys is not None:
        merged = {k: merged[k] for k in keys if k in merged}
    return merged


# -- an evaluation's records: set up in its runner config, read back when it stops or has nothing left ------------
RECORDING_METRICS = ("PerClassIoUMetric", "mmseg.PerClassIoUMetric")


def record_metric(evaluator: Any) -> Optional[dict]:
    """The ``PerClassIoUMetric`` entry of a ``test_evaluator`` config (a dict or a list of dicts), if any: the
    metric that records per-image areas."""
    entries = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    for entry in entries:
        if isinstance(entry, dict) and entry.get("type") in RECORDING_METRICS:
            return entry
    return None


def run_signature(cfg: Any) -> dict:
    """The :func:`config_signature` of a loaded config (its model, test dataset and evaluator)."""
    return config_signature(cfg.model, cfg.test_dataloader.dataset, cfg.get("test_evaluator"))


def record_dirs(runner_cfg: Any, cfgs: Sequence[Any], resumes: Sequence[bool]) -> Optional[List[str]]:
    """The per-image record folder of each run (``WORK_DIR/per_image``), checked without writing anything (one-line
    ``ValueError``: an evaluator that cannot record, shared work dirs); ``None`` when the evaluator of
    ``runner_cfg`` is not a ``PerClassIoUMetric``."""
    metric = record_metric(runner_cfg.get("test_evaluator"))
    if metric is None:
        if any(resumes):
            raise ValueError("--resume needs test_evaluator type='PerClassIoUMetric' (it records per-image "
                             "results); this config uses another evaluator")
        if len(cfgs) > 1:
            raise ValueError("evaluating several settings in one pass needs test_evaluator "
                             "type='PerClassIoUMetric'; use separate runs")
        return None
    dirs = [osp.abspath(record_dir_for(cfg.work_dir)) for cfg in cfgs]
    if len(set(dirs)) < len(dirs):
        raise ValueError("the runs of one pass need different work dirs (each writes its own results.json)")
    evaluator = runner_cfg.test_evaluator
    if len(cfgs) > 1 and isinstance(evaluator, (list, tuple)) and len(evaluator) != 1:
        raise ValueError("evaluating several settings in one pass needs a single test_evaluator "
                         "(PerClassIoUMetric); use separate runs")
    return dirs


def setup_records(runner_cfg: Any, cfgs: Sequence[Any], resumes: Sequence[bool], prepare: bool = True,
                  skip_unreadable: bool = False) -> Optional[List[str]]:
    """Per-image records for each run of ``cfgs`` in its own ``WORK_DIR/per_image`` (signature: its own config),
    and the evaluator, dataset and test loop of ``runner_cfg`` set up for them: one run keeps its evaluator (record
    dir added); several get one ``PerClassIoUMetric`` each (``variant=k``, ``prefix='variant<k>'``). With resume,
    the images recorded for every run are skipped. An unreadable image stops the run, or with ``skip_unreadable``
    is skipped (:mod:`fsa_seg.plugin.loop`). ``prepare``: make the record folders ready (:func:`prepare_records`;
    the main process only). ``None`` when the evaluator is not a ``PerClassIoUMetric``.
    """
    dirs = record_dirs(runner_cfg, cfgs, resumes)
    if dirs is None:
        return None
    metric = record_metric(runner_cfg.get("test_evaluator"))
    dataset_cfg = runner_cfg.test_dataloader.dataset
    if prepare:
        for cfg, record_dir, resume in zip(cfgs, dirs, resumes):
            done = prepare_records(record_dir, run_signature(cfg), resume)
            if resume:
                print(f"resume: {done} image(s) already evaluated in {record_dir}; skipping them" if done else
                      f"resume: nothing recorded yet in {record_dir}; evaluating every image")
    if len(cfgs) == 1:
        metric["record_dir"] = dirs[0]
    else:
        runner_cfg.test_evaluator = [dict(copy.deepcopy(metric), record_dir=record_dir, variant=k,
                                          prefix=f"variant{k}") for k, record_dir in enumerate(dirs)]
    # Skip an image only when every run resumes and has it (a run that starts over has no records left).
    skip = (dirs[0] if len(cfgs) == 1 else dirs) if all(resumes) else None
    runner_cfg.test_dataloader.dataset = dict(type="SkipDoneDataset", dataset=copy.deepcopy(dataset_cfg),
                                              record_dir=skip)
    runner_cfg.test_dataloader.collate_fn = dict(type="fsa_collate_readable",
                                                 inner=runner_cfg.test_dataloader.get("collate_fn"))
    loop = runner_cfg.get("test_cfg") or {}
    if loop.get("type", "TestLoop") in ("TestLoop", "RecordedTestLoop"):
        runner_cfg.test_cfg = dict(loop, type="RecordedTestLoop", skip_unreadable=skip_unreadable)
    return dirs


def setup_resume(cfg: Any, resume: bool, prepare: bool = True) -> Optional[str]:
    """Turn on per-image records (``WORK_DIR/per_image``) for one run and, with ``resume``, skipping of done
    images. Returns the record folder, or ``None`` when the evaluator is not a ``PerClassIoUMetric``."""
    dirs = setup_records(cfg, [cfg], [resume], prepare)
    return dirs[0] if dirs else None


def metrics_from_records(cfg: Any, dataset_cfg: dict, record_dir: str) -> Optional[tuple]:
    """When every image of the dataset is already recorded, the metric from the records alone (no model,
    no runner): ``(metrics, per_class, num_images)``; ``None`` while images remain."""
    from mmengine.registry import DefaultScope
    from mmseg.registry import METRICS

    if not load_records(record_dir):
        return None
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "mmseg")):
        wrapped = SkipDoneDataset(DATASETS.build(copy.deepcopy(dataset_cfg)), record_dir)
        if len(wrapped) > 0:
            return None
        metric = METRICS.build(dict(copy.deepcopy(record_metric(cfg.get("test_evaluator"))), record_dir=record_dir))
        metric.dataset_meta = wrapped.metainfo
        metrics = metric.compute_metrics([])
    return metrics, metric.per_class, metric.num_images


def images_done(runner: Any, dirs: Optional[Sequence[str]]) -> tuple:
    """``(done, total)`` images of an evaluation cut short: the records on disk and the dataset's images (``None``
    when unknown)."""
    loop = getattr(runner, "_test_loop", None)
    dataset = getattr(getattr(loop, "dataloader", None), "dataset", None)
    total = len(getattr(dataset, "all_keys", [])) or None
    if not dirs:
        return None, total
    return min(len(load_records(d)) for d in dirs), total


def close_records(runner: Any) -> None:
    """Flush and close the metrics' record files (an evaluation cut short keeps what it recorded)."""
    loop = getattr(runner, "_test_loop", None)
    for metric in getattr(getattr(loop, "evaluator", None), "metrics", []):
        writer = getattr(metric, "_writer", None)
        if writer is not None:
            writer.close()
            metric._writer = None

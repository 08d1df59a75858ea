"""An evaluation's ``WORK_DIR/results.json``: written (atomically) and read here only.

The file holds the config path, the ``--cfg-options`` overrides, the model config, the dataset, the metrics,
the per-class IoU, the wall time and when it finished (plus ``images`` and, if any, ``skipped_images``). The
job loop (:mod:`.jobs`) reuses a finished run when the stored overrides equal the job's (:func:`same_options`).
"""
from __future__ import annotations

import json
import os
import os.path as osp
import time
from typing import Any, Dict, Mapping, Optional

RESULTS_FILE = "results.json"


def results_path(work_dir: str) -> str:
    return osp.join(work_dir, RESULTS_FILE)


def write_results(cfg, config_path: str, options: Mapping[str, Any], metrics: Mapping[str, float],
                  per_class: dict, seconds: float, extra: Optional[dict] = None) -> str:
    """Write ``cfg.work_dir/results.json`` atomically (a killed run never leaves a half-written file)."""
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
    path = results_path(cfg.work_dir)
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
        with open(results_path(work_dir), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("metrics"), dict) else None


def same_options(stored: Dict[str, Any], options: Dict[str, Any]) -> bool:
    """Options equal as their JSON forms (what results.json stores)."""
    return json.loads(json.dumps(stored, default=str)) == json.loads(json.dumps(options, default=str))


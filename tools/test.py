"""Evaluate a training-free segmentation config with mmengine's Runner.

    python tools/test.py configs/fsa_proxy_sam_voc.py [--work-dir DIR] [--cfg-options model.top_p=0.3 ...]

Prints progress while it runs, the per-class IoU table and mIoU at the end, and writes
``WORK_DIR/results.json`` with the config, the overrides and the metrics. Multi-GPU evaluation:
``bash tools/dist_test.sh CONFIG GPUS`` (torchrun + ``--launcher pytorch``).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import List, Optional

from mmengine.config import Config, DictAction

# Exit codes: 2 = bad input the user can fix (message says how); 1 = unexpected failure.
EXIT_USAGE = 2


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate an fsa-seg config (training-free OVSS).")
    parser.add_argument("config", help="config file, e.g. configs/fsa_proxy_sam_voc.py")
    parser.add_argument("--work-dir", help="where logs and results.json go (default: work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config keys, e.g. model.top_p=0.3 model.lamda=2.0")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def load_config(path: str, options: dict, work_dir: Optional[str] = None) -> Config:
    if not osp.isfile(path):
        raise FileNotFoundError(f"config file '{path}' not found (see configs/ or python tools/list_configs.py)")
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    cfg.work_dir = work_dir or cfg.get("work_dir") or osp.join("work_dirs", osp.splitext(osp.basename(path))[0])
    return cfg


def check_options(cfg: Config, options: dict) -> None:
    """Reject overrides of model keys the model does not have (a typo would silently do nothing)."""
    import inspect

    from mmseg.registry import MODELS

    model_type = cfg.model.get("type")
    cls = MODELS.get(model_type) if isinstance(model_type, str) else model_type
    if cls is None:
        return
    accepted = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters
            accepted |= {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    for key in options:
        parts = key.split(".")
        if parts[0] == "model" and len(parts) == 2 and parts[1] not in accepted | {"type"}:
            raise KeyError(f"--cfg-options {key}: {model_type} has no option '{parts[1]}'; "
                           f"known options: {sorted(accepted - {'self'})}")


def write_results(cfg: Config, config_path: str, options: dict, metrics: dict, per_class: dict,
                  seconds: float) -> str:
    out = {
        "config": config_path,
        "cfg_options": {k: v for k, v in options.items()},
        "model": cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model),
        "dataset": {"type": cfg.test_dataloader.dataset.get("type"),
                    "data_root": cfg.test_dataloader.dataset.get("data_root")},
        "metrics": {k: float(v) for k, v in metrics.items()},
        "per_class": per_class,
        "seconds": round(seconds, 2),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = osp.join(cfg.work_dir, "results.json")
    os.makedirs(cfg.work_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=2, default=str)
    return path


def run(config: str, options: Optional[dict] = None, work_dir: Optional[str] = None,
        launcher: str = "none") -> dict:
    """Evaluate ``config``; returns the metrics dict (also written to ``work_dir/results.json``)."""
    import fsa_seg  # noqa: F401  (registers models, datasets, metric)
    from fsa_seg.datasets import check_data_root
    from mmengine.runner import Runner

    options = dict(options or {})
    cfg = load_config(config, options, work_dir)
    cfg.launcher = launcher
    check_options(cfg, options)
    check_data_root(cfg.test_dataloader.dataset)
    start = time.time()
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    per_class = {}
    for metric in getattr(runner.test_evaluator, "metrics", []):
        per_class = getattr(metric, "per_class", per_class)
    if runner.rank == 0:
        path = write_results(cfg, config, options, metrics, per_class, time.time() - start)
        print(f"mIoU {metrics.get('mIoU', float('nan')):.2f}  (aAcc {metrics.get('aAcc', float('nan')):.2f}, "
              f"mAcc {metrics.get('mAcc', float('nan')):.2f})  results: {path}")
    return metrics


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    from fsa_seg.weights import WeightsUnavailableError

    try:
        run(args.config, args.cfg_options, args.work_dir, args.launcher)
    except (FileNotFoundError, WeightsUnavailableError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())

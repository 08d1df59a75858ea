"""The evaluation configs as a table (``tools/list_configs.py``): method, fsa, backbone, vfm, dataset, path,
read from the configs themselves. A config's ``custom_imports`` outside the package are imported (once), so
methods, proxies and benchmarks registered there are named as the package's own."""
from __future__ import annotations

import contextlib
import importlib
import os
import os.path as osp
import tempfile
from typing import Dict, Iterable, Iterator, List, Optional

from ..benchmarks import benchmark_for_dataset_type
from ..resources import CONFIG_DIR, shown_path
from .experiments import backbone_tag, needs_proxy

COLUMNS = ("method", "fsa", "backbone", "vfm", "dataset", "path")
CLIP_SEGMENTORS = ("FSASegmentor", "FSAProxySegmentation")


@contextlib.contextmanager
def config_temp_files_in_memory() -> Iterator[None]:
    """While loading many configs: mmengine writes each config and base to a temporary file, and on a
    busy disk that dominates (several times slower than RAM). Within this block only, Python's temporary
    folder is the RAM-backed /dev/shm when there is one; the previous folder is restored on exit."""
    old = tempfile.tempdir
    if osp.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        tempfile.tempdir = "/dev/shm"
    try:
        yield
    finally:
        tempfile.tempdir = old


def config_files(root: str) -> List[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "_base_" and not d.startswith("."))
        out += [osp.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    return sorted(out)


def describe(cfg, path: str) -> Dict[str, str]:
    """The table row of one loaded config."""
    model = cfg.get("model", {})
    mtype = str(model.get("type", "?"))
    row = dict(path=shown_path(path))
    if mtype in CLIP_SEGMENTORS:
        if mtype == "FSAProxySegmentation":
            vfm = model.get("vfm_model", "sam")
            method, fsa = ("proxyclip" if vfm else "vanilla"), model.get("FSA", True)
            backbone = str(model.get("model_type", "ViT-B-16")).replace("/", "-")
        else:
            method, vfm, fsa = model.get("base_method", "proxyclip"), model.get("vfm"), model.get("fsa", True)
            backbone = model.get("clip_model", "ViT-B-16")
        row.update(method=method, backbone=backbone, vfm=(vfm or "-") if needs_proxy(method) else "-")
    else:
        row.update(method=mtype.replace("Segmentor", "").lower() or "?", backbone="-", vfm="-")
        fsa = model.get("fsa", False)
    row["fsa"] = "on" if fsa else "off"
    dataset = cfg.get("test_dataloader", {}).get("dataset", {}).get("type", "?")
    bench = benchmark_for_dataset_type(dataset)
    row["dataset"] = bench.name if bench is not None else str(dataset)
    return row


def import_outside_modules(cfg) -> None:
    """Import the modules of a config's ``custom_imports`` that are not part of this package (registrations
    made outside it); the package's own (its mmseg plugin) are left to the runs that need them."""
    imports = (cfg.get("custom_imports") or {}).get("imports") or []
    for name in [imports] if isinstance(imports, str) else imports:
        if name != "fsa_seg" and not name.startswith("fsa_seg."):
            importlib.import_module(name)


def collect(root: str = str(CONFIG_DIR)) -> List[Dict[str, str]]:
    """One row per config under ``root`` (the ``_base_`` files excepted), in path order."""
    from mmengine.config import Config

    rows = []
    with config_temp_files_in_memory():
        for path in config_files(root):
            try:
                cfg = Config.fromfile(path, import_custom_modules=False)
                import_outside_modules(cfg)
            except Exception as err:  # a broken config is listed, not fatal
                rows.append(dict(method="?", fsa="?", backbone="?", vfm="?", dataset="?",
                                 path=f"{shown_path(path)}  (cannot load: {type(err).__name__})"))
                continue
            rows.append(describe(cfg, path))
    return rows


def matches(row: Dict[str, str], key: str, wanted: Optional[Iterable[str]]) -> bool:
    if not wanted:
        return True
    value = row[key]
    if key == "backbone":
        return any(w.lower() in (value.lower(), backbone_tag(value)) for w in wanted)
    return value.lower() in {w.lower() for w in wanted}


def render(rows: List[Dict[str, str]], csv: bool = False) -> str:
    if csv:
        return "\n".join([",".join(COLUMNS)] + [",".join(r[c] for c in COLUMNS) for r in rows])
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip(),
             "  ".join("-" * widths[c] for c in COLUMNS)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in rows]
    return "\n".join(lines)

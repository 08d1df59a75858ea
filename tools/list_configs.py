"""List the evaluation configs as a table: method, fsa, backbone, vfm, dataset, path (read from the configs).

    python tools/list_configs.py                                   # every config
    python tools/list_configs.py --method sclip --fsa on --backbone vit-b16
    python tools/list_configs.py --method proxyclip --vfm dino --dataset voc21 ade20k
    python tools/list_configs.py --method naclip --paths | xargs -n1 python tools/test.py   # one by one

Filters take one or more values each; ``--backbone`` accepts the open_clip name (ViT-L-14) or the short tag
used in file names (vit-l14). ``--csv`` prints comma-separated values, ``--paths`` only the paths.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import os.path as osp
import sys
import tempfile
from typing import Dict, Iterable, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
COLUMNS = ("method", "fsa", "backbone", "vfm", "dataset", "path")
CLIP_SEGMENTORS = ("FSASegmentor", "FSAProxySegmentation")


def backbone_tag(name: str) -> str:
    """'ViT-B-16' -> 'vit-b16' (the tag in config file names)."""
    parts = name.lower().split("-")
    return f"{parts[0]}-{parts[1]}{''.join(parts[2:])}" if len(parts) >= 3 else name.lower()


@contextlib.contextmanager
def fast_tempdir():
    """mmengine writes every parsed config to a temporary file; RAM-backed /dev/shm is ~10x faster."""
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


def dataset_names(root: str) -> Dict[str, str]:
    """Dataset type -> benchmark name, from the dataset configs (configs/_base_/datasets/NAME.py)."""
    from mmengine.config import Config

    folder = osp.join(root, "_base_", "datasets")
    out = {}
    for path in config_files(folder):
        cfg = Config.fromfile(path, import_custom_modules=False)
        out[cfg.test_dataloader.dataset.type] = osp.splitext(osp.basename(path))[0]
    return out


def describe(cfg, path: str, datasets: Dict[str, str]) -> Dict[str, str]:
    """The table row of one loaded config."""
    model = cfg.get("model", {})
    mtype = str(model.get("type", "?"))
    row = dict(path=osp.relpath(path, REPO))
    if mtype in CLIP_SEGMENTORS:
        if mtype == "FSAProxySegmentation":
            vfm = model.get("vfm_model", "sam")
            method, fsa = ("proxyclip" if vfm else "vanilla"), model.get("FSA", True)
            backbone = str(model.get("model_type", "ViT-B-16")).replace("/", "-")
        else:
            method, vfm, fsa = model.get("base_method", "proxyclip"), model.get("vfm"), model.get("fsa", True)
            backbone = model.get("clip_model", "ViT-B-16")
        row.update(method=method, backbone=backbone, vfm=(vfm or "-") if method == "proxyclip" else "-")
    else:
        row.update(method=mtype.replace("Segmentor", "").lower() or "?", backbone="-", vfm="-")
        fsa = model.get("fsa", False)
    row["fsa"] = "on" if fsa else "off"
    dataset = cfg.get("test_dataloader", {}).get("dataset", {}).get("type", "?")
    row["dataset"] = datasets.get(dataset, str(dataset))
    return row


def collect(root: str = osp.join(REPO, "configs")) -> List[Dict[str, str]]:
    from mmengine.config import Config

    rows = []
    with fast_tempdir():
        datasets = dataset_names(root)
        for path in config_files(root):
            try:
                cfg = Config.fromfile(path, import_custom_modules=False)
            except Exception as err:  # a broken config is listed, not fatal
                rows.append(dict(method="?", fsa="?", backbone="?", vfm="?", dataset="?",
                                 path=f"{osp.relpath(path, REPO)}  (cannot load: {type(err).__name__})"))
                continue
            rows.append(describe(cfg, path, datasets))
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


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="List the fsa-seg evaluation configs.")
    parser.add_argument("--method", nargs="+", help="vanilla maskclip sclip clearclip naclip proxyclip sam3")
    parser.add_argument("--fsa", nargs="+", choices=["on", "off"])
    parser.add_argument("--backbone", nargs="+", help="ViT-B-16 | vit-b16 | ViT-L-14 | vit-l14 | ViT-H-14 | vit-h14")
    parser.add_argument("--vfm", nargs="+", help="sam dino dinov2 mae (ProxyCLIP's proxy model)")
    parser.add_argument("--dataset", nargs="+", help="voc21 voc20 context60 context59 coco_object "
                                                      "coco_stuff164k cityscapes ade20k ade847 context459")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="comma-separated output")
    out.add_argument("--paths", action="store_true", help="print only the config paths")
    args = parser.parse_args(argv)

    rows = [r for r in collect() if all(matches(r, k, getattr(args, k))
                                        for k in ("method", "fsa", "backbone", "vfm", "dataset"))]
    if args.paths:
        print("\n".join(r["path"] for r in rows))
    else:
        print(render(rows, csv=args.csv))
        if not args.csv:
            print(f"\n{len(rows)} configs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Base vs base + FSA over a dataset or a folder of images: figures (PNG and PDF) and their numbers (CSV, JSON).

    python tools/analyze.py CONFIG --out DIR [--cfg-options KEY=VALUE ...] [--top 3] [--methods sclip,naclip]
    python tools/analyze.py --images FOLDER --classes "cat; dog; grass" --out DIR [--config CONFIG]
                            [--cfg-options KEY=VALUE ...] [--top 3] [--methods ...] [--no-kept-share]

Dataset (a config; its dataset and data root, e.g. ``--cfg-options test_dataloader.dataset.data_root=...``): one
evaluation pass with base (``model.fsa=False``) and base + FSA (``model.fsa=True``) as variants (the backbone runs
once per crop batch), into ``DIR/base`` and ``DIR/fsa`` (``results.json`` and per-image records, as
``tools/test.py --variants model.fsa=False,True`` writes them; ``DIR/show`` holds each image's panels and label
maps). Then:

* ``DIR/per_class_iou.{png,pdf,csv,json}`` - per-class IoU of base and FSA, sorted by FSA - base;
* ``DIR/per_image.{csv,json}`` - per image: mIoU under base and FSA and the difference, largest gain first;
* ``DIR/gains_losses.{png,pdf,csv,json}`` - the ``--top`` images FSA improves most and the ``--top`` it worsens
  most: image | ground truth | base | base + FSA.

Folder (``--images``; no ground truth): base and FSA of each image from one pass, with ``--classes`` as in
``tools/demo.py``:

* ``DIR/per_image_changes.{csv,json}`` - per image the pixels FSA changed (count, share), largest share first;
* ``DIR/most_changed.{png,pdf,csv,json}`` - the ``--top`` images with the largest share: image | base | base + FSA
  | changed pixels.

Both modes (CLIP models): ``DIR/kept_share.{png,pdf,csv,json}`` - the distribution of the share of each patch row
that top-p pruning keeps, per base method (``--methods``, comma-separated; default the config's; each must share
the config's backbone and proxy), over the images (Fig. 9 style), from FSA's traced forward
(:func:`fsa_seg.internals.explain`). ``--no-kept-share`` leaves it out (e.g. for SAM3).

``DIR/summary.json`` lists every table and file. Figures made with random weights carry the banner "random
weights: not a real result". See docs/visualization.md.

Exit codes: 0 done; 2 bad input (one line ``error: ...``); 130 interrupted.
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import DictAction

from fsa_seg.apis.config import ConfigKeyError
from fsa_seg.apis.evaluate import EvaluationInterrupted
from fsa_seg.open_vocab import CropMemoryError
from fsa_seg.resources import CONFIG_DIR
from fsa_seg.weights import WeightsUnavailableError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_CONFIG = str(CONFIG_DIR / "fsa_proxy_sam_voc21.py")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Base vs base + FSA over a dataset or a folder of images.")
    parser.add_argument("config", nargs="?", help="config of the dataset to analyse (dataset mode)")
    parser.add_argument("--images", help="a folder of images (folder mode; needs --classes)")
    parser.add_argument("--classes", help='folder mode: classes separated by ";", synonyms by ","')
    parser.add_argument("--config", dest="model_config", default=DEFAULT_CONFIG,
                        help="folder mode: model config (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, help="config overrides")
    parser.add_argument("--top", type=int, default=3, help="images drawn per side (gains, losses)")
    parser.add_argument("--methods", help="base methods of the kept-share figure, comma-separated "
                                          "(default: the config's)")
    parser.add_argument("--no-kept-share", action="store_true", help="leave out the kept-share figure")
    return parser.parse_args(argv)


def _folder_images(folder: str) -> List[str]:
    if not osp.isdir(folder):
        raise ValueError(f"--images '{folder}' is not a folder")
    found = sorted(p for p in glob.glob(osp.join(folder, "*")) if p.lower().endswith(IMAGE_EXTENSIONS))
    if not found:
        raise ValueError(f"--images '{folder}' holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    return found


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from fsa_seg.visualization.analysis import analyze_dataset, analyze_folder, write_summary

    try:
        if args.top < 1:
            raise ValueError(f"--top {args.top}: give at least 1")
        if (args.config is None) == (args.images is None):
            raise ValueError("give either a CONFIG (dataset mode) or --images FOLDER (folder mode)")
        methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
        if args.images:
            from fsa_seg.apis.inference import init_segmentor, parse_classes

            if not args.classes:
                raise ValueError("--images needs --classes")
            classes = parse_classes(args.classes)
            images = _folder_images(args.images)
            options = {"model.prob_thd": 0.0, **args.cfg_options}
            model = init_segmentor(args.model_config, options, classes=classes)
            os.makedirs(args.out, exist_ok=True)
            out = analyze_folder(model, images, args.out, args.top, methods, not args.no_kept_share)
        else:
            os.makedirs(args.out, exist_ok=True)
            out = analyze_dataset(args.config, args.out, args.cfg_options, args.top, methods=methods,
                                  kept_share=not args.no_kept_share)
    except EvaluationInterrupted as err:
        print(f"\n{err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError, FileNotFoundError, ConfigKeyError, WeightsUnavailableError, CropMemoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    path = write_summary(out, osp.join(args.out, "summary.json"))
    if out.get("random_weights"):
        print("random weights: not a real result (every figure carries this banner)")
    files = [f for key, value in out.items() if key.endswith("_files") for f in value]
    print("wrote " + ", ".join(files + [path]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

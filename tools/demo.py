"""Segment one image with your own class names.

    python tools/demo.py IMAGE --classes "cat,kitten; dog; grass" --out DIR \\
        [--config configs/fsa_proxy_sam_voc21.py] [--cfg-options KEY=VALUE ...] [--opacity 0.5]

``--classes``: classes separated by ``;``, synonyms of one class by ``,`` (``"cat,kitten; dog"`` is two
classes, the first queried with both words; a pixel goes to the class of its best-scoring word). Label ids
follow the order given (0, 1, ...). The list is written to ``DIR/classes.txt`` in the class-file format
(one class per line, synonyms ``'; '``-separated) and passed to the model as ``name_path``.

The config gives the model and the test resize (default: FSA-ProxyCLIP, SAM proxy, ViT-B/16). Its
background threshold is turned off (``model.prob_thd=0``) since your classes have no background line; with
``--cfg-options model.prob_thd=0.3`` low-confidence pixels go to the first class, so list a background
class first (e.g. ``"background,sky,wall; cat; dog"``). Runs on CPU when there is no GPU
(``--cfg-options model.device=cpu`` forces it). Grayscale, palette and RGBA images are read as RGB.

Writes to DIR, for IMAGE named ``photo.jpg``:

* ``photo_labels.png`` - the label map (palette PNG: pixel value = class id, colours as in the overlay);
* ``photo_overlay.png`` - the image with the colour-coded classes and a legend (class, pixel share);
* ``photo_shares.json`` / ``photo_shares.csv`` - per class: id, name, synonyms, pixels, share (%); the
  shares are printed too.

Exit codes: 0 done, 2 bad input (unreadable image, empty class list, unknown config or option; one line).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import os.path as osp
import sys
from typing import List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

EXIT_USAGE = 2
DEFAULT_CONFIG = osp.join(REPO_ROOT, "configs", "fsa_proxy_sam_voc21.py")


class UsageError(Exception):
    """Bad input; the message says what to fix."""


def parse_classes(text: str) -> List[List[str]]:
    """``"cat,kitten; dog"`` -> ``[['cat', 'kitten'], ['dog']]``."""
    if not text or not text.strip() or not any(c.strip(" ,") for c in text.split(";")):
        raise UsageError('--classes is empty: give class names separated by ";" (synonyms by ","), '
                         'e.g. --classes "cat,kitten; dog; grass"')
    classes = []
    for i, part in enumerate(text.split(";"), 1):
        if not part.strip():
            if i == len(text.split(";")):
                continue  # a trailing ";"
            raise UsageError(f'--classes: class {i} is empty (check for doubled ";")')
        words = [w.strip() for w in part.split(",")]
        if any(not w for w in words):
            raise UsageError(f'--classes: class {i} ("{part.strip()}") has an empty synonym (check for doubled '
                             f'or trailing ",")')
        classes.append(words)
    return classes


def read_image(path: str) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` of any image PIL reads (EXIF rotation applied); ``UsageError`` if unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not osp.isfile(path):
        raise UsageError(f"image '{path}' not found")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        reason = "not an image file" if isinstance(err, UnidentifiedImageError) else str(err) or type(err).__name__
        raise UsageError(f"cannot read image '{path}': {reason}") from None
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise UsageError(f"cannot read image '{path}': empty image")
    return array


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (uint8 ``[n, 3]``)."""
    import matplotlib

    if n <= 10:
        colors = matplotlib.colormaps["tab10"](np.arange(n))[:, :3]
    elif n <= 20:
        colors = matplotlib.colormaps["tab20"](np.arange(n))[:, :3]
    else:
        colors = matplotlib.colormaps["hsv"](np.linspace(0, 1, n, endpoint=False))[:, :3]
    return (colors * 255).round().astype(np.uint8)


def write_class_file(classes: List[List[str]], path: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join("; ".join(words) + "\n" for words in classes))
    return path


def build_model(config: str, options: dict):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fsa_tools_test_for_demo", osp.join(REPO_ROOT, "tools", "test.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    import fsa_seg  # noqa: F401  (registers the model)
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    cfg = tool.load_config(config, options)
    try:
        tool.check_options(cfg, options)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    init_default_scope(cfg.get("default_scope", "mmseg"))
    model = MODELS.build(cfg.model)
    model.eval()
    return cfg, model


def segment(cfg, model, rgb: np.ndarray) -> np.ndarray:
    """Label map ``[H, W]`` (int) of an RGB image at its own size, through the config's test resize."""
    import copy

    import torch
    from mmcv.transforms import Compose

    steps = copy.deepcopy(cfg.test_dataloader.dataset.get("pipeline") or cfg.get("test_pipeline"))
    steps = [s for s in steps if s.get("type") != "LoadAnnotations"]
    steps[0] = dict(type="LoadImageFromNDArray")
    data = Compose(steps)(dict(img=np.ascontiguousarray(rgb[:, :, ::-1])))  # the pipeline works in BGR
    with torch.no_grad():
        sample = model.test_step(dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]]))[0]
    return sample.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)


def shares(labels: np.ndarray, classes: List[List[str]]) -> List[dict]:
    counts = np.bincount(labels.ravel(), minlength=len(classes))[: len(classes)]
    total = int(labels.size)
    return [{"id": i, "class": words[0], "synonyms": words, "pixels": int(counts[i]),
             "share": round(100.0 * int(counts[i]) / total, 2)} for i, words in enumerate(classes)]


def write_outputs(out_dir: str, stem: str, rgb: np.ndarray, labels: np.ndarray, table: List[dict],
                  opacity: float, extra: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from PIL import Image

    colors = palette(len(table))
    paths = {k: osp.join(out_dir, f"{stem}_{k}") for k in ("labels.png", "overlay.png", "shares.json",
                                                          "shares.csv")}
    label_img = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = colors.ravel().tolist()
    label_img.putpalette(flat + [0] * (768 - len(flat)))
    label_img.save(paths["labels.png"])

    blend = (rgb * (1 - opacity) + colors[labels] * opacity).round().astype(np.uint8)
    h, w = labels.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 6.0 * w / max(h, w)) + 2.5, max(3.0, 6.0 * h / max(h, w))))
    ax.imshow(blend)
    ax.axis("off")
    handles = [Patch(facecolor=colors[r["id"]] / 255.0, edgecolor="black", label=f"{r['class']} ({r['share']:.1f}%)")
               for r in table]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=9)
    fig.savefig(paths["overlay.png"], dpi=100, bbox_inches="tight")
    plt.close(fig)

    with open(paths["shares.json"], "w", encoding="utf-8") as f:
        json.dump(dict(extra, size=[int(h), int(w)], classes=table), f, indent=2)
    with open(paths["shares.csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "class", "synonyms", "pixels", "share"])
        for r in table:
            writer.writerow([r["id"], r["class"], "; ".join(r["synonyms"]), r["pixels"], f"{r['share']:.2f}"])
    return paths


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Segment one image with your own class names.")
    parser.add_argument("image", help="image file (any format PIL reads; grayscale and RGBA are fine)")
    parser.add_argument("--classes", required=True,
                        help='classes separated by ";", synonyms by ",", e.g. "cat,kitten; dog; grass"')
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="model config (default: %(default)s)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="overrides, e.g. model.vfm=dino model.prob_thd=0.3 model.device=cpu")
    parser.add_argument("--opacity", type=float, default=0.5, help="colour opacity in the overlay (0..1)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from fsa_seg.weights import WeightsUnavailableError

    try:
        classes = parse_classes(args.classes)
        if not 0.0 <= args.opacity <= 1.0:
            raise UsageError(f"--opacity {args.opacity}: use a value between 0 and 1")
        rgb = read_image(args.image)
        if not osp.isfile(args.config):
            raise UsageError(f"config file '{args.config}' not found (see configs/)")
        os.makedirs(args.out, exist_ok=True)
        class_file = write_class_file(classes, osp.join(args.out, "classes.txt"))
        options = {"model.prob_thd": 0.0}
        options.update(args.cfg_options)
        options["model.name_path"] = class_file
        cfg, model = build_model(args.config, options)
    except (UsageError, FileNotFoundError, ValueError, WeightsUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    labels = segment(cfg, model, rgb)
    table = shares(labels, classes)
    stem = osp.splitext(osp.basename(args.image))[0]
    paths = write_outputs(args.out, stem, rgb, labels, table, args.opacity,
                          dict(image=osp.abspath(args.image), config=args.config,
                               cfg_options={k: v for k, v in options.items()}))
    width = max(len(r["class"]) for r in table)
    print(f"{'class':<{width}}  {'pixels':>9}  share")
    for r in sorted(table, key=lambda r: -r["pixels"]):
        print(f"{r['class']:<{width}}  {r['pixels']:>9}  {r['share']:5.1f}%")
    print("wrote " + ", ".join(paths[k] for k in ("labels.png", "overlay.png", "shares.json", "shares.csv")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

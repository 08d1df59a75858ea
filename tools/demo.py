"""Segment one image with your own class names.

    python tools/demo.py IMAGE --classes "cat,kitten; dog; grass" --out DIR \\
        [--config configs/fsa_proxy_sam_voc21.py] [--cfg-options KEY=VALUE ...] [--opacity 0.5]
        [--compare] [--point X,Y ...]

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
* ``photo_overlay.png`` - the image at its own size with the colour-coded classes and a legend (class, pixel
  share) in its top-left corner;
* ``photo_shares.json`` / ``photo_shares.csv`` - per class: id, name, synonyms, pixels, share (%); the
  shares are printed too.

With ``--compare`` it writes instead base (``fsa=False``) vs base + FSA (``fsa=True``), both from one backbone pass
(the one-pass variants), as one figure: image | base | base + FSA | changed pixels (in FSA's class colour), one
legend (docs/visualization.md):

* ``photo_compare.png`` / ``photo_compare.pdf`` - the figure (screen / paper);
* ``photo_compare.csv`` / ``photo_compare.json`` - per class: pixels and share under base and under FSA, pixels FSA
  gave to it and took from it; the JSON also holds the changed-pixel count and share;
* ``photo_base_labels.png`` / ``photo_fsa_labels.png`` - the two label maps (palette PNGs).

``--point X,Y`` (repeatable; pixels of the image; with or without ``--compare``) adds FSA's attention for those
pixels (CLIP models; :func:`fsa_seg.internals.explain`, one backbone pass), drawn over the window the model sees
(its resize):

* ``photo_points.png`` / ``.pdf`` - per point: the window with the point | base attention A0 | isolated affinity |
  kept set after top-p pruning (its share of the row) | sharpened A_fb | ensembled;
  ``photo_points.csv`` / ``.json`` - per point its window, patch token, kept count and share (the JSON holds the
  five maps on the patch grid);
* ``photo_strategies.png`` / ``.pdf`` / ``.csv`` / ``.json`` and ``photo_strategy_<name>_labels.png`` - each
  strategy's prediction alone (base, isolation only, pruning only, both, the full FSA ensemble) at the model's
  resolution, pixels per class.

A model with random weights (``model.random_weights=True``) gets the banner "random weights: not a real result" on
every figure.

While it runs it shows the sliding-window crops done / total with crops/s and ETA (a bar on a terminal, one line
per crop batch otherwise), after the text-embedding line (built, or from the cache).

Exit codes: 0 done, 2 bad input (unreadable image, empty class list, unknown config or option, an output folder
that cannot be written; one line, nothing written) or out of memory (the line says what to lower), 130
interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import os.path as osp
import sys
from typing import List, Optional

import numpy as np
from mmengine.config import DictAction

from fsa_seg.apis.config import ConfigKeyError
from fsa_seg.apis.inference import init_segmentor, parse_classes, read_image, segment_image, write_class_file
from fsa_seg.resources import CONFIG_DIR
from fsa_seg.diagnostics.env_info import announce_run
from fsa_seg.open_vocab import CropMemoryError
from fsa_seg.progress import progress_callback
from fsa_seg.visualization.drawing import palette
from fsa_seg.visualization.points import parse_points
from fsa_seg.weights import WeightsUnavailableError

EXIT_USAGE = 2
DEFAULT_CONFIG = str(CONFIG_DIR / "fsa_proxy_sam_voc21.py")


def draw_overlay(rgb: np.ndarray, labels: np.ndarray, colors: np.ndarray, table: List[dict], opacity: float):
    """The image with the class colours blended in and a legend (class, share) in its top-left corner, at the
    image's own size (a PIL image)."""
    from PIL import Image, ImageDraw, ImageFont

    blend = (rgb * (1 - opacity) + colors[labels] * opacity).round().astype(np.uint8)
    overlay = Image.fromarray(blend).convert("RGBA")
    h, w = labels.shape
    size = max(10, min(h, w) // 30)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    rows = [f"{r['class']} ({r['share']:.1f}%)" for r in table]
    pad, line = max(2, size // 3), size + max(2, size // 3)
    measure = ImageDraw.Draw(overlay)
    text_w = max(int(measure.textlength(text, font=font)) for text in rows)
    box = Image.new("RGBA", overlay.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(box)
    draw.rectangle([0, 0, 3 * pad + size + text_w, 2 * pad + line * len(rows)], fill=(255, 255, 255, 190))
    for n, (r, text) in enumerate(zip(table, rows)):
        top = pad + n * line
        draw.rectangle([pad, top, pad + size, top + size], fill=tuple(int(c) for c in colors[r["id"]]) + (255,),
                       outline=(0, 0, 0, 255))
        draw.text((2 * pad + size, top), text, fill=(0, 0, 0, 255), font=font)
    return Image.alpha_composite(overlay, box).convert("RGB")


def write_outputs(out_dir: str, stem: str, rgb: np.ndarray, labels: np.ndarray, table: List[dict],
                  opacity: float, extra: dict) -> dict:
    from PIL import Image

    colors = palette(len(table))
    paths = {k: osp.join(out_dir, f"{stem}_{k}") for k in ("labels.png", "overlay.png", "shares.json",
                                                          "shares.csv")}
    label_img = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = colors.ravel().tolist()
    label_img.putpalette(flat + [0] * (768 - len(flat)))
    label_img.save(paths["labels.png"])
    draw_overlay(rgb, labels, colors, table, opacity).save(paths["overlay.png"])
    h, w = labels.shape
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
    parser.add_argument("--compare", action="store_true",
                        help="base vs base + FSA from one backbone pass: image | base | base + FSA | changed "
                             "pixels (PHOTO_compare.png/.pdf/.csv/.json, PHOTO_base_labels.png, PHOTO_fsa_labels.png)")
    parser.add_argument("--point", action="append", default=[], metavar="X,Y",
                        help="FSA's attention maps for this pixel (repeatable): PHOTO_points.* and "
                             "PHOTO_strategies.*")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        classes = parse_classes(args.classes)
        if not 0.0 <= args.opacity <= 1.0:
            raise ValueError(f"--opacity {args.opacity}: use a value between 0 and 1")
        rgb = read_image(args.image)
        points = parse_points(args.point)
        h, w = rgb.shape[:2]
        for x, y in points:
            if not (0 <= x < w and 0 <= y < h):
                raise ValueError(f"--point {x},{y} is outside the {w}x{h} image")
        if not osp.isfile(args.config):
            raise ValueError(f"config file '{args.config}' not found (see configs/)")
        options = {"model.prob_thd": 0.0}
        options.update(args.cfg_options)
        model = init_segmentor(args.config, options, classes=classes)  # before anything is written
        os.makedirs(args.out, exist_ok=True)
        options["model.name_path"] = write_class_file(classes, osp.join(args.out, "classes.txt"))
        announce_run(model.cfg.model.get("precision", "auto"), model.cfg.model.get("device"))
    except (ValueError, OSError, ConfigKeyError, WeightsUnavailableError) as err:
        message = str(err)
        if message.startswith(("the class list", "class ")):
            message = f"--classes: {message}"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    # crops done / total, crops/s and ETA (a bar on a terminal, one line per crop batch otherwise)
    model.model.crop_progress = progress_callback("crops")
    stem = osp.splitext(osp.basename(args.image))[0]
    if points:
        code = _points(model, rgb, points, osp.join(args.out, stem))
        if code:
            return code
    if args.compare:
        return _compare(model, rgb, args, options, stem)
    try:
        result = segment_image(model, rgb)
    except CropMemoryError as err:  # one line: what to lower
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    table = result.shares()
    paths = write_outputs(args.out, stem, rgb, result.labels, table, args.opacity,
                          dict(image=osp.abspath(args.image), config=args.config,
                               cfg_options={k: v for k, v in options.items()}))
    width = max(len(r["class"]) for r in table)
    print(f"{'class':<{width}}  {'pixels':>9}  share")
    for r in sorted(table, key=lambda r: -r["pixels"]):
        print(f"{r['class']:<{width}}  {r['pixels']:>9}  {r['share']:5.1f}%")
    print("wrote " + ", ".join(paths[k] for k in ("labels.png", "overlay.png", "shares.json", "shares.csv")))
    return 0


def _points(model, rgb, points, stem: str) -> int:
    """``--point``: FSA's attention rows for the points and each strategy's prediction."""
    from fsa_seg.visualization.points import write_points

    try:
        out = write_points(model, rgb, points, stem)
    except (CropMemoryError, ValueError) as err:  # e.g. a model without FSA's internals
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    for row in out["points"]:
        print(f"point ({row['x']}, {row['y']}): token {row['token']} of the {row['grid']} grid, top-p keeps "
              f"{100.0 * row['kept_share']:.1f}% of its row")
    print("wrote " + ", ".join(out["point_files"] + out["strategy_files"]))
    return 0


def _compare(model, rgb, args, options: dict, stem: str) -> int:
    """``--compare``: base and base + FSA from one backbone pass, the figure and its numbers."""
    from fsa_seg.visualization.compare import compare_image, write_comparison

    try:
        comparison = compare_image(model, rgb)
    except CropMemoryError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    comparison.meta.update(image=osp.abspath(args.image), config=args.config, cfg_options=dict(options))
    paths = write_comparison(comparison, osp.join(args.out, stem), args.opacity)
    changed = paths["changed_pixels"]
    print(f"changed pixels (base vs base + FSA): {changed} of {comparison.base.size} "
          f"({100.0 * changed / comparison.base.size:.2f}%)")
    if comparison.random_weights:
        print("random weights: not a real result (the figure carries this banner)")
    print("wrote " + ", ".join(paths["figures"] + paths["tables"] + paths["labels"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)

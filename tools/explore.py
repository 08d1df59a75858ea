"""A local page to explore FSA on one image: pick or upload an image, type classes, choose the base method, toggle
FSA, move top-p / lambda, click a pixel to see its attention rows.

    python tools/explore.py [--config CONFIG] [--port 7860] [--samples DIR] [--cfg-options KEY=VALUE ...]
    python tools/explore.py --measure [--image IMAGE] [--config CONFIG] [--cfg-options ...]

Needs gradio: ``pip install -e ".[explore]"``. The page is served on http://127.0.0.1:PORT (this machine only).
``--samples DIR``: a folder of photos offered in the page's sample list (default: ``$FSA_SEG_SAMPLES``).
``--classes``: the classes the page starts with (the page's box takes the same syntax as ``tools/demo.py
--classes``: ``;`` between classes, ``,`` between synonyms); default: the config's class file.

A moved slider re-runs only the last block and FSA on the crop features kept for the image (``fsa_seg.visualization.explorer``).
``--measure`` prints, for one image (``--image``, default a 448x336 image of random pixels), the time of a full
segmentation and of a slider move, and their ratio, then exits (the page's status line shows each update's
time).

Errors: a config file that does not exist or an unknown option exits with code 2 (one line); a model that cannot
be built (e.g. a missing checkpoint) is served as a page that shows the one-line reason.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import DictAction

from fsa_seg.resources import CONFIG_DIR

EXIT_USAGE = 2
DEFAULT_CONFIG = str(CONFIG_DIR / "fsa_proxy_sam_voc21.py")
INSTALL_HINT = 'pip install -e ".[explore]"  (or: pip install gradio)'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a local page to explore FSA on one image.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="model config (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--samples", default=os.environ.get("FSA_SEG_SAMPLES"),
                        help="folder of sample photos listed in the page (default: $FSA_SEG_SAMPLES)")
    parser.add_argument("--classes", default=None,
                        help='classes the page starts with, e.g. "background,sky; cat; dog" (default: the config\'s)')
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="overrides, e.g. model.random_weights=True model.device=cpu")
    parser.add_argument("--measure", action="store_true",
                        help="print the full-segmentation and slider latency of one image and exit")
    parser.add_argument("--image", default=None, help="with --measure: the image (default: 448x336 random pixels)")
    parser.add_argument("--repeats", type=int, default=3, help="with --measure: timed runs of each (median)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if not args.measure:
        try:
            import gradio  # noqa: F401
        except ImportError:
            print(f"error: the explorer page needs gradio: {INSTALL_HINT}", file=sys.stderr)
            return EXIT_USAGE
    import numpy as np

    from fsa_seg.apis.config import ConfigKeyError
    from fsa_seg.apis.inference import init_segmentor, parse_classes, read_image
    from fsa_seg.visualization.explorer import Explorer, ExplorerApp, build_page, measure_latency, sample_images, one_line

    if not osp.isfile(args.config):
        print(f"error: config file '{args.config}' not found (see configs/)", file=sys.stderr)
        return EXIT_USAGE
    options = {"model.prob_thd": 0.0}
    options.update(args.cfg_options)
    explorer, error = None, None
    try:
        classes = parse_classes(args.classes) if args.classes is not None else None
        rgb = read_image(args.image) if args.image else None
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        explorer = Explorer(init_segmentor(args.config, options, classes=classes))
    except ConfigKeyError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - a model that cannot be built: one line, in the page too
        error = one_line(err)
        print(f"error: {error}", file=sys.stderr)
        if args.measure:
            return EXIT_USAGE
    if args.measure:
        if rgb is None:
            rgb = (np.random.default_rng(0).random((336, 448, 3)) * 255).astype(np.uint8)
        print(measure_latency(explorer, rgb, repeats=args.repeats).line(), flush=True)
        return 0
    app = ExplorerApp(explorer, error, sample_images(args.samples))
    page = build_page(app)
    print(f"explorer: http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    page.launch(server_name="127.0.0.1", server_port=args.port, share=False, inbrowser=False, quiet=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)

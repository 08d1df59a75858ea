"""Measured speed and memory of FSA: the lean core vs the released formulation, and its share of a forward.

    python tools/benchmark.py                                    # the full grid, every part
    python tools/benchmark.py --n 1764 --c 171 --parts fsa,naive
    python tools/benchmark.py --parts whole,whole_base,base,block_fsa,fsa --n 1764 --c 171 \\
        --cfg-options model.vfm=dino                             # FSA's share of a DINO ViT-B/8 forward
    python tools/benchmark.py --image generated                  # one 448x336 image end to end
    python tools/benchmark.py --image path/to/img.jpg --cfg-options model.vfm=dino
    python tools/benchmark.py --sweep [--sweep-images 2] [--image-size 448x336]  # one pass vs separate runs
    python tools/benchmark.py --sam3 --repeats 1 --warmup 1       # SAM3 at full size: baseline vs each FSA variant
    python tools/benchmark.py --crop-memory --repeats 1           # peak memory per crop of each proxy
    python tools/benchmark.py --sam3 --parts sam3_step --sam3-variants last_layer,output --sam3-present 4,46

Parts (see fsa_seg/perf/workloads.py): ``whole`` / ``whole_base`` (per-crop forward of the config
with / without FSA), ``base`` / ``block_fsa`` (the last block without / with FSA), ``fsa`` (the FSA step
alone, fsa_seg/fsa.py), ``naive`` (fsa_seg/naive_fsa.py, the released formulation), ``image`` (end to end
per image with ``--image``). Models are built from ``--config`` with random weights at the real shapes;
N is the number of proxy tokens (the VFM picks it in the whole-forward parts: 441 mae, 576 dinov2,
1764 dino, 4096 sam at a 336 crop), C the number of queries.

Method: every measurement runs in a fresh subprocess (``--in-process`` to share one): build, ``--warmup``
untimed calls, ``--repeats`` timed calls (median, min, max, quartiles), then ``--mem-repeats`` calls for
peak extra memory (fsa_seg/perf/memory.py: CPU peak RSS growth with the kernel's VmHWM reset and the
allocator settled; CUDA ``max_memory_allocated`` growth). Naive runs whose estimated peak
(fsa_seg/perf/estimates.py) exceeds ``--mem-budget-gb`` are skipped with the reason. On CUDA, ours
runs in the config's precision (``auto``: fp16), the naive reference in fp32. Timings are printed and
written (``WORK_DIR/benchmark.json``, ``WORK_DIR/benchmark.md``), never asserted.

On a shared machine, ``--wait-quiet S`` makes each timed repeat wait (up to S seconds) until other processes
leave the CPUs idle; the ``others`` column reports the cores other processes used during the repeats.
``--render A.json B.json`` merges saved runs (e.g. the grid and the per-image runs) into one report.

``--sweep`` (fsa_seg/perf/timing_grid.py): the 3 x 3 ``top_p`` x ``lamda`` grid over the same generated
images (``--sweep-images`` of ``--image-size``), in one pass (the backbone once per crop batch) and as separate
runs (a full prediction per setting), in this process, ``--sweep-repeats`` rounds alternating which way runs
first; prints the wall times, the ratio (medians) and whether the predictions are identical
(``WORK_DIR/sweep.json``, ``WORK_DIR/sweep.md``); ``--wait-quiet S`` waits for idle CPUs before each timed block,
and each block's ``others`` says how many cores other processes used meanwhile.

``--crop-memory [sam,dino,...]``: each proxy's per-crop forward (part ``crops``: CLIP to its last block, the proxy,
the last block with FSA) on 1 and on ``--crop-batch`` crops in one batch, C = 46 queries unless ``--c``; the report
gives the extra peak of both, what each further crop adds, and the estimate ``crop_batch_size=None`` uses
(``CLIPSegModel.crop_memory_bytes``). Memory is measured as for every part; nothing is asserted.

SAM3 (``--sam3``, ``--sam3 tiny`` for the tiny test config; fsa_seg/perf/sam3_workloads.py): one crop at
SAM3's input size with ``--c`` prompts (default 46), random weights at SAM3's full size, config
``configs/fsa_sam3_voc21.py`` unless ``--config``: parts ``sam3_base`` (crop forward without FSA), ``sam3_fsa`` (with
FSA, ``--sam3-present`` K prompts judged present) and ``sam3_step`` (FSA alone after the first pass), FSA parts for
each of ``--sam3-variants``. FLOPs are counted (``--flops``; torch's FlopCounterMode, in the first warm-up call).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from fsa_seg.perf.runner import (ALL_PARTS, CROP_MEMORY_VFMS, DEFAULT_C, DEFAULT_N, parse_choices,
                                         parse_ints, render, run_benchmark)
from fsa_seg.perf.sam3_workloads import SAM3_PARTS, SAM3_SIZES, SAM3_VARIANTS
from fsa_seg.resources import config_path


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None,
                   help="default: configs/fsa_proxy_sam_voc.py (configs/fsa_sam3_voc21.py with --sam3)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                   help="config overrides, e.g. model.vfm=dino (pins the VFM of the whole-forward parts)")
    p.add_argument("--n", type=parse_ints, default=list(DEFAULT_N), help="proxy token counts, e.g. 1764,4096")
    p.add_argument("--c", type=parse_ints, default=None,
                   help=f"query counts, e.g. 46,171 (default {','.join(map(str, DEFAULT_C))}; 46 with --sam3)")
    p.add_argument("--parts", default=None, help=f"comma list from {','.join(ALL_PARTS)} (default: all; "
                                                 f"none with --image)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--mem-repeats", type=int, default=1, help="calls measured for peak memory (median)")
    p.add_argument("--work-dir", default="work_dirs/benchmark")
    p.add_argument("--name", default="benchmark", help="output file stem (NAME.json, NAME.md)")
    p.add_argument("--mem-budget-gb", type=float, default=None,
                   help="skip naive runs estimated above this (default: 90%% of available memory)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the config's, i.e. cuda if available)")
    p.add_argument("--precision", default=None, help="model.precision for ours: auto (fp16 on CUDA), fp32, ...")
    p.add_argument("--image", default=None, help="end to end per image: a path, or 'generated'")
    p.add_argument("--image-size", default="448x336", help="W x H of the generated image")
    p.add_argument("--image-short-side", type=int, default=336,
                   help="resize a loaded image like the test pipeline (short side; 0 = as is)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--in-process", action="store_true", help="no subprocess per measurement (quick checks)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per measurement (subprocess mode)")
    p.add_argument("--real-weights", action="store_true", help="load the config's weights instead of random ones")
    p.add_argument("--sweep", action="store_true",
                   help="time a 3 x 3 top_p x lamda grid in one pass vs separate runs (nothing else)")
    p.add_argument("--sweep-images", type=int, default=2, help="generated images of --image-size for --sweep")
    p.add_argument("--sweep-repeats", type=int, default=1,
                   help="rounds of both ways for --sweep, alternating which runs first (medians reported)")
    p.add_argument("--render", nargs="+", metavar="JSON", default=None,
                   help="no measurement: merge these result files into WORK_DIR/NAME.json and NAME.md")
    p.add_argument("--crop-memory", nargs="?", const=",".join(CROP_MEMORY_VFMS), default=None, metavar="PROXIES",
                   help="peak memory per crop of each proxy's per-crop forward (default: sam,dino,dinov2,mae), "
                        "on 1 and --crop-batch crops, with the estimate that sets crop_batch_size=None")
    p.add_argument("--crop-batch", type=int, default=2, help="the larger crop batch of --crop-memory")
    p.add_argument("--sam3", nargs="?", const="full", default=None, choices=SAM3_SIZES,
                   help="benchmark SAM3 (+ FSA) on one crop, at SAM3's full size (or 'tiny')")
    p.add_argument("--sam3-variants", default=",".join(v for v in SAM3_VARIANTS if v != "config"),
                   help=f"FSA variants of the SAM3 FSA parts, from {','.join(SAM3_VARIANTS)}")
    p.add_argument("--sam3-present", type=parse_ints, default=[4],
                   help="prompts judged present (re-run by FSA), e.g. 4,46")
    p.add_argument("--flops", action="store_true", help="count FLOPs in the first warm-up call (on with --sam3)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each timed repeat, wait up to SECONDS for other processes to leave the CPUs "
                        "idle (a shared machine)")
    args = p.parse_args(argv)
    if args.sam3:
        if args.image:
            p.error("--image measures the CLIP models; SAM3 is measured per crop (--sam3 without --image)")
        args.flops = True
        args.config = args.config or "configs/fsa_sam3_voc21.py"
        args.c = args.c or [46]
        args.parts = args.parts or ",".join(SAM3_PARTS)
    args.config = args.config or "configs/fsa_proxy_sam_voc.py"
    if args.crop_memory:
        if args.sam3 or args.image or args.sweep:
            p.error("--crop-memory measures the CLIP models' per-crop forward on its own (no --sam3, --image, --sweep)")
        args.c = args.c or [46]
    args.c = args.c or list(DEFAULT_C)
    if args.parts is None:
        args.parts = "" if args.image else ",".join(ALL_PARTS)
    try:  # unknown names: a one-line usage error before any model is built
        if args.sam3:
            parse_choices(args.parts, SAM3_PARTS, "SAM3 part")
            parse_choices(args.sam3_variants, SAM3_VARIANTS, "SAM3 variant")
        elif args.crop_memory:
            from fsa_seg.vfm import list_vfms

            parse_choices(args.crop_memory, list_vfms(include_testing=True), "proxy", shown=list_vfms())
        else:
            parse_choices(args.parts, ALL_PARTS, "part")
    except ValueError as err:
        p.error(str(err))
    return args


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.render:
        return render(args)
    from mmengine.config import Config

    if not os.path.isfile(args.config) and config_path(args.config).is_file():
        args.config = str(config_path(args.config))
    args.config = os.path.abspath(args.config)
    if not os.path.isfile(args.config):
        print(f"error: config file '{args.config}' not found", file=sys.stderr)
        return 2
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options or {})
    command = "python tools/benchmark.py " + " ".join(argv)
    if args.sweep:
        from fsa_seg.perf.timing_grid import run_sweep_benchmark

        overrides = {k: v for k, v in (("device", args.device), ("precision", args.precision)) if v}
        if args.real_weights:
            overrides["random_weights"] = False
        width, height = (int(x) for x in args.image_size.lower().split("x"))
        run_sweep_benchmark(cfg.model.to_dict(), args.work_dir, command, images=args.sweep_images,
                            image_size=(width, height), overrides=overrides, threads=args.threads,
                            warmup=args.warmup, wait_quiet=args.wait_quiet, repeats=args.sweep_repeats)
        return 0
    return run_benchmark(args, cfg.model.to_dict(), command)


if __name__ == "__main__":
    sys.exit(main())

"""The sweep workload of ``tools/benchmark.py --sweep``: one grid of settings over the same images, evaluated in
one pass (the backbone once per crop batch, :meth:`~fsa_seg.open_vocab.OpenVocabModel.predict_variants`) and as
separate runs (a full :meth:`~fsa_seg.open_vocab.OpenVocabModel.predict` per setting), timed both ways.

Both ways run the same model (a config's CLIP segmentation model, random weights at the real shapes, random text
embeddings as in :mod:`.workloads`) on the same generated images. A separate run of a setting is ``predict``
with the model switched to it (``model.variant(...)``, the pieces a model built with that setting has: the
tests check that the predictions are identical); building the models and loading data are not timed, either way.
The report says whether the two ways gave identical predictions (labels and probabilities) and the ratio of
their wall times; timings are printed and written, never asserted.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from . import workloads

# The grid: FSA's top_p x lamda, 3 x 3.
DEFAULT_GRID: Tuple[Tuple[str, Tuple[float, ...]], ...] = (("top_p", (0.3, 0.45, 0.6)), ("lamda", (2.0, 3.0, 4.0)))


def grid_settings(grid: Sequence[Tuple[str, Sequence[Any]]]) -> List[Dict[str, Any]]:
    """Every combination of the grid's values (first key slowest)."""
    import itertools

    keys = [k for k, _ in grid]
    return [dict(zip(keys, values)) for values in itertools.product(*[v for _, v in grid])]


def _same_values(a, b) -> bool:
    """Bit-identical tensors, NaN where the other has NaN (random weights can make ProxyCLIP's attention mask a
    whole row: the released formulation then gives NaN, both ways)."""
    import torch

    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


def run_sweep_benchmark(model_cfg: Mapping[str, Any], work_dir: str, command: str, images: int = 2,
                        image_size: Tuple[int, int] = (448, 336), grid=DEFAULT_GRID, overrides=None,
                        threads=None, name: str = "sweep", warmup: int = 1) -> Dict[str, Any]:
    """Time the grid both ways (after ``warmup`` untimed predictions of one crop-sized image); write
    ``WORK_DIR/NAME.json`` and ``NAME.md``; return the report."""
    import torch

    from ..sliding_window import windows
    from .runner import _device_name

    if threads:
        torch.set_num_threads(int(threads))
    overrides = dict(overrides or {})
    overrides.setdefault("random_weights", True)
    model = workloads.build_model(model_cfg, overrides, real_text=not overrides["random_weights"])
    settings = grid_settings(grid)
    width, height = image_size
    pixels = [torch.from_numpy(workloads.synthetic_image(height, width, seed=i)).permute(2, 0, 1).contiguous()
              for i in range(images)]
    normalised = [model.normalise(p.to(model.run_device)) for p in pixels]
    window = (model.slide_crop,) * 2 if model.slide_crop else (height, width)
    stride = (model.slide_stride,) * 2 if model.slide_crop else (height, width)
    crops = images * len(windows(height, width, window, stride))

    print(f"sweep: {len(settings)} settings ({', '.join(k for k, _ in grid)}) x {images} image(s) of "
          f"{width}x{height} ({crops} crops); vfm {model_cfg.get('vfm') if model.vfm is not None else None}, "
          f"{model.num_queries} queries, {str(model.run_dtype).replace('torch.', '')} on {model.run_device}",
          flush=True)
    for _ in range(warmup):  # first-call costs (thread pools, allocator) are not the workload's
        model.predict([normalised[0][:, :window[0], :window[1]]])
    start = time.perf_counter()
    one_pass = model.predict_variants(normalised, None, settings)
    one_pass_s = time.perf_counter() - start
    print(f"  one pass:      {one_pass_s:.1f} s", flush=True)
    separate: List[List] = [[] for _ in normalised]
    per_setting = []
    start = time.perf_counter()
    for setting in settings:
        t0 = time.perf_counter()
        with model.variant(**setting):
            preds = model.predict(normalised)
        per_setting.append(time.perf_counter() - t0)
        for i, pred in enumerate(preds):
            separate[i].append(pred)
    separate_s = time.perf_counter() - start
    print(f"  separate runs: {separate_s:.1f} s ({', '.join(f'{t:.1f}' for t in per_setting)})", flush=True)
    identical = all(torch.equal(a.labels, b.labels) and _same_values(a.probabilities, b.probabilities)
                    for per_a, per_b in zip(one_pass, separate) for a, b in zip(per_a, per_b))
    ratio = separate_s / one_pass_s
    report = dict(
        command=command, date=time.strftime("%Y-%m-%d %H:%M:%S"), device=str(model.run_device),
        device_name=_device_name(str(model.run_device)), torch=torch.__version__, threads=torch.get_num_threads(),
        load_before=list(os.getloadavg()), model={k: v for k, v in dict(model_cfg).items() if k != "type"},
        overrides=overrides, grid=[[k, list(v)] for k, v in grid], settings=settings, images=images,
        image_size=[width, height], crops=crops, queries=int(model.num_queries),
        one_pass_s=one_pass_s, separate_s=separate_s, separate_per_setting_s=per_setting, ratio=ratio,
        identical=identical, warmup=warmup)
    out = Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))
    (out / f"{name}.md").write_text(markdown(report))
    print(f"sweep of {len(settings)} settings: one pass {one_pass_s:.1f} s, separate runs {separate_s:.1f} s: "
          f"ratio {ratio:.2f} (separate / one pass); identical predictions: {identical}")
    print(f"written: {out / (name + '.json')}, {out / (name + '.md')}")
    return report


def markdown(report: Mapping[str, Any]) -> str:
    grid = " x ".join(f"{k} {', '.join(str(v) for v in values)}" for k, values in report["grid"])
    lines = [
        "# Sweep: one pass vs separate runs\n",
        f"{report['device_name']}; torch {report['torch']}, {report['threads']} threads; random weights; "
        f"{report['date']}.\n",
        f"Command: `{report['command']}`\n",
        f"Grid: {grid} ({len(report['settings'])} settings) on {report['images']} generated image(s) of "
        f"{report['image_size'][0]}x{report['image_size'][1]} ({report['crops']} crops), {report['queries']} "
        f"queries. One pass: `predict_variants` (the backbone once per crop batch, each setting's last block and "
        f"post-processing after it); separate runs: `predict` once per setting. Model build and data loading "
        f"are not timed. Each way timed once, after {report['warmup']} untimed prediction(s) of one crop.\n",
        "| way | wall s |", "|---|---:|",
        f"| one pass | {report['one_pass_s']:.1f} |",
        f"| separate runs | {report['separate_s']:.1f} |",
        "",
        f"Ratio (separate / one pass): **{report['ratio']:.2f}x**; identical predictions (labels and "
        f"probabilities, every setting and image): {report['identical']}.",
    ]
    return "\n".join(lines) + "\n"

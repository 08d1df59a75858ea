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
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from . import machine, workloads

# The default grid: FSA's top_p x lamda, 3 x 3, around the released (0.45, 3.0).
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
                        threads=None, name: str = "sweep", warmup: int = 1, wait_quiet: float = 0.0,
                        repeats: int = 1) -> Dict[str, Any]:
    """Time the grid both ways, ``repeats`` times in alternating order (one pass first, then separate runs
    first, ...), after ``warmup`` untimed predictions of one crop-sized image; write ``WORK_DIR/NAME.json`` and
    ``NAME.md``; return the report (medians and their ratio). On a shared machine ``wait_quiet`` waits (up to that
    many seconds) for idle CPUs before each timed block; the cores other processes used during each block are
    reported either way."""
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
          f"{model.num_queries} queries, {str(model.run_dtype).replace('torch.', '')} on {model.run_device}, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    for _ in range(warmup):  # first-call costs (thread pools, allocator) are not the workload's
        model.predict([normalised[0][:, :window[0], :window[1]]])

    def timed(fn):
        if wait_quiet:
            machine.wait_quiet(wait_quiet)
        probe = machine.OtherLoad().start()
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start, probe.stop()

    def one_pass():
        preds, seconds, others = timed(lambda: model.predict_variants(normalised, None, settings))
        print(f"  one pass:      {seconds:.1f} s (other processes used {machine.format_cores(others)} cores)",
              flush=True)
        return preds, dict(seconds=seconds, other_cores=others)

    def separate_runs():
        per_image: List[List] = [[] for _ in normalised]
        blocks = []
        for setting in settings:
            def run(setting=setting):
                with model.variant(**setting):
                    return model.predict(normalised)
            preds, seconds, others = timed(run)
            blocks.append(dict(seconds=seconds, other_cores=others))
            for i, pred in enumerate(preds):
                per_image[i].append(pred)
        total = sum(b["seconds"] for b in blocks)
        times = ", ".join(f"{b['seconds']:.1f}" for b in blocks)
        others = ", ".join(machine.format_cores(b["other_cores"]) for b in blocks)
        print(f"  separate runs: {total:.1f} s ({times}; other processes used {others} cores)", flush=True)
        return per_image, dict(seconds=total, per_setting=blocks)

    rounds = []
    identical = True
    for r in range(max(1, repeats)):
        if r % 2 == 0:
            a, one = one_pass()
            b, sep = separate_runs()
        else:
            b, sep = separate_runs()
            a, one = one_pass()
        identical = identical and all(
            torch.equal(x.labels, y.labels) and _same_values(x.probabilities, y.probabilities)
            for per_a, per_b in zip(a, b) for x, y in zip(per_a, per_b))
        rounds.append(dict(one_pass=one, separate=sep, order="one pass first" if r % 2 == 0 else
                           "separate runs first"))
        del a, b
    one_pass_s = statistics.median([r["one_pass"]["seconds"] for r in rounds])
    separate_s = statistics.median([r["separate"]["seconds"] for r in rounds])
    ratio = separate_s / one_pass_s
    report = dict(
        command=command, date=time.strftime("%Y-%m-%d %H:%M:%S"), device=str(model.run_device),
        device_name=_device_name(str(model.run_device)), torch=torch.__version__, threads=torch.get_num_threads(),
        load_before=list(os.getloadavg()), model={k: v for k, v in dict(model_cfg).items() if k != "type"},
        overrides=overrides, grid=[[k, list(v)] for k, v in grid], settings=settings, images=images,
        image_size=[width, height], crops=crops, queries=int(model.num_queries), warmup=warmup,
        wait_quiet_s=wait_quiet, repeats=len(rounds), rounds=rounds, one_pass_s=one_pass_s, separate_s=separate_s,
        ratio=ratio, identical=identical)
    out = Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))
    (out / f"{name}.md").write_text(markdown(report))
    print(f"sweep of {len(settings)} settings: one pass {one_pass_s:.1f} s, separate runs {separate_s:.1f} s"
          f"{' (medians of ' + str(len(rounds)) + ')' if len(rounds) > 1 else ''}: ratio {ratio:.2f} "
          f"(separate / one pass); identical predictions: {identical}")
    print(f"written: {out / (name + '.json')}, {out / (name + '.md')}")
    return report


def markdown(report: Mapping[str, Any]) -> str:
    grid = " x ".join(f"{k} {', '.join(str(v) for v in values)}" for k, values in report["grid"])
    lines = [
        "# Sweep: one pass vs separate runs\n",
        f"{report['device_name']}; torch {report['torch']}, {report['threads']} thread(s); random weights; "
        f"{report['date']}.\n",
        f"Command: `{report['command']}`\n",
        f"Grid: {grid} ({len(report['settings'])} settings) on {report['images']} generated image(s) of "
        f"{report['image_size'][0]}x{report['image_size'][1]} ({report['crops']} crops), {report['queries']} "
        f"queries. One pass: `predict_variants` (the backbone once per crop batch, each setting's last block and "
        f"post-processing after it); separate runs: `predict` once per setting. Model build and data loading "
        f"are not timed. {report['repeats']} round(s), alternating which way runs first, after "
        f"{report['warmup']} untimed prediction(s) of one crop.\n",
        "`others`: cores used by other processes during the timed block (0 = the machine was ours; a busy block's "
        "time is inflated)" + (f"; each block waited up to {report['wait_quiet_s']:g} s for idle CPUs."
                               if report.get("wait_quiet_s") else ".") + "\n",
        "| round | way | wall s | others | per setting s (others) |", "|---:|---|---:|---|---|",
    ]
    for n, r in enumerate(report["rounds"], 1):
        one, sep = r["one_pass"], r["separate"]
        lines.append(f"| {n} | one pass | {one['seconds']:.1f} | {machine.format_cores(one['other_cores'])} | |")
        lines.append(f"| {n} | separate runs | {sep['seconds']:.1f} | | " + ", ".join(
            f"{b['seconds']:.1f} ({machine.format_cores(b['other_cores'])})" for b in sep["per_setting"]) + " |")
    lines += ["", f"Ratio (separate / one pass{', medians' if report['repeats'] > 1 else ''}): "
                  f"**{report['ratio']:.2f}x** ({report['separate_s']:.1f} s / {report['one_pass_s']:.1f} s); "
                  f"identical predictions (labels and probabilities, every setting, image and round): "
                  f"{report['identical']}."]
    return "\n".join(lines) + "\n"

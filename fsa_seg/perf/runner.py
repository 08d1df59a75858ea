"""The benchmark's machinery (``tools/benchmark.py`` is its command line): planning the measurements, running
each in a fresh worker process (``python -m fsa_seg.perf.runner SPEC.json``), and the report (JSON +
markdown with the ratios). Timings are printed and written, never asserted.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..diagnostics import env_info
from ..resources import shown_path
from . import estimates, flops, machine, memory, sam3_workloads, workloads

PACKAGE_PARENT = Path(__file__).resolve().parents[2]

ALL_PARTS = ("whole", "whole_base", "base", "block_fsa", "fsa", "naive")
DEFAULT_N = (441, 576, 1764, 4096)
DEFAULT_C = (21, 46, 171)
# The released FSA-ProxyCLIP end to end on one 448 x 336 image (SAM proxy, VOC21's 46 queries, fp32, 2-core
# CPU), as measured with the released code; the reference the benchmark's report compares against.
RELEASED_IMAGE_448X336_S = 97.0
MB = 1e6


# ----------------------------------------------------------------------------------------------- worker
def _quantile(sorted_values: List[float], q: float) -> float:
    pos = (len(sorted_values) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarise_times(times: List[float]) -> Dict:
    s = sorted(times)
    return {"times_s": times, "median_s": _quantile(s, 0.5), "min_s": s[0], "max_s": s[-1],
            "q1_s": _quantile(s, 0.25), "q3_s": _quantile(s, 0.75)}


def run_measurement(spec: Dict) -> Dict:
    """Set up one part, warm up, time it, measure its peak extra memory. Runs in the worker."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    result = dict(part=spec["part"], n=spec.get("n"), c=spec.get("c"), vfm=spec.get("vfm"),
                  variant=spec.get("variant"), present=spec.get("present"),
                  cfg_options=spec.get("cfg_options") or {}, load_before=list(os.getloadavg()))
    fn, meta, device = workloads.setup(spec, spec["model_cfg"])
    counted = None
    for i in range(max(spec["warmup"], 1 if spec.get("count_flops") else 0)):
        if i == 0 and spec.get("count_flops"):  # the first warm-up call, under torch's FLOP counter
            counted = flops.count_flops(fn)[1]
        else:
            fn()
    result["flops"] = counted
    times, cpu_times, others, waited = [], [], [], 0.0
    for _ in range(spec["repeats"]):
        if spec.get("wait_quiet"):
            waited += machine.wait_quiet(spec["wait_quiet"], window_s=0.5, windows=2)[1]
        probe = machine.OtherLoad().start()
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        others.append(probe.stop())
    result.update(summarise_times(times))
    # CPU seconds of this process (all its threads): less sensitive than wall time to other processes on the cores
    result["cpu_s"] = _quantile(sorted(cpu_times), 0.5) if cpu_times else None
    known = [o for o in others if o is not None]
    result.update(other_cores_each=others, other_cores=(sum(known) / len(known) if known else None),
                  waited_quiet_s=round(waited, 1))
    mems, how = [], None
    for _ in range(spec["mem_repeats"]):
        extra, how = memory.measure(fn, device)
        if extra is not None:
            mems.append(extra)
    result.update(meta)
    result.update(status="ok", device=str(device), threads=torch.get_num_threads(),
                  extra_mem_bytes=(sorted(mems)[len(mems) // 2] if mems else None), mem_samples=mems,
                  mem_method=how, load_after=list(os.getloadavg()))
    return result


def worker_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = run_measurement(spec)
    Path(spec["result_path"]).write_text(json.dumps(result))
    return 0


# ------------------------------------------------------------------------------------------- planning
def parse_ints(text: str) -> List[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def parse_choices(text: Optional[str], allowed: Sequence[str], what: str,
                  shown: Optional[Sequence[str]] = None) -> List[str]:
    """The comma list ``text`` (empty or ``None``: none), each item one of ``allowed`` (a one-line ``ValueError``
    names the unknown ones and the choices ``shown``, by default all of ``allowed``)."""
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    unknown = sorted(set(items) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; choose from {list(allowed if shown is None else shown)}")
    return items


def plan_sam3(args) -> List[Dict]:
    """SAM3 measurements: each part for each query count, FSA parts for each variant and present-prompt count."""
    parts = parse_choices(args.parts, sam3_workloads.SAM3_PARTS, "SAM3 part")
    variants = parse_choices(args.sam3_variants, sam3_workloads.SAM3_VARIANTS, "SAM3 variant")
    jobs: List[Dict] = []
    for c in args.c:
        for part in parts:
            if part == "sam3_base":
                jobs.append(dict(part=part, c=c))
                continue
            for variant in variants:
                for present in args.sam3_present:
                    if not 1 <= present <= c:
                        jobs.append(dict(part=part, c=c, variant=variant, present=present, status="skipped",
                                         reason=f"present prompts must be in [1, {c}]"))
                        continue
                    jobs.append(dict(part=part, c=c, variant=variant, present=present))
    return jobs


CROP_MEMORY_VFMS = ("sam", "dino", "dinov2", "mae")  # the default of --crop-memory; any registered proxy is allowed


def plan_crop_memory(args) -> List[Dict]:
    """``--crop-memory``: the per-crop forward (``crops`` part) of each proxy on 1 and on ``--crop-batch`` crops;
    the difference over the extra crops is the memory one more crop in a batch takes."""
    from ..vfm import list_vfms

    vfms = parse_choices(args.crop_memory, list_vfms(include_testing=True), "proxy", shown=list_vfms())
    batches = sorted({1, max(2, int(args.crop_batch))})
    return [dict(part="crops", vfm=vfm, c=c, batch=b) for vfm in vfms for c in args.c for b in batches]


def crop_memory_rows(results: List[Dict]) -> List[Dict]:
    """Per proxy and query count: extra peak at 1 crop and at B crops, their difference per extra crop, and the
    estimate (``CLIPSegModel.crop_memory_bytes``)."""
    rows: Dict = {}
    for r in results:
        if r.get("part") != "crops":
            continue
        row = rows.setdefault((r.get("vfm"), r.get("c")), dict(vfm=r.get("vfm"), c=r.get("c"), runs={}))
        row["runs"][r.get("batch")] = r
        if r.get("status") == "ok":
            row.update(n=r.get("n"), crop=r.get("crop"), dtype=r.get("dtype"), estimate=r.get("estimate_bytes"))
    out = []
    for row in rows.values():
        ok = {b: r for b, r in row["runs"].items()
              if r.get("status") == "ok" and r.get("extra_mem_bytes") is not None}
        one = ok.get(1)
        more = max((b for b in ok if b > 1), default=None)
        row["one"] = one["extra_mem_bytes"] if one else None
        row["one_s"] = one["median_s"] if one else None
        row["batch"] = more
        row["many"] = ok[more]["extra_mem_bytes"] if more else None
        row["per_crop"] = ((row["many"] - row["one"]) / (more - 1)) if (one and more) else None
        row["failed"] = "; ".join(f"{b} crops: {r.get('status')} {r.get('reason', '')}"
                                  for b, r in row["runs"].items() if r.get("status") != "ok")
        out.append(row)
    return out


def crop_memory_markdown(results: List[Dict]) -> List[str]:
    rows = crop_memory_rows(results)
    if not rows:
        return []
    out = ["\n## Peak memory per crop\n",
           "Extra peak memory of the per-crop forward (`CLIPSegModel.crop_scores`: CLIP to its last block, the proxy, "
           "the last block with FSA, upsampling) on 1 and on B crops of one batch; per crop = (B crops - 1 crop) / "
           "(B - 1), what each further crop of a batch adds; estimate = `crop_memory_bytes()`, what "
           "`crop_batch_size=None` divides the available memory by.\n",
           "| proxy | N | queries | crop | dtype | 1 crop MB | B | B crops MB | per crop MB | estimate MB | 1 crop s "
           "| note |",
           "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r['vfm']} | {r.get('n', '-')} | {r['c']} | {r.get('crop', '-')} | {r.get('dtype', '-')} | "
                   f"{_fmt_mb(r['one'])} | {r['batch'] or '-'} | {_fmt_mb(r['many'])} | {_fmt_mb(r['per_crop'])} | "
                   f"{_fmt_mb(r.get('estimate'))} | {_fmt_s(r['one_s'])} | {r['failed']} |")
    return out


def plan(args, model_cfg: Dict) -> List[Dict]:
    """Measurements to run (or skip, with a reason), in order."""
    if getattr(args, "sam3", None):
        return plan_sam3(args)
    if getattr(args, "crop_memory", None):
        return plan_crop_memory(args)
    crop = workloads.crop_size(model_cfg)
    parts = parse_choices(args.parts, ALL_PARTS, "part")
    pinned_vfm = (args.cfg_options or {}).get("model.vfm")
    heads, head_dim = workloads.clip_heads(model_cfg.get("clip_model", "ViT-B-16"))
    budget = args.mem_budget_bytes
    jobs: List[Dict] = []
    whole_done = set()
    for n in args.n:
        for c in args.c:
            for part in parts:
                job = dict(part=part, n=n, c=c)
                if part in ("whole", "whole_base"):
                    vfm = pinned_vfm or workloads.vfm_for_tokens(n, crop)
                    if vfm is None:
                        jobs.append(dict(job, status="skipped",
                                         reason=f"no VFM gives N={n} at a {crop} crop (441 mae, 576 dinov2, "
                                                f"1764 dino, 4096 sam)"))
                        continue
                    n_vfm = workloads.vfm_tokens(vfm, crop) or n
                    if (part, vfm, c) in whole_done:
                        continue
                    whole_done.add((part, vfm, c))
                    job.update(vfm=vfm, n=n_vfm)
                if part == "naive":
                    est = estimates.naive_fsa_bytes(n, c, heads, head_dim)
                    job["estimate_bytes"] = est["peak"]
                    if budget is not None and est["peak"] > budget:
                        jobs.append(dict(job, status="skipped", reason=(
                            f"naive estimate {est['peak'] / 1e9:.1f} GB ({est['phase']} phase; largest "
                            f"temporary {est['largest_temporary'] / 1e9:.1f} GB, [N, N, C] fp32 "
                            f"{est['kl_temporary'] / 1e9:.1f} GB) > budget {budget / 1e9:.1f} GB")))
                        continue
                if part == "fsa":
                    job["estimate_bytes"] = estimates.ours_fsa_bytes(n, c, heads, head_dim)["peak"]
                jobs.append(job)
    if args.image:
        size = tuple(int(x) for x in args.image_size.lower().split("x"))
        jobs.append(dict(part="image", image=args.image, image_size=size,
                         image_short_side=args.image_short_side))
    return jobs


def run_job(job: Dict, args) -> Dict:
    if job.get("status") == "skipped":
        return job
    spec = dict(job, model_cfg=args.model_cfg, cfg_options=args.cfg_options or {}, overrides=args.overrides,
                work_dir=str(args.work_dir), warmup=args.warmup, repeats=args.repeats,
                mem_repeats=args.mem_repeats, threads=args.threads, real_weights=args.real_weights,
                wait_quiet=args.wait_quiet, count_flops=bool(getattr(args, "flops", False)),
                sam3_size=getattr(args, "sam3", None) or "full")
    if args.in_process:
        try:
            return dict(job, **run_measurement(spec))
        except Exception as err:  # report and go on with the next measurement
            return dict(job, status="failed", reason=f"{type(err).__name__}: {err}")
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec["result_path"] = str(result_path)
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "fsa_seg.perf.runner", str(spec_path)]
        # The worker imports this checkout's package (which may not be the one installed editable).
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(PACKAGE_PARENT),
                                                                       os.environ.get("PYTHONPATH")) if p))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  env=env)
        except subprocess.TimeoutExpired:
            return dict(job, status="failed", reason=f"timed out after {args.timeout} s")
        if proc.returncode == 0 and result_path.is_file():
            return dict(job, **json.loads(result_path.read_text()))
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        why = ("killed by the kernel (out of memory?)" if proc.returncode in (-9, 137)
               else f"exit {proc.returncode}: {' | '.join(tail)}")
        return dict(job, status="failed", reason=why)


# ------------------------------------------------------------------------------------------ reporting
def _fmt_s(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _fmt_mb(x: Optional[float]) -> str:
    return "-" if x is None else f"{x / MB:,.0f}"


def _fmt_ratio(x: Optional[float], pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.1f}x"


def _options(r: Dict, key: str = "cfg_options") -> str:
    """A row's options (``key``) as ``k=v`` words, ``-`` without any."""
    opts = r.get(key) or {}
    return " ".join(f"{k}={v}" for k, v in opts.items()) or "-"


def _find(results: List[Dict], part: str, n: int, c: int) -> Optional[Dict]:
    for r in results:
        if r.get("part") == part and r.get("n") == n and r.get("c") == c and r.get("status") == "ok":
            return r
    return None


def ratios(results: List[Dict]) -> List[Dict]:
    keys = []
    for r in results:
        if r.get("part") not in ("image", "crops", *sam3_workloads.SAM3_PARTS) and (r.get("n"), r.get("c")) not in keys:
            keys.append((r.get("n"), r.get("c")))
    rows = []
    for n, c in keys:
        ours, naive = _find(results, "fsa", n, c), _find(results, "naive", n, c)
        whole, whole_base = _find(results, "whole", n, c), _find(results, "whole_base", n, c)
        base, block = _find(results, "base", n, c), _find(results, "block_fsa", n, c)
        row = dict(n=n, c=c)
        t = lambda r: r["median_s"] if r else None  # noqa: E731
        m = lambda r: r.get("extra_mem_bytes") if r else None  # noqa: E731
        row.update(fsa_s=t(ours), naive_s=t(naive), fsa_mem=m(ours), naive_mem=m(naive),
                   whole_s=t(whole), whole_base_s=t(whole_base), base_s=t(base), block_fsa_s=t(block))
        if ours and naive:
            row["speedup"] = naive["median_s"] / ours["median_s"]
            if m(ours) and m(naive):
                row["mem_ratio"] = m(naive) / m(ours)
        if ours and whole:
            row["fsa_share_of_whole"] = ours["median_s"] / whole["median_s"]
        if whole and whole_base:
            row["fsa_added_whole"] = whole["median_s"] / whole_base["median_s"] - 1.0
        if base and block and whole_base:
            row["fsa_added_block"] = (block["median_s"] - base["median_s"]) / whole_base["median_s"]
        if any(v is not None for k, v in row.items() if k not in ("n", "c")):
            rows.append(row)
    return rows


def sam3_ratios(results: List[Dict]) -> List[Dict]:
    """SAM3 rows with what FSA adds relative to ``sam3_base`` at the same prompt count: ``sam3_fsa`` (whole
    crop with FSA): time and FLOPs ratios minus one, peak memory difference; ``sam3_step`` (FSA alone): its time
    and FLOPs over the base's."""
    rows = []
    for r in results:
        if r.get("part") not in sam3_workloads.SAM3_PARTS:
            continue
        row = dict(r)
        base = next((b for b in results if b.get("part") == "sam3_base" and b.get("c") == r.get("c")
                     and b.get("status") == "ok"), None)
        if base is not None and r.get("status") == "ok" and r["part"] != "sam3_base":
            offset = 1.0 if r["part"] == "sam3_fsa" else 0.0
            row["added_time"] = r["median_s"] / base["median_s"] - offset
            if r.get("cpu_s") and base.get("cpu_s"):
                row["added_cpu"] = r["cpu_s"] / base["cpu_s"] - offset
            if r.get("flops") and base.get("flops"):
                row["added_flops"] = r["flops"] / base["flops"] - offset
            if r["part"] == "sam3_fsa" and r.get("extra_mem_bytes") is not None \
                    and base.get("extra_mem_bytes") is not None:
                row["added_peak_bytes"] = r["extra_mem_bytes"] - base["extra_mem_bytes"]
        rows.append(row)
    return rows


def _fmt_gflop(x: Optional[int]) -> str:
    return "-" if not x else f"{x / 1e9:,.0f}"


def sam3_markdown(rows: List[Dict]) -> List[str]:
    """The SAM3 per-crop table (markdown lines; none without SAM3 rows)."""
    if not rows:
        return []
    ok = [r for r in rows if r.get("status") == "ok"]
    first = ok[0] if ok else {}
    out = ["\n## SAM3 per crop\n",
           f"One {first.get('crop', '-')} x {first.get('crop', '-')} crop, random weights "
           f"(SAM3 {first.get('sam3_size')}"
           f" architecture, {first.get('params_m', '-')}M parameters), {first.get('n', '-')} encoder tokens. "
           "`sam3_base`: the crop forward without FSA; `sam3_fsa`: with FSA, K prompts judged present; "
           "`sam3_step`: FSA alone after the first pass (A_fb, the K present prompts' adapted pass), measured on a "
           "model with those K prompts. GFLOP: torch's FlopCounterMode in the first warm-up call (matrix products, "
           "convolutions, attention; element-wise work not counted). `+time` / `+FLOPs`: sam3_fsa / sam3_base - 1, "
           "or sam3_step / sam3_base (what FSA adds to the crop forward); `+peak MB`: sam3_fsa's extra peak minus "
           "sam3_base's. A sam3_step's extra MB is its own peak above the stored first pass. `CPU s`: CPU seconds of "
           "the process in the timed call (all threads), `+CPU` the same ratios on them; `others`: cores used by "
           "other processes during the timed repeats (wall times are inflated where it is not 0; CPU seconds much "
           "less; FLOPs and memory not at all).\n",
           "| part | variant | FSA options | prompts | present | median s | CPU s | GFLOP | extra MB | +time | +CPU | "
           "+FLOPs | +peak MB | others |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("status") != "ok":
            out.append(f"| {r['part']} | {r.get('variant') or '-'} | - | {r.get('c')} | {r.get('present') or '-'} | "
                       f"- | - | - | - | - | - | - | - | {r['status']}: {r.get('reason', '')} |")
            continue
        peak = r.get("added_peak_bytes")
        peak_text = "-" if peak is None else f"{peak / MB:+,.0f}"
        out.append(f"| {r['part']} | {r.get('variant') or '-'} | {_options(r, 'fsa_options')} | {r.get('prompts')} | "
                   f"{r.get('present', '-') if r['part'] != 'sam3_base' else '-'} | {_fmt_s(r['median_s'])} | "
                   f"{_fmt_s(r.get('cpu_s'))} | {_fmt_gflop(r.get('flops'))} | "
                   f"{_fmt_mb(r.get('extra_mem_bytes'))} | {_fmt_ratio(r.get('added_time'), True)} | "
                   f"{_fmt_ratio(r.get('added_cpu'), True)} | {_fmt_ratio(r.get('added_flops'), True)} | {peak_text} | "
                   f"{machine.format_cores(r.get('other_cores'))} |")
    return out


def markdown(report: Dict) -> str:
    meta, results = report["meta"], report["results"]
    out = ["# FSA benchmark\n",
           f"{meta['device_name']}; torch {meta['torch']}, {meta['threads']} threads; ours in {meta['ours_dtype']}, "
           f"naive in float32; config `{meta['config']}` {meta['cfg_options'] or ''}; random weights; "
           f"{meta['repeats']} timed repeats after {meta['warmup']} warm-up; memory: {meta['mem_method']}; "
           f"budget for the naive run {meta['mem_budget_gb']} GB; {meta['date']}. "
           f"`others` = cores used by other processes during the timed repeats (0 = quiet machine).\n",
           f"Command: `{meta['command']}`\n"]
    out += grid_markdown(results)
    out += sam3_markdown(report.get("sam3") or [])
    out += crop_memory_markdown(results)
    out += image_markdown(results)
    return "\n".join(out) + "\n"


def grid_markdown(results: List[Dict]) -> List[str]:
    """The measurement table and the ratio table of the grid parts (markdown lines; none without grid rows)."""
    out: List[str] = []
    grid = [r for r in results if r.get("part") not in ("image", "crops", *sam3_workloads.SAM3_PARTS)]
    if grid:
        out += ["## Measurements\n",
                "| part | N | C | VFM | median s | min-max s | extra MB | estimate MB | others | note |",
                "|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
        for r in grid:
            if r.get("status") == "ok":
                spread = f"{_fmt_s(r['min_s'])}-{_fmt_s(r['max_s'])}"
                out.append(f"| {r['part']} | {r['n']} | {r['c']} | {r.get('vfm') or '-'} | {_fmt_s(r['median_s'])} "
                           f"| {spread} | {_fmt_mb(r.get('extra_mem_bytes'))} | {_fmt_mb(r.get('estimate_bytes'))} "
                           f"| {machine.format_cores(r.get('other_cores'))} | |")
            else:
                out.append(f"| {r['part']} | {r['n']} | {r['c']} | {r.get('vfm') or '-'} | - | - | - | "
                           f"{_fmt_mb(r.get('estimate_bytes'))} | - | {r['status']}: {r.get('reason', '')} |")
        busy = [r for r in grid if (r.get("other_cores") or 0) > 0.25]
        if busy:
            out.append(f"\n{len(busy)} row(s) ran while other processes used more than a quarter of a core: "
                       f"their timings are inflated (2 busy threads wait for each other).")
        rows = ratios(results)
        if rows:
            out += ["\n## Ratios\n",
                    "FSA = `fsa` part (fsa_seg/fsa.py), naive = fsa_seg/naive_fsa.py (released formulation); "
                    "FSA share = FSA step / whole per-crop forward with FSA; FSA added (block) = (last block with "
                    "FSA - last block without) / whole forward without FSA; FSA added (whole) = the same from the "
                    "two whole forwards (noisy: two seconds-long runs in separate processes, whose difference is "
                    "a few percent of either).\n",
                    "| N | C | FSA s | naive s | speed-up | FSA MB | naive MB | memory ratio | whole s | "
                    "whole w/o FSA s | FSA share | FSA added (block) | FSA added (whole) |",
                    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in rows:
                out.append(f"| {r['n']} | {r['c']} | {_fmt_s(r['fsa_s'])} | {_fmt_s(r['naive_s'])} | "
                           f"{_fmt_ratio(r.get('speedup'))} | {_fmt_mb(r['fsa_mem'])} | {_fmt_mb(r['naive_mem'])} | "
                           f"{_fmt_ratio(r.get('mem_ratio'))} | {_fmt_s(r['whole_s'])} | {_fmt_s(r['whole_base_s'])} | "
                           f"{_fmt_ratio(r.get('fsa_share_of_whole'), True)} | "
                           f"{_fmt_ratio(r.get('fsa_added_block'), True)} | "
                           f"{_fmt_ratio(r.get('fsa_added_whole'), True)} |")
    return out


def image_markdown(results: List[Dict]) -> List[str]:
    """The per-image table (markdown lines; none without image rows)."""
    out: List[str] = []
    images = [r for r in results if r.get("part") == "image"]
    if images:
        out += ["\n## Per image (end to end)\n",
                "| image | size (W x H) | options | VFM | N | queries | crops | median s | min-max s | extra MB | "
                "others | released (2-core CPU, fp32) |",
                "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in images:
            if r.get("status") != "ok":
                out.append(f"| {r.get('image')} | - | {_options(r)} | - | - | - | - | - | - | - | - | "
                           f"{r['status']}: {r.get('reason')} |")
                continue
            released = (f"{RELEASED_IMAGE_448X336_S:.0f} s (SAM, 46 queries, 448x336)"
                        if (r["width"], r["height"]) == (448, 336) else "-")
            out.append(f"| {r['image']} | {r['width']} x {r['height']} | {_options(r)} | {r.get('vfm')} | "
                       f"{r.get('n')} | {r.get('queries')} | {r.get('crops')} | {_fmt_s(r['median_s'])} | "
                       f"{_fmt_s(r['min_s'])}-{_fmt_s(r['max_s'])} | {_fmt_mb(r.get('extra_mem_bytes'))} | "
                       f"{machine.format_cores(r.get('other_cores'))} | {released} |")
    return out


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    return f"{env_info.cpu_model()} ({os.cpu_count()} logical CPUs)"


def run_benchmark(args, model_cfg: Dict, command: str) -> int:
    """Plan, measure (one subprocess per measurement unless ``args.in_process``), report. ``args`` holds the
    options of tools/benchmark.py; ``model_cfg`` the config's model keys (with --cfg-options merged)."""
    args.model_cfg = dict(model_cfg)
    args.work_dir = Path(args.work_dir).resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.overrides = {}
    if args.device:
        args.overrides["device"] = args.device
    if args.precision:
        args.overrides["precision"] = args.precision
    device = args.device or model_cfg.get("device") or ("cuda" if _cuda_available() else "cpu")
    if args.mem_budget_gb is not None:
        args.mem_budget_bytes = int(args.mem_budget_gb * 1e9)
    else:
        avail = memory.available_bytes(_torch_device(device) if device.startswith("cuda") else None)
        args.mem_budget_bytes = int(0.9 * avail) if avail else None
    precision = args.precision or model_cfg.get("precision", "auto")
    ours_dtype = precision if precision != "auto" else ("fp16" if device.startswith("cuda") else "fp32")
    jobs = plan(args, model_cfg)
    import torch

    meta = dict(command=command, config=_display_path(args.config), sam3=getattr(args, "sam3", None),
                flops=bool(getattr(args, "flops", False)),
                cfg_options=args.cfg_options, device=device, device_name=_device_name(device),
                torch=torch.__version__, threads=args.threads or torch.get_num_threads(), ours_dtype=ours_dtype,
                repeats=args.repeats, warmup=args.warmup, mem_repeats=args.mem_repeats,
                mem_budget_gb=(round(args.mem_budget_bytes / 1e9, 1) if args.mem_budget_bytes else None),
                mem_method=("torch.cuda.max_memory_allocated delta" if device.startswith("cuda") else
                            "peak RSS growth (VmHWM reset, allocator settled)"),
                isolation="in-process" if args.in_process else "one subprocess per measurement",
                date=time.strftime("%Y-%m-%d %H:%M:%S"), load_start=list(os.getloadavg()),
                released_reference=dict(image_448x336_s=RELEASED_IMAGE_448X336_S))
    results = []
    print(f"{len(jobs)} measurement(s) on {meta['device_name']} ({ours_dtype}); work dir {args.work_dir}", flush=True)
    for job in jobs:
        label = f"{job['part']:<10} N={job.get('n')!s:<5} C={job.get('c')!s:<4}"
        if job["part"] == "image":
            label = f"image      {job.get('image')}"
        elif job["part"] == "crops":
            label = f"crops      {job['vfm']:<6} C={job.get('c')!s:<4} {job['batch']} crop(s)"
        elif job["part"] in sam3_workloads.SAM3_PARTS:
            label = f"{job['part']:<10} C={job.get('c')!s:<4} {job.get('variant') or ''} K={job.get('present') or '-'}"
        print(f"  {label} ...", end="", flush=True)
        res = run_job(job, args)
        results.append(res)
        if res.get("status") == "ok":
            mem, others = res.get("extra_mem_bytes"), res.get("other_cores")
            mem_text = "-" if mem is None else f"{mem / MB:,.0f} MB"
            others_text = "-" if others is None else f"{others:.2f}"
            flop_text = "" if not res.get("flops") else f", {res['flops'] / 1e9:,.0f} GFLOP"
            print(f" {res['median_s']:.3f} s (min {res['min_s']:.3f}, max {res['max_s']:.3f}), extra {mem_text}"
                  f"{flop_text}, other processes used {others_text} cores", flush=True)
        else:
            print(f" {res['status']}: {res.get('reason')}", flush=True)
        _write(args, meta, results, quiet=True)
    report = _write(args, meta, results)
    for r in report["sam3"]:
        if r.get("added_time") is not None:
            peak = r.get("added_peak_bytes")
            print(f"SAM3 {r['part']} {r.get('variant')} K={r.get('present')}: adds {100 * r['added_time']:.1f}% time"
                  + ("" if r.get("added_flops") is None else f", {100 * r['added_flops']:.1f}% FLOPs")
                  + ("" if peak is None else f", {peak / MB:+,.0f} MB peak") + " to the crop forward")
    for r in crop_memory_rows(results):
        print(f"{r['vfm']} proxy, C={r['c']}: extra peak {_fmt_mb(r['one'])} MB for 1 crop, {_fmt_mb(r['many'])} MB "
              f"for {r['batch'] or '-'}; {_fmt_mb(r['per_crop'])} MB per further crop; estimate "
              f"{_fmt_mb(r.get('estimate'))} MB per crop")
    rows = report["ratios"]
    for r in rows:
        bits = []
        if r.get("speedup"):
            bits.append(f"ours/naive time {1 / r['speedup']:.4f} ({r['speedup']:.1f}x faster)")
        if r.get("mem_ratio"):
            bits.append(f"ours/naive memory {1 / r['mem_ratio']:.4f} ({r['mem_ratio']:.1f}x less)")
        if r.get("fsa_share_of_whole") is not None:
            bits.append(f"FSA/whole-forward {100 * r['fsa_share_of_whole']:.1f}%")
        if r.get("fsa_added_block") is not None:
            bits.append(f"FSA adds {100 * r['fsa_added_block']:.1f}% (block)")
        if r.get("fsa_added_whole") is not None:
            bits.append(f"{100 * r['fsa_added_whole']:.1f}% (whole)")
        if bits:
            print(f"N={r['n']} C={r['c']}: " + "; ".join(bits))
    return 0


def _write(args, meta, results, quiet: bool = False) -> Dict:
    report = dict(meta=meta, results=results, ratios=ratios(results), sam3=sam3_ratios(results))
    json_path, md_path = args.work_dir / f"{args.name}.json", args.work_dir / f"{args.name}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    text = markdown(report)
    md_path.write_text(text)
    if not quiet:
        print("\n" + text)
        print(f"written: {json_path}, {md_path}")
    return report


def render(args) -> int:
    """Merge saved reports (e.g. the grid and the per-image runs) into one JSON + markdown."""
    reports = [json.loads(Path(p).read_text()) for p in args.render]
    meta = dict(reports[0]["meta"])
    meta["command"] = " ; ".join(r["meta"]["command"] for r in reports)
    results = [dict(res, cfg_options=res.get("cfg_options", r["meta"].get("cfg_options") or {}))
               for r in reports for res in r["results"]]
    args.work_dir = Path(args.work_dir)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    _write(args, meta, results)
    return 0


def _display_path(path: str) -> str:
    return shown_path(path)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _torch_device(name: str):
    import torch

    return torch.device(name)


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))

"""The prepared GPU check (``tools/gpu_check.py``): what fsa-seg does on a CUDA GPU, in one run of a few minutes.

On random weights at the real shapes (OpenAI ViT-B/16, 336-pixel crops; nothing is downloaded) it measures

1. **agreement** of fp16 and bf16 with fp32 on the same GPU, for every segmentor (``CLIPSegModel`` with each
   base method, ProxyCLIP with the SAM, DINO, DINOv2 and MAE proxies), and of fp32 on the GPU with fp32 on the
   CPU for ProxyCLIP-SAM:

   * the FSA core: the fp32 model's last-block inputs ``A0``, ``V`` of one crop, cast to the dtype, through that
     dtype's head and ``FeedbackSelfAdaptiveAttention``: the share of ``A_fb`` entries that the top-p pruning
     keeps (or drops) alike, the rows kept identically, max ``|dA_fb|``, the FSA output's relative difference
     and the patch labels. The torch calls of ``A_fb`` are recorded, so each row says which branches ran
     (CUDA: torch's sort, the count of kept entries, the KL in float64; CPU: numpy's sort, a binary search);
   * the per-crop scores (``CLIPSegModel.crop_scores`` of one crop): the share of pixels with the same label
     (argmax over the classes, no background threshold), max ``|difference|`` of the class probabilities and
     the largest fp32 top-2 margin among the pixels whose label changed;

   the fp32 references run without TF32;
2. **the benchmark grid** (``fsa_seg.perf``, in this process): the FSA step against the released
   formulation, the last block with and without FSA and the whole per-crop forward, at N in {441, 1764, 4096}
   and C in {21, 171}, with peak CUDA memory; ours in fp16, the released formulation in fp32;
3. **one image end to end** (``CLIPSegModel.predict``): a generated 448 x 336 image, SAM proxy, VOC21's 46
   queries, FSA on, fp16.

``dry_run`` runs the same code on the CPU with a tiny CLIP, tiny proxies and small N, and bf16 only (the
package runs no fp16 on the CPU). ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` are rewritten after every
measurement, so a run stopped early keeps what it measured. No measurement starts when the wall-time budget
would be passed (the longest one of its kind so far is the estimate); those are listed as not measured.

Needs torch, open_clip, timm and segment-anything only: no mmseg, mmcv, mmengine or transformers.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import io
import json
import os
import platform
import re
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..diagnostics import env_info
from . import memory, runner, workloads
from ..clip_model import CLIPSegModel, CropFeatures
from ..fsa import FSAParams, attend, merge_heads

# The model keys of configs/fsa_proxy_sam_voc.py (FSA-ProxyCLIP, SAM proxy, ViT-B/16, VOC21), without ``type``;
# no mmengine here to read the config with (tests/test_gpu_check.py keeps the two equal).
MODEL_KEYS: Dict = dict(
    clip_model="ViT-B-16", clip_pretrained="openai", clip_checkpoint=None, base_method="proxyclip",
    base_method_cfg={}, vfm="sam", vfm_checkpoint=None, beta=1.2, gamma=3.0, fsa=True, top_p=FSAParams.top_p,
    lamda=FSAParams.lamda, name_path="voc21", templates="openai_imagenet", prob_thd=0.2, area_thd=None,
    renormalize=False, logit_scale=40.0, slide_crop=336, slide_stride=112, patch_fit="pad", pamr=False,
    pamr_steps=10, pamr_dilations=(8, 16), precision="auto", device=None, random_weights=False)

SECTIONS = ("agreement", "image", "grid")
DEFAULT_BUDGET_S = 420.0
NO_CUDA_MESSAGE = "no CUDA device: the GPU check needs one, nothing was measured (--dry-run runs it on the CPU)"
# Which branches of fsa_seg.fsa._adaptive_rows a device takes (see fsa_branches).
EXPECTED_BRANCHES = {"cuda": dict(kl_dtype="float64", sort="torch.sort", keep_count="count"),
                     "cpu": dict(kl_dtype="float64", sort="numpy", keep_count="searchsorted")}


@dataclass(frozen=True)
class Segmentor:
    """A ``CLIPSegModel`` of the check: a base method, with FSA, and its proxy (ProxyCLIP)."""

    base_method: str
    vfm: Optional[str] = None

    @property
    def name(self) -> str:
        return f"{self.base_method}+{self.vfm}" if self.vfm else self.base_method


@dataclass(frozen=True)
class CheckPlan:
    """What one run measures, and where."""

    device: str                         # where the compared dtypes run: 'cuda' (or 'cpu' in the dry run)
    dtypes: Tuple[str, ...]             # each compared with fp32 on ``device``
    clip_model: str
    crop: int                           # crop side of the agreement rows and the grid (slide_crop)
    segmentors: Tuple[Segmentor, ...]   # the first is also compared fp32 on ``device`` vs fp32 on the CPU
    grid_n: Tuple[int, ...]
    grid_c: Tuple[int, ...]
    grid_vfm: Optional[str]             # proxy of the whole-forward parts (None: the one giving N)
    image_vfm: str
    image_size: Tuple[int, int]         # W x H of the generated image
    repeats: int
    warmup: int


CUDA_PLAN = CheckPlan(
    device="cuda", dtypes=("fp16", "bf16"), clip_model="ViT-B-16", crop=336,
    segmentors=(Segmentor("proxyclip", "sam"), Segmentor("proxyclip", "dino"), Segmentor("proxyclip", "dinov2"),
                Segmentor("proxyclip", "mae"), Segmentor("vanilla"), Segmentor("maskclip"), Segmentor("sclip"),
                Segmentor("clearclip"), Segmentor("naclip")),
    grid_n=(4096, 1764, 441), grid_c=(21, 171), grid_vfm=None, image_vfm="sam", image_size=(448, 336),
    repeats=10, warmup=2)

# The CPU dry run: the same code on tiny models (tiny-ViT-16: patch 16, width 64; the tiny DINO proxy), small N.
DRY_PLAN = CheckPlan(
    device="cpu", dtypes=("bf16",), clip_model="tiny-ViT-16", crop=64,
    segmentors=(Segmentor("proxyclip", "tiny-dino"), Segmentor("vanilla"), Segmentor("maskclip"),
                Segmentor("sclip"), Segmentor("clearclip"), Segmentor("naclip")),
    grid_n=(16, 64), grid_c=(3, 21), grid_vfm="tiny-dino", image_vfm="tiny-dino", image_size=(96, 64),
    repeats=1, warmup=1)


def model_config(plan: CheckPlan) -> Dict:
    """The config's model keys for ``plan``: random weights, its CLIP, crop, device and the image's proxy."""
    return dict(MODEL_KEYS, clip_model=plan.clip_model, slide_crop=plan.crop, vfm=plan.image_vfm,
                random_weights=True, device=plan.device)


# ------------------------------------------------------------------------------------------ budget
class Budget:
    """Wall time left: a measurement starts only if the longest one of its kind so far still fits."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.start = time.perf_counter()
        self.longest: Dict[str, float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, kind: str) -> bool:
        return self.elapsed() + self.longest.get(kind, 0.0) <= self.seconds

    def record(self, kind: str, seconds: float) -> None:
        self.longest[kind] = max(self.longest.get(kind, 0.0), seconds)


# ------------------------------------------------------------------------------------------ branches
class TorchCallRecorder(TorchFunctionMode):
    """Records the torch functions called inside the ``with`` block: name, dtypes and devices of the tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[Tuple[str, Tuple[str, ...], Tuple[str, ...]]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        self.calls.append((getattr(func, "__name__", str(func)),
                           tuple(str(t.dtype).replace("torch.", "") for t in tensors),
                           tuple(t.device.type for t in tensors)))
        return func(*args, **kwargs)


def fsa_branches(calls: Sequence[Tuple[str, Tuple[str, ...], Tuple[str, ...]]]) -> Dict[str, str]:
    """Which branches one ``A_fb`` computation took, from its recorded torch calls: the dtype of the KL product
    (its only ``bmm``), the sort (torch's, or numpy's via ``Tensor.numpy``) and how the kept entries were
    counted (``searchsorted`` on the CPU's monotone cumsum, else a count of ``cum_mass <= top_p``)."""
    names = {name for name, _, _ in calls}
    kl = sorted({dtype for name, dtypes, _ in calls if name == "bmm" for dtype in dtypes})
    return dict(kl_dtype=",".join(kl) or "none",
                sort="numpy" if "numpy" in names else "torch.sort" if "sort" in names else "none",
                keep_count="searchsorted" if "searchsorted" in names else "count" if "__le__" in names else "none")


# ------------------------------------------------------------------------------------------ agreement
@contextlib.contextmanager
def _quiet_build():
    """Model builds print a random-weights banner each (the report says so once)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _full_fp32():
    """fp32 references in full fp32: no TF32 in CUDA matrix products or convolutions (cuDNN's default is TF32)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def build_segmentor(cfg: Dict, seg: Segmentor, precision: str, device: str, seed: int = 0) -> CLIPSegModel:
    """The segmentor with seeded random weights: initialised on the CPU in fp32 whatever ``precision`` and
    ``device``, so builds with the same seed hold the same weights before the cast."""
    torch.manual_seed(seed)
    with _quiet_build():
        return workloads.build_model(cfg, dict(base_method=seg.base_method, vfm=seg.vfm, precision=precision,
                                                device=device))


def noise_crop(side: int, seed: int = 0) -> Tensor:
    """One normalised crop ``[1, 3, side, side]`` (fp32, CPU) of seeded Gaussian noise: with random weights a
    smooth image makes every proxy token alike (on small crops so alike that ProxyCLIP masks whole rows)."""
    return torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _cast_features(features: CropFeatures, device, dtype) -> CropFeatures:
    proxy = features.proxy.to(device, dtype) if features.proxy is not None else None
    return CropFeatures(features.tokens.to(device, dtype), features.grid, proxy)


def _patch_labels(model: CLIPSegModel, attended: Tensor, head, patch_tokens: slice) -> Tensor:
    logits = head(merge_heads(attended))[0, patch_tokens].float()     # [n, Q]
    return model.class_probabilities(logits.t()[:, :, None]).argmax(dim=0)[:, 0]


@torch.no_grad()
def fsa_core_outputs(model: CLIPSegModel, features: CropFeatures, a0: Tensor, v: Tensor) -> Dict:
    """``A_fb`` (in the probabilities' dtype, fp32), the FSA output and the patch labels of ``model``'s FSA on
    the given ``a0``, ``v`` with its own head for ``features``; the torch calls of ``A_fb`` are recorded."""
    out, head = model.last_block(features)
    a0_v = attend(a0, v)
    recorder = TorchCallRecorder()
    with recorder:
        a_fb = model.fsa.feedback(a0_v, v, head)
    attended = model.fsa(a0, v, head, a0_v=a0_v)
    return dict(a_fb=a_fb, attended=attended, labels=_patch_labels(model, attended, head, out.patch_tokens),
                branches=fsa_branches(recorder.calls))


def compare_core(ref: Dict, test: Dict, device) -> Dict:
    """Agreement of two :func:`fsa_core_outputs` (``ref`` moved to ``test``'s device)."""
    a_ref, a_test = ref["a_fb"].to(device, torch.float32), test["a_fb"].float()
    same = (a_ref > 0) == (a_test > 0)
    out_ref, out_test = ref["attended"].to(device, torch.float32), test["attended"].float()
    return dict(
        n=int(a_ref.shape[-1]),
        kept_per_row=round(float((a_ref > 0).sum(dim=-1).float().mean()), 1),
        kept_same_pct=100.0 * float(same.float().mean()),
        rows_same_pct=100.0 * float(same.all(dim=-1).float().mean()),
        a_fb_max_abs_diff=float((a_ref - a_test).abs().max()),
        out_rel_diff=float((out_ref - out_test).abs().max() / out_ref.abs().max().clamp_min(1e-30)),
        patch_labels_same_pct=100.0 * float((ref["labels"].to(device) == test["labels"]).float().mean()),
        branches=test["branches"], ref_branches=ref["branches"])


@torch.no_grad()
def crop_probabilities(model: CLIPSegModel, crop: Tensor) -> Tensor:
    """Class probabilities ``[K, h, w]`` (fp32) of one crop's scores (``CLIPSegModel.crop_scores``)."""
    scores = model.crop_scores(crop.to(model.run_device, model.run_dtype))
    return model.class_probabilities(scores[0].float())


def compare_scores(probs_ref: Tensor, probs_test: Tensor) -> Dict:
    """Label agreement (argmax over classes) and probability differences of two ``[K, h, w]`` maps."""
    probs_ref = probs_ref.to(probs_test.device)
    labels_ref, labels_test = probs_ref.argmax(dim=0), probs_test.argmax(dim=0)
    same = labels_ref == labels_test
    top2 = probs_ref.topk(2, dim=0).values if probs_ref.shape[0] > 1 else None
    margin = (top2[0] - top2[1]) if top2 is not None else None
    diff = (probs_ref - probs_test).abs()
    return dict(
        pixels=int(same.numel()), classes=int(probs_ref.shape[0]),
        labels_same_pct=100.0 * float(same.float().mean()),
        max_prob_diff=float(diff.max()), mean_prob_diff=float(diff.mean()),
        nonfinite=int((~torch.isfinite(probs_test)).sum()),
        ref_margin_median=float(margin.median()) if margin is not None else None,
        changed_max_ref_margin=(float(margin[~same].max()) if margin is not None and not bool(same.all()) else None))


def _release(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


@torch.no_grad()
def last_block_inputs(model: CLIPSegModel, crop: Tensor) -> Tuple[CropFeatures, Tensor, Tensor]:
    """What ``model`` feeds its last block and FSA for ``crop``: the crop features, ``A0`` and ``V``."""
    features = model.crop_features(crop.to(model.run_device, model.run_dtype))
    block = model.last_block(features)[0]
    return features, block.a0, block.v


def model_outputs(model: CLIPSegModel, crop: Tensor, inputs: Tuple[CropFeatures, Tensor, Tensor]) -> Dict:
    """``model``'s FSA core on ``inputs`` (cast to its device and dtype) and its class probabilities of ``crop``."""
    features, a0, v = inputs
    device, dtype = model.run_device, model.run_dtype
    core = fsa_core_outputs(model, _cast_features(features, device, dtype), a0.to(device, dtype), v.to(device, dtype))
    return dict(core=core, probs=crop_probabilities(model, crop), device=device,
                label=f"{str(dtype).replace('torch.', '')} {device.type}")


def agreement_row(seg: Segmentor, plan: CheckPlan, ref: Dict, test: Dict, queries: int) -> Dict:
    core = compare_core(ref["core"], test["core"], test["device"])
    core["branches_expected"] = core["branches"] == EXPECTED_BRANCHES[test["device"].type]
    return dict(segmentor=seg.name, base_method=seg.base_method, vfm=seg.vfm, queries=queries, crop=plan.crop,
                reference=ref["label"], compared=test["label"], core=core,
                scores=compare_scores(ref["probs"], test["probs"]))


def agreement_rows(plan: CheckPlan, seg: Segmentor, cfg: Dict, cross_device: bool) -> List[Dict]:
    """One segmentor's rows: each of ``plan.dtypes`` against fp32 on ``plan.device`` (same inputs: the fp32
    model's features, ``A0`` and ``V``, cast); with ``cross_device``, fp32 on ``plan.device`` against fp32 on
    the CPU (same weights; in the dry run a second CPU build, which must agree exactly)."""
    rows = []
    with _full_fp32():
        ref_model = build_segmentor(cfg, seg, "fp32", plan.device)
        crop = noise_crop(plan.crop)
        inputs = last_block_inputs(ref_model, crop)
        ref = model_outputs(ref_model, crop, inputs)
        queries = int(ref_model.num_queries)
        for precision in plan.dtypes:
            model = build_segmentor(cfg, seg, precision, plan.device)
            rows.append(agreement_row(seg, plan, ref, model_outputs(model, crop, inputs), queries))
            del model
            _release(plan.device)
        if cross_device:
            cpu_model = build_segmentor(cfg, seg, "fp32", "cpu")
            cpu_inputs = last_block_inputs(cpu_model, crop)
            cpu = model_outputs(cpu_model, crop, cpu_inputs)
            del cpu_model
            rows.append(agreement_row(seg, plan, cpu, model_outputs(ref_model, crop, cpu_inputs), queries))
        del ref_model, ref
        _release(plan.device)
    return rows


# ------------------------------------------------------------------------------------------ grid and image
def benchmark_args(plan: CheckPlan, cfg: Dict, work_dir: str, image: bool) -> argparse.Namespace:
    """The options of tools/benchmark.py for the grid (``image=False``) or the generated image, in-process."""
    device = torch.device(plan.device)
    available = memory.available_bytes(device if device.type == "cuda" else None)
    return argparse.Namespace(
        parts="" if image else ",".join(runner.ALL_PARTS),
        cfg_options={"model.vfm": plan.grid_vfm} if (plan.grid_vfm and not image) else {},
        n=list(plan.grid_n), c=list(plan.grid_c), mem_budget_bytes=int(0.9 * available) if available else None,
        image="generated" if image else None, image_size="{}x{}".format(*plan.image_size), image_short_side=0,
        model_cfg=cfg, overrides={}, work_dir=work_dir, warmup=plan.warmup, repeats=plan.repeats, mem_repeats=1,
        threads=None, real_weights=False, wait_quiet=0.0, in_process=True, timeout=None)


def _job_label(job: Dict) -> str:
    if job["part"] == "image":
        return "image {}x{}".format(*job["image_size"])
    return f"{job['part']} N={job['n']} C={job['c']}" + (f" {job['vfm']}" if job.get("vfm") else "")


# ------------------------------------------------------------------------------------------ report
def machine_meta(plan: CheckPlan) -> Dict:
    """The machine and the package versions (and where each package is imported from)."""
    meta = dict(python=platform.python_version(), torch=torch.__version__, torch_cuda=torch.version.cuda,
                cpu=f"{env_info.cpu_model()} ({os.cpu_count()} logical CPUs)", torch_threads=torch.get_num_threads(),
                nvidia_driver=env_info.nvidia_driver())
    if plan.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        meta.update(device_name=props.name, device_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    else:
        meta["device_name"] = meta["cpu"]
    return meta


def package_origins() -> Dict[str, Dict[str, Optional[str]]]:
    """Version and folder of the packages the check runs on (the wheels' copies or the machine's own)."""
    packages = {}
    for module, dist in (("open_clip", "open_clip_torch"), ("timm", "timm"), ("segment_anything", "segment-anything"),
                         ("torchvision", "torchvision"), ("numpy", "numpy"), ("huggingface_hub", "huggingface-hub")):
        loaded = sys.modules.get(module)
        path = getattr(loaded, "__file__", None) if loaded else None
        packages[module] = dict(version=env_info.package_version(dist),
                                path=os.path.dirname(os.path.dirname(path)) if path else None)
    return packages


def imported_distributions() -> Dict[str, str]:
    """The installed distributions whose modules this process imported, with their versions."""
    owners = importlib.metadata.packages_distributions()
    found: Dict[str, str] = {}
    for module, loaded in list(sys.modules.items()):
        if loaded is None:  # a failed (or blocked) import leaves None
            continue
        for dist in owners.get(module.partition(".")[0], ()):
            found.setdefault(dist, env_info.package_version(dist))
    return dict(sorted(found.items()))


def _pct(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return "100%" if x == 100.0 else f"{x:.3f}%"


def _sci(x: Optional[float]) -> str:
    return "-" if x is None else ("0" if x == 0 else f"{x:.1e}")


def agreement_markdown(rows: List[Dict]) -> List[str]:
    if not rows:
        return []
    out = ["## Agreement with fp32\n",
           "Random weights at the real shapes, one crop of seeded Gaussian noise. FSA core: the reference's last-block "
           "`A0`, `V` cast to the compared dtype, through its head and FSA; `kept alike` = entries of `A_fb` the top-p "
           "pruning keeps or drops alike, `rows alike` = rows whose kept set is identical, `out` = relative max "
           "difference of the FSA output, `branches` = KL dtype / sort / kept count that ran. Crop: labels = argmax "
           "over the classes of the per-crop scores (no background threshold); `margin` = the largest fp32 top-2 "
           "probability margin among the pixels whose label changed (random weights give small margins).\n",
           "| segmentor | C | compared | reference | N | kept/row | kept alike | rows alike | max dA_fb | out | "
           "patch labels | branches | pixel labels | max dprob | margin | non-finite |",
           "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        c, s = r["core"], r["scores"]
        b = c["branches"]
        branches = f"{b['kl_dtype']} / {b['sort']} / {b['keep_count']}" + ("" if c["branches_expected"] else " (!)")
        out.append(f"| {r['segmentor']} | {r['queries']} | {r['compared']} | {r['reference']} | {c['n']} | "
                   f"{c['kept_per_row']} | {_pct(c['kept_same_pct'])} | {_pct(c['rows_same_pct'])} | "
                   f"{_sci(c['a_fb_max_abs_diff'])} | {_sci(c['out_rel_diff'])} | {_pct(c['patch_labels_same_pct'])} | "
                   f"{branches} | {_pct(s['labels_same_pct'])} | {_sci(s['max_prob_diff'])} | "
                   f"{_sci(s['changed_max_ref_margin'])} | {s['nonfinite']} |")
    return out


def markdown(report: Dict) -> str:
    meta = report["meta"]
    out = ["# fsa-seg GPU check\n",
           f"{meta['mode']}: {meta['device_name']}; torch {meta['torch']} (CUDA {meta['torch_cuda']}), python "
           f"{meta['python']}; {meta['date']}. Random weights at the real shapes (no pretrained weights): the "
           f"numbers check precision, branches, speed and memory, not accuracy. {meta['elapsed_s']:.0f} s of a "
           f"{meta['budget_s']:.0f} s budget.\n",
           f"Command: `{meta['command']}`\n"]
    for section in (agreement_markdown(report["agreement"]), runner.image_markdown(report["image"]),
                    runner.grid_markdown(report["grid"]["results"])):
        out += [""] + section if section else []
    if report["not_measured"]:
        out += ["\n## Not measured\n"] + [f"- {u['kind']}: {u['label']} ({u['reason']})" for u in report["not_measured"]]
    if report["failed"]:
        out += ["\n## Failed\n"] + [f"- {u['kind']}: {u['label']}: {u['error']}" for u in report["failed"]]
    if meta.get("packages"):
        out += ["\n## Packages\n", ", ".join(f"{name} {p['version']} ({p['path'] or 'not imported'})"
                                             for name, p in meta["packages"].items())]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)) + "\n"


def write_report(report: Dict, out_dir: Path) -> None:
    report["meta"]["elapsed_s"] = round(report["_budget"].elapsed(), 1)
    report["grid"]["ratios"] = runner.ratios(report["grid"]["results"])
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    (out_dir / "gpu_check.json").write_text(json.dumps(public, indent=2, default=str))
    (out_dir / "gpu_check.md").write_text(markdown(public))


# ------------------------------------------------------------------------------------------ the run
def _units(plan: CheckPlan, cfg: Dict, work_dir: str, sections: Sequence[str]) -> List[Tuple[str, str, Callable]]:
    """``(kind, label, run)`` in the order they run: agreement, the image, the grid (largest N first)."""
    units: List[Tuple[str, str, Callable]] = []
    if "agreement" in sections:
        for i, seg in enumerate(plan.segmentors):
            units.append(("agreement", seg.name,
                          lambda seg=seg, cross=(i == 0): agreement_rows(plan, seg, cfg, cross_device=cross)))
    for kind, image in (("image", True), ("grid", False)):
        if kind in sections:
            args = benchmark_args(plan, cfg, work_dir, image=image)
            for job in runner.plan(args, cfg):
                units.append((kind, _job_label(job), lambda job=job, args=args: _quiet_job(job, args)))
    return units


def _quiet_job(job: Dict, args: argparse.Namespace) -> Dict:
    with _quiet_build():
        return runner.run_job(job, args)


def _record(report: Dict, kind: str, result) -> None:
    if kind == "agreement":
        report["agreement"].extend(result)
    elif kind == "image":
        report["image"].append(result)
    else:
        report["grid"]["results"].append(result)


def _summary(kind: str, label: str, result, seconds: float) -> str:
    if kind == "agreement":
        return "; ".join(f"{r['compared']} vs {r['reference']}: labels {_pct(r['scores']['labels_same_pct'])}, "
                         f"max dprob {_sci(r['scores']['max_prob_diff'])}, A_fb kept alike "
                         f"{_pct(r['core']['kept_same_pct'])}" for r in result) + f" ({seconds:.1f} s)"
    if result.get("status") != "ok":
        return f"{result.get('status')}: {result.get('reason')}"
    mem = result.get("extra_mem_bytes")
    return (f"median {result['median_s']:.4f} s, extra {'-' if mem is None else f'{mem / 1e6:,.0f} MB'} "
            f"({seconds:.1f} s)")


def run_check(out_dir: str, dry_run: bool = False, budget_s: float = DEFAULT_BUDGET_S,
              sections: Sequence[str] = SECTIONS, command: str = "") -> int:
    """Run the check (or, without CUDA and without ``dry_run``, say so and return 0); write the report."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if budget_s < 0:
        raise ValueError(f"the budget must be >= 0 seconds, got {budget_s}")
    if not dry_run and not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE)
        warning = env_info.gpu_diagnosis()
        if warning:
            print(f"warning: {warning}")
        return 0
    plan = DRY_PLAN if dry_run else CUDA_PLAN
    cfg = model_config(plan)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(budget_s)
    report = dict(meta=dict(machine_meta(plan), mode="dry run on the CPU" if dry_run else "CUDA", command=command,
                            date=time.strftime("%Y-%m-%d %H:%M:%S"), budget_s=budget_s, plan=asdict(plan),
                            model=cfg),
                  agreement=[], image=[], grid=dict(results=[], ratios=[]), not_measured=[], failed=[],
                  _budget=budget)
    print(f"GPU check ({report['meta']['mode']}, {report['meta']['device_name']}): random weights, budget "
          f"{budget_s:.0f} s, writing {out / 'gpu_check.json'} and gpu_check.md", flush=True)
    with tempfile.TemporaryDirectory() as work_dir:  # the benchmark's class-name files
        for kind, label, run in _units(plan, cfg, work_dir, sections):
            if not budget.allows(kind):
                report["not_measured"].append(dict(kind=kind, label=label, reason=(
                    f"budget: {budget.elapsed():.0f} s spent of {budget_s:.0f} s")))
                print(f"  {kind} {label}: not measured (budget)", flush=True)
                continue
            start = time.perf_counter()
            try:
                result = run()
            except Exception as err:  # report it and go on with the next measurement
                report["failed"].append(dict(kind=kind, label=label, error=f"{type(err).__name__}: {err}"))
                print(f"  {kind} {label}: failed: {type(err).__name__}: {err}", flush=True)
                _release(plan.device)
                continue
            seconds = time.perf_counter() - start
            budget.record(kind, seconds)
            _record(report, kind, result)
            print(f"  {kind} {label}: {_summary(kind, label, result, seconds)}", flush=True)
            write_report(report, out)
    report["meta"].update(packages=package_origins(), imported_distributions=imported_distributions())
    write_report(report, out)
    print(f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.md'} ({budget.elapsed():.0f} s)", flush=True)
    return 0

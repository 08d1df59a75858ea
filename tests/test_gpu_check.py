"""The prepared GPU check (fsa_seg/perf/gpu_check.py, tools/gpu_check.py, tools/gpu_check_wheels.sh) in its CPU dry mode:
the report's fields, that the agreement numbers are computed (not constants), the branches it records, the
budget, the exit without CUDA, and that it needs no network, no cache, no mmseg/mmcv/mmengine/transformers and
no package outside its wheel list. Timings are never checked."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fsa_seg.perf import gpu_check
from fsa_seg.fsa import FSAParams, feedback_attention
from tooling import run_tool

REPO = Path(__file__).resolve().parents[1]

# Runs the dry check in a clean process where the network is refused (and every attempt counted), mmseg, mmcv,
# mmengine and transformers cannot be imported, and the caches are empty folders.
GUARDED_RUN = r"""
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[-1:]))
    raise OSError("network use in the GPU check")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = socket.create_connection = refuse
for name in ("mmcv", "mmengine", "mmseg", "transformers"):
    sys.modules[name] = None  # import fails as if not installed
from fsa_seg.perf.gpu_check import run_check
code = run_check(sys.argv[1], dry_run=True, command="guarded dry run")
print("network attempts:", len(attempts), attempts[:3])
sys.exit(code)
"""
CACHE_VARS = ("HOME", "XDG_CACHE_HOME", "TORCH_HOME", "HF_HOME", "FSA_SEG_CACHE")


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    """The dry run's report, markdown, output and the cache folders it was given."""
    root = tmp_path_factory.mktemp("gpu_check")
    caches = {var: root / var.lower() for var in CACHE_VARS}
    for folder in caches.values():
        folder.mkdir()
    env = dict(os.environ, **{k: str(v) for k, v in caches.items()}, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    env.pop("HF_HUB_OFFLINE", None)
    out = root / "out"
    done = subprocess.run([sys.executable, "-c", GUARDED_RUN, str(out)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    return dict(report=report, md=(out / "gpu_check.md").read_text(), stdout=done.stdout, caches=caches, out=out)


def _rows(report, compared):
    return [r for r in report["agreement"] if r["compared"] == compared]


@pytest.mark.slow
def test_dry_run_writes_the_report(dry):
    report, md = dry["report"], dry["md"]
    assert sorted(os.listdir(dry["out"])) == ["gpu_check.json", "gpu_check.md"]
    meta = report["meta"]
    for key in ("mode", "device_name", "torch", "python", "date", "budget_s", "elapsed_s", "plan", "model",
                "command", "packages", "imported_distributions"):
        assert key in meta, key
    assert meta["mode"] == "dry run on the CPU" and meta["plan"]["device"] == "cpu"
    assert meta["model"]["random_weights"] is True and meta["model"]["name_path"] == "voc21"
    assert report["failed"] == [] and report["not_measured"] == []
    for heading in ("# fsa-seg GPU check", "## Agreement with fp32", "## Per image (end to end)", "## Measurements",
                    "## Ratios", "## Packages"):
        assert heading in md, heading
    # every segmentor of the plan, bf16 against fp32; the first one also fp32 against a second fp32 build
    names = [s["base_method"] + (f"+{s['vfm']}" if s["vfm"] else "") for s in meta["plan"]["segmentors"]]
    assert [r["segmentor"] for r in _rows(report, "bfloat16 cpu")] == names
    assert [r["segmentor"] for r in _rows(report, "float32 cpu")] == names[:1] == ["proxyclip+tiny-dino"]
    for r in report["agreement"]:
        assert f"| {r['segmentor']} | 46 | {r['compared']} | {r['reference']} | {r['core']['n']} |" in md


@pytest.mark.slow
def test_dry_run_agreement_numbers_are_measured(dry):
    report = dry["report"]
    for r in report["agreement"]:
        core, scores = r["core"], r["scores"]
        assert r["queries"] == 46 and scores["classes"] == 21 and scores["pixels"] == 64 * 64
        # tiny-dino on a 64 crop: 8 x 8 proxy tokens; CLIP-native methods: the 4 x 4 patches and the class token
        assert core["n"] == (64 if r["vfm"] else 17), r
        assert 0 < core["kept_per_row"] < core["n"], r     # top-p pruning keeps some entries, never all
        assert scores["nonfinite"] == 0 and 0 <= scores["max_prob_diff"] <= 1
        for key in ("kept_same_pct", "rows_same_pct", "patch_labels_same_pct"):
            assert 0 <= core[key] <= 100
    (exact,) = _rows(report, "float32 cpu")
    assert exact["reference"] == "float32 cpu"
    assert exact["scores"]["labels_same_pct"] == 100.0 and exact["scores"]["max_prob_diff"] == 0.0
    assert exact["core"]["kept_same_pct"] == exact["core"]["rows_same_pct"] == 100.0
    assert exact["core"]["a_fb_max_abs_diff"] == 0.0 and exact["core"]["out_rel_diff"] == 0.0
    bf16 = _rows(report, "bfloat16 cpu")
    for r in bf16:  # bf16 rounding shows in every segmentor's scores and FSA output
        assert r["scores"]["labels_same_pct"] < 100.0 or r["scores"]["max_prob_diff"] > 0.0, r
        assert r["scores"]["max_prob_diff"] > 1e-4 and r["core"]["out_rel_diff"] > 1e-4, r
        if r["scores"]["labels_same_pct"] < 100.0:  # a changed label has a fp32 margin below the max difference
            assert r["scores"]["changed_max_ref_margin"] <= 2 * r["scores"]["max_prob_diff"], r
    assert any(r["core"]["kept_same_pct"] < 100.0 for r in bf16)  # bf16 flips some top-p decisions


@pytest.mark.slow
def test_dry_run_records_the_cpu_branches(dry):
    for r in dry["report"]["agreement"]:
        assert r["core"]["branches"] == gpu_check.EXPECTED_BRANCHES["cpu"]
        assert r["core"]["ref_branches"] == gpu_check.EXPECTED_BRANCHES["cpu"]
        assert r["core"]["branches_expected"] is True
    assert "| float64 / numpy / searchsorted |" in dry["md"]


def test_fsa_branches_are_read_from_the_calls():
    recorder = gpu_check.TorchCallRecorder()
    with recorder:
        feedback_attention(torch.randn(1, 50, 5), torch.randn(1, 1, 5), FSAParams(chunk_elems=1000))
    assert gpu_check.fsa_branches(recorder.calls) == dict(kl_dtype="float64", sort="numpy", keep_count="searchsorted")
    # the calls of the CUDA branches (torch's sort, a count of cum_mass <= top_p) on an fp64 KL product
    cuda_calls = [("bmm", ("float64", "float64"), ("cuda", "cuda")), ("sort", ("float32",), ("cuda",)),
                  ("cumsum_", ("float32",), ("cuda",)), ("__le__", ("float32",), ("cuda",))]
    assert gpu_check.fsa_branches(cuda_calls) == gpu_check.EXPECTED_BRANCHES["cuda"]
    fp32_kl = [("bmm", ("float32", "float32"), ("mps", "mps")), ("sort", ("float32",), ("mps",))]
    assert gpu_check.fsa_branches(fp32_kl)["kl_dtype"] == "float32"


def test_agreement_metrics_on_known_maps():
    # 3 classes, 1 x 4 pixels; the compared map moves pixel 3 from class 0 to class 1 (fp32 margin 0.2)
    ref = torch.tensor([[[0.7, 0.1, 0.2, 0.5]], [[0.2, 0.8, 0.3, 0.3]], [[0.1, 0.1, 0.5, 0.2]]])
    test = ref.clone()
    test[:, 0, 3] = torch.tensor([0.3, 0.5, 0.2])
    m = gpu_check.compare_scores(ref, test)
    assert (m["pixels"], m["classes"], m["nonfinite"]) == (4, 3, 0)
    assert m["labels_same_pct"] == 75.0 and m["max_prob_diff"] == pytest.approx(0.2)
    assert m["changed_max_ref_margin"] == pytest.approx(0.2) and m["ref_margin_median"] == pytest.approx(0.2)  # torch: the lower middle
    assert gpu_check.compare_scores(ref, ref)["changed_max_ref_margin"] is None

    a_fb = torch.tensor([[[0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]]])
    other = a_fb.clone()
    other[0, 0] = torch.tensor([0.5, 0.3, 0.2])                    # row 0 keeps a third entry
    out = torch.ones(1, 2, 3, 4)
    ref_core = dict(a_fb=a_fb, attended=out, labels=torch.tensor([0, 1, 2]), branches={})
    test_core = dict(a_fb=other, attended=out * 1.1, labels=torch.tensor([0, 1, 1]), branches={"sort": "x"})
    c = gpu_check.compare_core(ref_core, test_core, torch.device("cpu"))
    assert c["n"] == 3 and c["kept_per_row"] == pytest.approx(6 / 3, abs=0.05)
    assert c["kept_same_pct"] == pytest.approx(100 * 8 / 9) and c["rows_same_pct"] == pytest.approx(100 * 2 / 3)
    assert c["a_fb_max_abs_diff"] == pytest.approx(0.2) and c["out_rel_diff"] == pytest.approx(0.1)
    assert c["patch_labels_same_pct"] == pytest.approx(100 * 2 / 3) and c["branches"] == {"sort": "x"}


@pytest.mark.slow
def test_dry_run_grid_and_image(dry):
    report = dry["report"]
    (image,) = report["image"]
    assert image["status"] == "ok" and (image["width"], image["height"]) == (96, 64)
    assert image["queries"] == 46 and image["crops"] == 2 and image["vfm"] == "tiny-dino" and image["n"] == 64
    results = report["grid"]["results"]
    assert all(r["status"] == "ok" for r in results), [r for r in results if r["status"] != "ok"]
    plan = report["meta"]["plan"]
    for n in plan["grid_n"]:
        for c in plan["grid_c"]:
            parts = {r["part"] for r in results if (r["n"], r["c"]) == (n, c)}
            assert parts >= {"base", "block_fsa", "fsa", "naive"}, (n, c, parts)
    assert {r["part"] for r in results if r["n"] == 64} >= {"whole", "whole_base"}  # tiny-dino: N = 64
    ratios = {(r["n"], r["c"]): r for r in report["grid"]["ratios"]}
    assert set(ratios) == {(n, c) for n in plan["grid_n"] for c in plan["grid_c"]}
    for r in ratios.values():
        assert r["speedup"] > 0
    assert ratios[(64, 3)]["fsa_share_of_whole"] > 0
    assert "| fsa | 16 | 3 |" in dry["md"] and "| generated | 96 x 64 |" in dry["md"]


@pytest.mark.slow
def test_dry_run_needs_no_network_cache_or_mmseg(dry):
    assert "network attempts: 0 []" in dry["stdout"]
    for var, folder in dry["caches"].items():
        assert list(folder.iterdir()) == [], f"the check wrote into ${var}"
    imported = {_norm(d) for d in dry["report"]["meta"]["imported_distributions"]}
    assert not imported & {"mmcv", "mmengine", "mmsegmentation", "transformers"}
    # everything it imported is torch, torchvision or what they need, or in the wheel list of a bare machine
    wheels = {_norm(line.split("==")[0]) for line in _wheels("--list", "--bare").stdout.split()}
    allowed = _closure(["torch", "torchvision"]) | wheels | {"fsa-seg"}
    # an allowed package may import an optional one that this environment happens to have (not needed there)
    optional = _closure(allowed, extras=True) - allowed
    assert imported - allowed - optional == set()
    assert imported & allowed, imported


@pytest.mark.slow
def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    done = run_tool("gpu_check", "--out", tmp_path / "out", env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert gpu_check.NO_CUDA_MESSAGE in done.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_budget_stops_adding_measurements(tmp_path):
    done = run_tool("gpu_check", "--dry-run", "--budget-s", "0", "--out", tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["agreement"] == [] and report["image"] == [] and report["grid"]["results"] == []
    kinds = [u["kind"] for u in report["not_measured"]]
    assert kinds.count("agreement") == len(gpu_check.DRY_PLAN.segmentors) and kinds.count("image") == 1
    assert kinds.count("grid") >= 4 * len(gpu_check.DRY_PLAN.grid_n) * len(gpu_check.DRY_PLAN.grid_c)
    assert all(u["reason"].startswith("budget") for u in report["not_measured"])
    assert "## Not measured" in (tmp_path / "gpu_check.md").read_text()


def test_budget_estimates_from_the_longest_of_a_kind():
    budget = gpu_check.Budget(100.0)
    assert budget.allows("grid")
    budget.record("grid", 60.0)
    budget.record("grid", 30.0)
    assert budget.longest["grid"] == 60.0 and budget.allows("image")
    budget.start -= 50.0  # 50 s spent: another 60 s grid job would end after the budget
    assert not budget.allows("grid") and budget.allows("image")


@pytest.mark.slow
def test_bad_options_get_one_line(tmp_path):
    done = run_tool("gpu_check", "--dry-run", "--out", tmp_path, "--sections", "grid,foo")
    assert done.returncode == 2
    assert done.stderr.startswith("error:") and "foo" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="budget"):
        gpu_check.run_check(str(tmp_path), dry_run=True, budget_s=-1)
    assert list(tmp_path.iterdir()) == []


def test_model_keys_are_the_configs():
    from mmengine.config import Config

    model = Config.fromfile(str(REPO / "configs" / "fsa_proxy_sam_voc.py")).model.to_dict()
    model.pop("type")
    assert _plain(model) == _plain(gpu_check.MODEL_KEYS)


def test_wheel_script_pins_and_dry_run(tmp_path):
    pins = dict(line.split("==") for line in _wheels("--list").stdout.split())
    required = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            required[_norm(name)] = version.strip()
    for name in ("open_clip_torch", "timm", "segment-anything"):  # the versions the tests run with
        assert pins[name] == required[_norm(name)], name
    assert {"ftfy", "wcwidth"} <= set(pins)
    bare = dict(line.split("==") for line in _wheels("--list", "--bare").stdout.split())
    assert set(pins) < set(bare) and {"regex", "huggingface_hub", "safetensors", "pyyaml", "tqdm"} <= set(bare)
    assert not {"torch", "torchvision", "numpy", "pillow"} & {_norm(n) for n in bare}  # the machine's own builds
    done = _wheels("--dry-run", "--dir", str(tmp_path / "whl"))
    assert not (tmp_path / "whl").exists()
    (download,) = [line for line in done.stdout.splitlines() if " pip download " in line]
    for flag in ("--no-deps", "--only-binary=:all:", "--python-version 3.12", "--implementation cp",
                 "--platform manylinux_2_28_x86_64", "--platform manylinux2014_x86_64"):
        assert flag in download, flag
    assert download.endswith(" ".join(f"{n}=={v}" for n, v in pins.items()))


# ----------------------------------------------------------------------------------------------- helpers
def _wheels(*args):
    done = subprocess.run(["bash", str(REPO / "tools" / "gpu_check_wheels.sh"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(names, extras=False):
    """The installed distributions ``names`` need (their requirements, transitively); with ``extras`` also what
    their optional extras name (a package imports those only when they happen to be installed, e.g. anyio trio)."""
    import importlib.metadata

    from packaging.requirements import Requirement

    seen, todo = set(), list(names)
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        options = [""] + (dist.metadata.get_all("Provides-Extra") or [] if extras else [])
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in options):
                todo.append(req.name)
    return seen


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

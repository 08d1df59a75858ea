"""Several processes: the backend for the device, and tools/dist_test.sh with 2 CPU ranks (torchrun, gloo)
giving exactly the 1-rank metric, from scratch and when resuming an interrupted run."""
import json
import os
import shutil
import socket
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from datagen import write_voc
from fsa_seg.distributed import EVAL_MODEL_WRAPPER, dist_backend, process_group_scope, setup_distributed

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "fsa_proxy_sam_voc21.py")
SIZES = [(48, 64), (40, 56), (48, 64), (56, 40), (48, 64), (44, 60), (48, 64), (52, 48)]


@pytest.mark.parametrize("requested, cuda, expected", [
    (None, True, "nccl"), ("nccl", True, "nccl"), ("gloo", True, "gloo"),  # CUDA: the config's choice
    (None, False, "gloo"), ("nccl", False, "gloo"),  # no CUDA: nccl cannot run
    ("mpi", False, "mpi"), ("gloo", False, "gloo"),
])
def test_dist_backend(requested, cuda, expected):
    assert dist_backend(requested, cuda) == expected


def test_setup_distributed_on_cuda_leaves_the_group_to_mmengine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = {"env_cfg": {"cudnn_benchmark": False, "dist_cfg": {"backend": "nccl", "timeout": 60}}}
    setup_distributed(cfg, "slurm")
    assert cfg["env_cfg"]["dist_cfg"] == {"backend": "nccl", "timeout": 60}
    assert cfg["model_wrapper_cfg"] == {"type": EVAL_MODEL_WRAPPER}  # DDP refuses a frozen model
    assert not torch.distributed.is_initialized()
    cfg = {"model_wrapper_cfg": {"type": "MyWrapper"}}
    setup_distributed(cfg, "pytorch")
    assert cfg["model_wrapper_cfg"] == {"type": "MyWrapper"} and cfg["env_cfg"]["dist_cfg"]["backend"] == "nccl"


def test_setup_distributed_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = {"env_cfg": {"dist_cfg": {"backend": "nccl"}}}
    setup_distributed(cfg, "none")
    assert cfg["env_cfg"]["dist_cfg"]["backend"] == "nccl"  # no launcher: untouched
    with pytest.raises(ValueError, match="--launcher slurm needs CUDA GPUs.*dist_test.sh"):
        setup_distributed(cfg, "slurm")
    assert cfg["env_cfg"]["dist_cfg"]["backend"] == "gloo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _open_one_rank_group() -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                                         world_size=1)


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo unavailable")
def test_process_group_scope_closes_only_the_group_it_saw_opened():
    dist = torch.distributed
    assert not dist.is_initialized()
    with process_group_scope("pytorch"):  # opened inside (as setup_distributed does): closed at the end
        _open_one_rank_group()
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="rank failed"):  # after an error too (no barrier: peers may be gone)
        with process_group_scope("pytorch"):
            _open_one_rank_group()
            raise RuntimeError("rank failed")
    assert not dist.is_initialized()
    _open_one_rank_group()  # the caller's own group is left open
    try:
        with process_group_scope("pytorch"):
            pass
        assert dist.is_initialized()
        with process_group_scope("none"):
            pass
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def _can_run_torchrun() -> bool:
    return (torch.distributed.is_available() and torch.distributed.is_gloo_available()
            and find_spec("torch.distributed.run") is not None and shutil.which("bash") is not None)


@pytest.mark.skipif(not _can_run_torchrun(), reason="torch.distributed with gloo, torchrun or bash unavailable")
def test_two_cpu_ranks_give_the_one_rank_metric_with_resume(tmp_path):
    write_voc(tmp_path / "voc", SIZES, seed=3)
    names = tmp_path / "names.txt"
    names.write_text("background\ncat\naeroplane\n")
    options = ["model.clip_model=tiny-ViT-16", "model.vfm=tiny-dino", "model.random_weights=True",
               "model.cache_text=False", f"model.name_path={names}", "model.slide_crop=0",
               f"test_dataloader.dataset.data_root={tmp_path / 'voc'}",
               "test_dataloader.dataset.metainfo.classes=(background,cat,aeroplane)",
               "test_dataloader.dataset.pipeline.1.scale=(64,48)", "test_dataloader.num_workers=0",
               "test_dataloader.batch_size=2"]
    # One thread per process in every run: tiny random models give near-tied logits whose argmax follows
    # the reduction order, and the metrics are compared to the last bit. CUDA hidden: this is the CPU path.
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)

    def run(command, work_dir, *extra):
        done = subprocess.run([*command, "--work-dir", str(work_dir), *extra, "--cfg-options", *options],
                              cwd=REPO, env=dict(env, PORT=str(_free_port())), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=300)
        assert done.returncode == 0, done.stdout.decode()[-3000:]
        return json.loads((work_dir / "results.json").read_text()), done.stdout.decode()

    one_rank = [sys.executable, str(REPO / "tools" / "test.py"), CONFIG]
    two_ranks = ["bash", str(REPO / "tools" / "dist_test.sh"), CONFIG, "2"]
    single, _ = run(one_rank, tmp_path / "one")
    double, _ = run(two_ranks, tmp_path / "two")
    assert single["images"] == double["images"] == len(SIZES)
    assert double["metrics"] == single["metrics"]
    assert double["per_class"] == single["per_class"]
    # each rank evaluated its own half of the images and recorded it
    records = tmp_path / "two" / "per_image"
    assert sorted(p.name for p in records.glob("rank*.jsonl")) == ["rank0.jsonl", "rank1.jsonl"]
    assert all(len(p.read_text().splitlines()) == len(SIZES) // 2 for p in records.glob("rank*.jsonl"))

    # An interrupted 1-rank run (3 images recorded, the 4th cut mid-line), resumed with 2 ranks: the 5 images
    # left are split unevenly (the sampler pads rank 1 with a repeat), the stored 3 are merged in.
    work = tmp_path / "resumed"
    shutil.copytree(tmp_path / "one" / "per_image", work / "per_image")
    lines = (work / "per_image" / "rank0.jsonl").read_text().splitlines()
    assert len(lines) == len(SIZES)
    (work / "per_image" / "rank0.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    resumed, log = run(two_ranks, work, "--resume")
    assert "resume: 3 image(s) already evaluated" in log
    assert resumed["images"] == len(SIZES)
    assert resumed["metrics"] == single["metrics"]
    assert resumed["per_class"] == single["per_class"]


def _fake_command(bin_dir: Path, name: str) -> None:
    """A stand-in for ``name`` on PATH that prints its arguments, one per line."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    path.chmod(0o755)


def test_slurm_test_sh_runs_one_task_per_gpu_with_the_slurm_launcher(tmp_path):
    _fake_command(tmp_path / "bin", "srun")
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", GPUS="16",
               GPUS_PER_NODE="8", SRUN_ARGS="--time=1:00:00 --quotatype=auto", PYTHON="py3")
    done = subprocess.run(["bash", str(REPO / "tools" / "slurm_test.sh"), "gpu-part", "fsa voc", CONFIG,
                           "--work-dir", "w d", "--cfg-options", "model.top_p=0.3"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "-p", "gpu-part", "--job-name=fsa voc", "--gres=gpu:8", "--ntasks=16", "--ntasks-per-node=8",
        "--cpus-per-task=5", "--kill-on-bad-exit=1", "--time=1:00:00", "--quotatype=auto",
        "py3", "-u", str(REPO / "tools" / "test.py"), CONFIG, "--launcher", "slurm",
        "--work-dir", "w d", "--cfg-options", "model.top_p=0.3"]
    # fewer GPUs than a node holds: one node with that many tasks
    small = subprocess.run(["bash", str(REPO / "tools" / "slurm_test.sh"), "p", "j", CONFIG],
                           env=dict(env, GPUS="2", GPUS_PER_NODE="", SRUN_ARGS=""), capture_output=True,
                           text=True, timeout=30)
    assert "--gres=gpu:2" in small.stdout.splitlines() and "--ntasks=2" in small.stdout.splitlines()
    usage = subprocess.run(["bash", str(REPO / "tools" / "slurm_test.sh"), "p"], env=env, capture_output=True,
                           text=True, timeout=30)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: bash tools/slurm_test.sh")

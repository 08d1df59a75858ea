"""Diagnostics: collect_env / tools/collect_env.py, why a present NVIDIA GPU is unused (fake nvidia-smi, driver
file, torch build), and the one-line run description."""
import json
from types import SimpleNamespace

import pytest
import torch

from fsa_seg.diagnostics import env_info
from tooling import run_tool

H200 = SimpleNamespace(name="NVIDIA H200", total_memory=150_022_512_640, major=9, minor=0)
CU130_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]


@pytest.fixture()
def machine(tmp_path, monkeypatch):
    """A machine with no NVIDIA driver until the test adds one: an empty PATH dir for a fake nvidia-smi,
    the driver's /proc file and device node moved into tmp_path (absent)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(env_info, "NVIDIA_PROC_VERSION", str(tmp_path / "proc_nvidia_version"))
    monkeypatch.setattr(env_info, "NVIDIA_DEVICE_NODE", str(tmp_path / "nvidia0"))

    class Machine:
        def nvidia_smi(self, driver: str, name: str = "NVIDIA A100-SXM4-80GB", memory: str = "81920 MiB"):
            """nvidia-smi answering the CSV query with one GPU (sh: PATH holds nothing else)."""
            script = bin_dir / "nvidia-smi"
            script.write_text(f'#!/bin/sh\necho "{name}, {driver}, {memory}"\n')
            script.chmod(0o755)

        def driver_file(self, driver: str):
            (tmp_path / "proc_nvidia_version").write_text(
                f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {driver}  Sat Aug 19 01:15:15 UTC 2023\n"
                "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")

        def device_node(self):
            (tmp_path / "nvidia0").write_text("")

        def torch(self, cuda_version, available: bool, props=H200, archs=CU130_ARCHS):
            monkeypatch.setattr(torch.version, "cuda", cuda_version)
            monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
            monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if available else 0)
            monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
            monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
            monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))

    return Machine()


def test_no_gpu(machine):
    machine.torch("13.0", available=False)
    assert not env_info.nvidia_gpu_present()
    assert env_info.gpu_diagnosis() is None
    assert env_info.nvidia_driver() is None
    env = env_info.collect_env()
    assert env["devices"]["cuda"] == [] and env["devices"]["nvidia_smi"] == [] and env["gpu_warning"] is None
    threads = torch.get_num_threads()
    assert env_info.describe_run("cpu", torch.float32) == \
        f"running on cpu ({threads} thread{'s' if threads != 1 else ''}), float32"


def test_gpu_present_and_usable(machine):
    machine.nvidia_smi("580.65.06", name="NVIDIA H200", memory="143771 MiB")
    machine.torch("13.0", available=True)
    assert env_info.gpu_diagnosis() is None
    assert env_info.describe_run("cuda", torch.float16) == "running on cuda:0 (NVIDIA H200, 139.7 GiB), float16"
    assert env_info.describe_run(torch.device("cuda", 0), "bfloat16").endswith("139.7 GiB), bfloat16")
    env = env_info.collect_env()
    assert env["devices"]["cuda_available"] is True
    assert env["devices"]["cuda"] == [dict(index=0, name="NVIDIA H200", memory_gib=139.7, capability="9.0")]
    assert env["devices"]["nvidia_driver"] == "580.65.06"
    text = env_info.format_env(env)
    assert "GPU 0: NVIDIA H200, 139.7 GiB, compute capability 9.0" in text and "warning" not in text


def test_gpu_usable_but_not_in_the_builds_architectures(machine):
    machine.nvidia_smi("580.65.06", name="Tesla V100")
    machine.torch("13.0", available=True, props=SimpleNamespace(name="Tesla V100", total_memory=2 ** 34,
                                                                 major=7, minor=0))
    warning = env_info.gpu_diagnosis()
    assert warning.startswith("GPU 0 (Tesla V100, sm_70) is not among the architectures") and "cu126" in warning
    # same major, newer minor runs sm_80 code; an older minor does not; PTX runs on newer GPUs
    assert env_info._arch_supported((8, 9), ["sm_80"]) and not env_info._arch_supported((8, 0), ["sm_86"])
    assert env_info._arch_supported((12, 1), ["sm_90", "compute_120"])
    assert env_info._arch_supported((12, 0), ["sm_90", "compute_90"])  # PTX for 9.0 compiles for 12.0
    assert not env_info._arch_supported((7, 0), CU130_ARCHS)


@pytest.mark.parametrize("source", ["nvidia-smi", "driver file"])
def test_gpu_present_driver_too_old_for_the_cuda13_build(machine, source):
    if source == "nvidia-smi":
        machine.nvidia_smi("535.104.05")
    else:
        machine.driver_file("535.104.05")
    machine.torch("13.0", available=False)
    assert env_info.nvidia_driver() == "535.104.05"
    warning = env_info.gpu_diagnosis()
    assert "driver 535.104.05" in warning and "cannot use it" in warning
    assert "built for CUDA 13.0, which needs driver >= 580" in warning
    assert "bash tools/install.sh --cuda cu126" in warning and "upgrade the driver to >= 580" in warning
    assert env_info.collect_env()["gpu_warning"] == warning


def test_collect_env_runs_nvidia_smi_once(machine, tmp_path):
    """nvidia-smi can take seconds: the driver, the GPU list and the diagnosis share one run."""
    calls = tmp_path / "calls"
    script = tmp_path / "bin" / "nvidia-smi"
    script.write_text(f'#!/bin/sh\necho run >> {calls}\necho "NVIDIA A100-SXM4-80GB, 535.104.05, 81920 MiB"\n')
    script.chmod(0o755)
    machine.torch("13.0", available=False)
    env = env_info.collect_env()
    assert env["devices"]["nvidia_driver"] == "535.104.05" and "driver 535.104.05" in env["gpu_warning"]
    assert calls.read_text().splitlines() == ["run"]


def test_driver_too_old_for_every_build(machine):
    machine.driver_file("470.82.01")
    machine.torch("13.0", available=False)
    warning = env_info.gpu_diagnosis()
    assert "needs driver >= 580" in warning
    assert "upgrade the NVIDIA driver: >= 580 for --cuda cu130 (CUDA 13.0), >= 525.60.13 for --cuda cu126" in warning
    assert "install.sh --cuda cu126 (torch's" not in warning  # no build to install runs on 470


@pytest.mark.parametrize("driver, tag", [("580.65.06", "cu130"), ("550.54.15", "cu126")])
def test_cpu_only_torch_with_a_gpu_present(machine, driver, tag):
    machine.nvidia_smi(driver)
    machine.torch(None, available=False)
    warning = env_info.gpu_diagnosis()
    assert "this torch is a CPU-only build" in warning
    assert f"bash tools/install.sh --cuda {tag} (torch's CUDA" in warning
    env = env_info.collect_env()
    assert env["versions"]["torch_cuda"] == "none (CPU-only build)" and env["versions"]["cudnn"] is None
    assert "nvidia-smi GPU 0: NVIDIA A100-SXM4-80GB, 81920 MiB (not usable by torch)" in env_info.format_env(env)


def test_gpu_hidden_or_failing_to_initialise(machine, monkeypatch):
    machine.device_node()  # a device node only: the driver's version is unknown
    machine.torch("13.0", available=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    warning = env_info.gpu_diagnosis()
    assert "driver version unknown" in warning and "CUDA_VISIBLE_DEVICES='' hides every GPU" in warning
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")

    def fail():
        raise RuntimeError("CUDA driver initialization failed, you might not have a CUDA gpu.\nmore")

    monkeypatch.setattr(torch.cuda, "init", fail)
    assert "CUDA did not initialise (CUDA driver initialization failed, you might not have a CUDA gpu.)" in \
        env_info.gpu_diagnosis()


def test_driver_table_and_versions():
    assert env_info.min_driver("12.6") == (525, 60, 13) and env_info.min_driver("13.0") == (580,)
    assert env_info.min_driver("10.2") is None
    assert env_info.version_text((450, 80, 2)) == "450.80.02"
    assert env_info.suggest_torch_build("580.65.06") == "cu130"
    assert env_info.suggest_torch_build("579.99") == "cu126"
    assert env_info.suggest_torch_build("525.60.13") == "cu126"
    assert env_info.suggest_torch_build("525.60.12") is None
    assert env_info._cudnn_text(92000) == "9.20.0" and env_info._cudnn_text(8907) == "8.9.7"


@pytest.mark.slow
def test_collect_env_tool_prints_what_a_bug_report_needs():
    done = run_tool("collect_env")
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    keys = {line.split(":", 1)[0] for line in text.splitlines()}
    for key in ("python", "torch", "torch_cuda", "torchvision", "mmcv", "mmcv_ops", "mmengine", "mmseg",
                "open_clip", "timm", "segment_anything", "transformers", "fsa_seg", "CUDA available", "CPU"):
        assert key in keys, (key, text)
    assert f"torch: {torch.__version__}" in text
    done = run_tool("collect_env", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    env = json.loads(done.stdout)
    assert env["versions"]["mmcv"] != env_info.NOT_INSTALLED and env["versions"]["mmcv_ops"].startswith("compiled")
    assert env["devices"]["cpu"]["cores"] >= 1


def test_missing_package_is_reported_as_not_installed():
    assert env_info.package_version("no-such-distribution-fsa") == env_info.NOT_INSTALLED

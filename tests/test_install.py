"""tools/install.sh --dry-run: the torch build it installs (registry default, a chosen PyTorch index), the driver
it warns about, mmcv built with CUDA hidden even on a GPU host, and a re-run that only checks versions."""
import importlib.metadata as md
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fsa_seg.diagnostics.env_info import MIN_DRIVER, version_text

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "install.sh"
PIP = ["-m", "pip", "install", "--disable-pip-version-check"]
CUDA_ON = {"CUDA_VISIBLE_DEVICES": "0", "FORCE_CUDA": "1", "CUDA_HOME": "/usr/local/cuda-13.0",
           "CUDA_PATH": "/usr/local/cuda-13.0"}


def dry_run(venv, *args, env=None, nvidia_driver=None, tmp_path=None, check=True):
    """Run the script's dry run; returns (stdout, commands as argv lists)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FSA_")}
    base.update(FSA_VENV=str(venv), **(env or {}))
    if nvidia_driver is not None:  # a GPU host: nvidia-smi on PATH answering the driver query
        fake = tmp_path / "bin" / "nvidia-smi"
        fake.parent.mkdir(exist_ok=True)
        fake.write_text(f"#!/bin/sh\necho {nvidia_driver}\n")
        fake.chmod(0o755)
        base["PATH"] = f"{fake.parent}{os.pathsep}{base['PATH']}"
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], env=base, capture_output=True, text=True,
                          timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    commands = [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]
    return done, commands


def command_with(commands, word):
    found = [c for c in commands if any(word in part for part in c)]
    assert len(found) == 1, (word, commands)
    return found[0]


def test_default_is_the_registry_build_and_nothing_runs(tmp_path):
    venv = tmp_path / "venv"
    done, commands = dry_run(venv)
    py = f"{venv}/bin/python"
    assert "from the registry (CUDA build: 13.0); dry run" in done.stdout
    assert commands[0] == ["python3", "-m", "venv", str(venv)]
    assert command_with(commands, "torch==") == ["env", "PIP_CONFIG_FILE=/dev/null", "PIP_FIND_LINKS=", py, *PIP,
                                                 "torch==2.13.0", "torchvision==0.28.0"]
    assert command_with(commands, "mmcv==")[-1] == "mmcv==2.1.0"
    assert [py, *PIP, "-r", "requirements.txt"] in commands
    assert [py, *PIP, "--no-deps", "--no-build-isolation", "-e", "."] in commands
    assert commands[-1][:2] == [py, "-c"] and "import torch, mmcv, mmcv.ops, mmseg" in commands[-1][2]
    assert not venv.exists()  # a dry run creates nothing


@pytest.mark.parametrize("args, env, index, cuda", [
    (["--cuda", "cu126"], {}, "https://download.pytorch.org/whl/cu126", "12.6"),
    (["--cuda=cpu"], {}, "https://download.pytorch.org/whl/cpu", "none"),
    ([], {"FSA_CUDA": "cu130"}, "https://download.pytorch.org/whl/cu130", "13.0"),
    (["--torch-index", "https://mirror.example/whl/cu126/"], {}, "https://mirror.example/whl/cu126/", "12.6"),
    ([], {"FSA_TORCH_INDEX": "https://mirror.example/simple"}, "https://mirror.example/simple", "unknown"),
])
def test_chosen_torch_index(tmp_path, args, env, index, cuda):
    venv = tmp_path / "venv"
    done, commands = dry_run(venv, *args, env=env)
    assert f"from {index} (CUDA build: {cuda})" in done.stdout
    assert command_with(commands, "torch==") == ["env", "PIP_CONFIG_FILE=/dev/null", "PIP_FIND_LINKS=",
                                                 f"{venv}/bin/python", *PIP, "--index-url", index,
                                                 "torch==2.13.0", "torchvision==0.28.0"]
    assert "--index-url" not in command_with(commands, "mmcv==")  # only torch comes from that index


@pytest.mark.parametrize("args, message", [
    (["--cuda", "12.6"], "--cuda '12.6': expected cu126, cu130, cu132 or cpu"),
    (["--cuda", "cu126", "--torch-index", "https://x/whl"], "give --cuda or --torch-index, not both"),
    (["--cuda"], "--cuda needs a build tag"),
    (["--cdua", "cu126"], "unknown option '--cdua'"),
])
def test_bad_options(tmp_path, args, message):
    done, commands = dry_run(tmp_path / "venv", *args, check=False)
    assert done.returncode == 2 and commands == []
    assert done.stderr.startswith("[install] error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_mmcv_build_hides_cuda_on_a_gpu_host(tmp_path):
    """With a GPU driver present and CUDA switched on in the environment, mmcv 2.1.0's setup.py must still
    take its CPU branch: it compiles CUDA ops when torch.cuda.is_available() or FORCE_CUDA == '1'."""
    venv = tmp_path / "venv"
    done, commands = dry_run(venv, env=CUDA_ON, nvidia_driver="580.65.06", tmp_path=tmp_path)
    assert "NVIDIA GPU found, driver 580.65.06" in done.stdout and "[install] warning" not in done.stdout
    mmcv = command_with(commands, "mmcv==")
    python_at = mmcv.index(f"{venv}/bin/python")
    assert mmcv[:python_at] == ["env", "-u", "CUDA_HOME", "-u", "CUDA_PATH", "CUDA_VISIBLE_DEVICES=",
                                "FORCE_CUDA=0", "MMCV_WITH_OPS=1"]
    assert mmcv[python_at:] == [f"{venv}/bin/python", *PIP, "--no-build-isolation", "mmcv==2.1.0"]
    # The environment that prefix gives the build, from the environment that had CUDA on, and mmcv's test.
    probe = ("import json, os, torch; print(json.dumps({k: os.environ.get(k) for k in "
             "('CUDA_VISIBLE_DEVICES', 'FORCE_CUDA', 'CUDA_HOME', 'CUDA_PATH', 'MMCV_WITH_OPS')} | "
             "{'cuda_ops': torch.cuda.is_available() or os.getenv('FORCE_CUDA', '0') == '1'}))")
    seen = subprocess.run([*mmcv[:python_at], sys.executable, "-c", probe], env={**os.environ, **CUDA_ON},
                          capture_output=True, text=True, timeout=120)
    assert json.loads(seen.stdout) == {"CUDA_VISIBLE_DEVICES": "", "FORCE_CUDA": "0", "CUDA_HOME": None,
                                       "CUDA_PATH": None, "MMCV_WITH_OPS": "1", "cuda_ops": False}


@pytest.mark.parametrize("cuda_tag, major", [("cu118", 11), ("cu126", 12), ("cu130", 13)])
def test_driver_warning_follows_the_driver_table(tmp_path, cuda_tag, major):
    """The script's driver floors are fsa_seg.diagnostics.env_info.MIN_DRIVER's: no warning at the floor, one just below."""
    floor = MIN_DRIVER[major]
    below = ".".join(str(p) for p in floor[:-1] + (floor[-1] - 1,)) if len(floor) > 1 else f"{floor[0] - 1}.99"
    done, _ = dry_run(tmp_path / "venv", "--cuda", cuda_tag, nvidia_driver=version_text(floor), tmp_path=tmp_path)
    assert "[install] warning" not in done.stdout
    done, _ = dry_run(tmp_path / "venv", "--cuda", cuda_tag, nvidia_driver=below, tmp_path=tmp_path)
    assert f"needs NVIDIA driver >= {version_text(floor)}; with {below} it would run on the CPU only" in done.stdout


def test_driver_warnings_for_the_default_and_cpu_builds(tmp_path):
    done, _ = dry_run(tmp_path / "venv", nvidia_driver="535.104.05", tmp_path=tmp_path)
    assert "torch's CUDA 13.0 build needs NVIDIA driver >= 580" in done.stdout
    assert "Use --cuda cu126 (driver >= 525.60.13)" in done.stdout
    done, _ = dry_run(tmp_path / "venv", "--cuda", "cpu", nvidia_driver="580.65.06", tmp_path=tmp_path)
    assert "the CPU-only torch build will not use the GPU" in done.stdout
    done, _ = dry_run(tmp_path / "venv")  # no nvidia-smi on PATH (this machine): no GPU line at all
    assert ("NVIDIA GPU found" in done.stdout) == any(
        os.access(os.path.join(d, "nvidia-smi"), os.X_OK) for d in os.environ["PATH"].split(os.pathsep))


def _this_venv_is_installed() -> bool:
    """The interpreter running the tests is an environment tools/install.sh made (or an equal one)."""
    try:
        return (sys.prefix != sys.base_prefix and md.version("torch").split("+")[0] == "2.13.0"
                and md.version("torchvision").split("+")[0] == "0.28.0" and md.version("mmcv") == "2.1.0")
    except md.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _this_venv_is_installed(), reason="tests not run from an environment install.sh made")
def test_rerun_only_checks_versions_and_another_build_replaces_torch_only(tmp_path):
    venv = Path(sys.prefix)
    stamp = venv / ".fsa-seg-torch"
    source = stamp.read_text().strip() if stamp.is_file() else "registry"
    same = ["--torch-index", source] if source != "registry" else []
    done, commands = dry_run(venv, *same)
    assert "already installed" in done.stdout
    assert not [c for c in commands if any(p.startswith(("torch==", "mmcv==")) for p in c)]
    assert commands[-1][:2] == [f"{venv}/bin/python", "-c"]  # the import check always runs

    other = "cu126" if source != "https://download.pytorch.org/whl/cu126" else "cu130"
    done, commands = dry_run(venv, "--cuda", other)
    assert f"replacing torch from {source} with torch from https://download.pytorch.org/whl/{other}" in done.stdout
    assert commands[0] == [f"{venv}/bin/python", "-m", "pip", "uninstall", "-y", "torch", "torchvision"]
    assert "--index-url" in commands[1] and f"https://download.pytorch.org/whl/{other}" in commands[1]
    assert not [c for c in commands if "mmcv==2.1.0" in c]  # mmcv stays (checked after the real torch step)
    assert "mmcv is rebuilt if its compiled ops do not load" in done.stdout

"""The versions and devices a bug report needs, why a present NVIDIA GPU goes unused, and a one-line run summary.

Pure: the standard library at module level only; torch (and mmcv's compiled extension, for its build flags)
are imported inside the functions that report on them, so a broken install still gets a report.

Driver floors: a CUDA build of torch runs on a driver at least as new as its CUDA major version's minimum
(CUDA minor version compatibility; NVIDIA, "CUDA Compatibility", section "Minor Version Compatibility",
table "CUDA Toolkit and driver version ranges": 11.x >= 450.80.02, 12.x >= 525.60.13, 13.x >= 580). An older
driver leaves ``torch.cuda.is_available()`` False and everything on the CPU. torch 2.13's CUDA builds
(PyTorch RELEASE.md, release compatibility matrix): CUDA 12.6 and 13.0 (13.2 experimental); the registry's
default torch 2.13.0 wheel is the CUDA 13.0 one. tools/install.sh keeps the same table (a test checks).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

NOT_INSTALLED = "not installed"

# import name -> distribution name, in the order a report lists them
PACKAGES: Dict[str, str] = {
    "torch": "torch", "torchvision": "torchvision", "mmcv": "mmcv", "mmengine": "mmengine",
    "mmseg": "mmsegmentation", "open_clip": "open_clip_torch", "timm": "timm",
    "segment_anything": "segment-anything", "transformers": "transformers", "fsa_seg": "fsa-seg",
}

# CUDA major version -> minimum Linux driver (minor version compatibility; see the module docstring)
MIN_DRIVER: Dict[int, Tuple[int, ...]] = {11: (450, 80, 2), 12: (525, 60, 13), 13: (580,)}
# torch 2.13.0's stable CUDA builds, newest first: wheel index tag -> CUDA version
TORCH_CUDA_BUILDS: Dict[str, str] = {"cu130": "13.0", "cu126": "12.6"}

# Where the NVIDIA kernel driver shows itself (module constants so that tests can point them elsewhere)
NVIDIA_PROC_VERSION = "/proc/driver/nvidia/version"
NVIDIA_DEVICE_NODE = "/dev/nvidia0"


def parse_version(text: str) -> Tuple[int, ...]:
    """``'535.104.05'`` -> ``(535, 104, 5)``."""
    return tuple(int(part) for part in re.findall(r"\d+", text))


def version_text(version: Tuple[int, ...]) -> str:
    return ".".join(f"{part:02d}" if i == 2 else str(part) for i, part in enumerate(version))


def min_driver(cuda_version: str) -> Optional[Tuple[int, ...]]:
    """The minimum driver for a CUDA runtime version (``'13.0'``), or None for an unknown major version."""
    return MIN_DRIVER.get(parse_version(cuda_version)[0])


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


# ------------------------------------------------------------------------------------------ NVIDIA probes
def nvidia_smi_gpus() -> List[Dict[str, str]]:
    """The GPUs the driver lists (``nvidia-smi`` on PATH): name, driver, memory; [] without nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) == 3 and fields[1][:1].isdigit():
            gpus.append(dict(name=fields[0], driver=fields[1], memory=fields[2]))
    return gpus


def nvidia_driver(gpus: Optional[List[Dict[str, str]]] = None) -> Optional[str]:
    """The NVIDIA kernel driver's version (``/proc/driver/nvidia/version``, else nvidia-smi's, or that of ``gpus``
    when the caller has :func:`nvidia_smi_gpus` already), or None."""
    try:
        with open(NVIDIA_PROC_VERSION) as f:
            match = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", f.read())
        if match:
            return match.group(1)
    except OSError:
        pass
    gpus = nvidia_smi_gpus() if gpus is None else gpus
    return gpus[0]["driver"] if gpus else None


def nvidia_gpu_present() -> bool:
    """An NVIDIA GPU with its driver: nvidia-smi on PATH, the driver's /proc entry, or /dev/nvidia0."""
    return (shutil.which("nvidia-smi") is not None or os.path.exists(NVIDIA_PROC_VERSION)
            or os.path.exists(NVIDIA_DEVICE_NODE))


# ------------------------------------------------------------------------------------------ diagnosis
def suggest_torch_build(driver: Optional[str]) -> Optional[str]:
    """The newest torch 2.13 CUDA build (wheel index tag) that runs on ``driver``; None when none does."""
    if driver is None:
        return None
    for tag, cuda in TORCH_CUDA_BUILDS.items():
        if parse_version(driver) >= min_driver(cuda):
            return tag
    return None


def _install_hint(driver: Optional[str]) -> str:
    """How to get a torch that runs here: the install option for the driver, or the driver to install."""
    builds = [(tag, cuda, version_text(min_driver(cuda))) for tag, cuda in TORCH_CUDA_BUILDS.items()]
    if driver is None:
        return " or ".join(f"bash tools/install.sh --cuda {tag} (CUDA {cuda}, driver >= {floor})"
                           for tag, cuda, floor in builds)
    tag = suggest_torch_build(driver)
    if tag is not None:
        return f"bash tools/install.sh --cuda {tag} (torch's CUDA {TORCH_CUDA_BUILDS[tag]} build runs on this driver)"
    return "upgrade the NVIDIA driver: " + ", ".join(f">= {floor} for --cuda {tag} (CUDA {cuda})"
                                                      for tag, cuda, floor in builds)


def _arch_supported(capability: Tuple[int, int], arch_list: List[str]) -> bool:
    """Whether a build with ``arch_list`` (``torch.cuda.get_arch_list()``) has kernels for ``capability``:
    native code for the same major version and a minor one at most the GPU's, or PTX it can compile."""
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        if not number.isdigit():
            continue
        built = (int(number[:-1]), int(number[-1]))
        if kind == "sm" and built[0] == capability[0] and built[1] <= capability[1]:
            return True
        if kind == "compute" and built <= capability:
            return True
    return not arch_list  # an empty list: torch cannot tell; do not warn


def gpu_diagnosis(gpus: Optional[List[Dict[str, str]]] = None) -> Optional[str]:
    """A one-line warning when an NVIDIA GPU is present but this torch cannot use it (or has no kernels for
    it): the reason and the fix. None when there is no NVIDIA GPU, or torch uses it. ``gpus``: the caller's
    :func:`nvidia_smi_gpus`, so that nvidia-smi is not run again."""
    if not nvidia_gpu_present():
        return None
    try:
        import torch
    except ImportError:
        return "an NVIDIA GPU is present but torch is not installed; fix: bash tools/install.sh"
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            capability = (props.major, props.minor)
            if not _arch_supported(capability, torch.cuda.get_arch_list()):
                return (f"GPU {index} ({props.name}, sm_{props.major}{props.minor}) is not among the architectures "
                        f"torch {torch.__version__} was built for ({' '.join(torch.cuda.get_arch_list())}), so its "
                        "CUDA kernels cannot run; fix: another CUDA build (bash tools/install.sh --cuda cu126 covers "
                        "sm_50 to sm_90, cu130 sm_75 to sm_120; PyTorch's CUDA support matrix)")
        return None
    driver = nvidia_driver(gpus)
    head = (f"an NVIDIA GPU is present (driver {driver or 'version unknown'}) but torch {torch.__version__} "
            "cannot use it, so everything runs on the CPU: ")
    cuda = torch.version.cuda
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cuda is None:
        return head + f"this torch is a CPU-only build; fix: {_install_hint(driver)}"
    floor = min_driver(cuda)
    if driver is not None and floor is not None and parse_version(driver) < floor:
        upgrade = f", or upgrade the driver to >= {version_text(floor)}" if suggest_torch_build(driver) else ""
        return (head + f"torch is built for CUDA {cuda}, which needs driver >= {version_text(floor)}; "
                f"fix: {_install_hint(driver)}{upgrade}")
    if visible is not None and visible.strip() in ("", "-1"):
        return head + f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU; fix: unset CUDA_VISIBLE_DEVICES"
    try:
        torch.cuda.init()
        error = "torch.cuda.is_available() is False"
    except Exception as err:  # the CUDA runtime's own reason
        error = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return head + f"CUDA did not initialise ({error}); check that nvidia-smi works, then python tools/collect_env.py"


# ------------------------------------------------------------------------------------------ report
def _cudnn_text(version: Optional[int]) -> Optional[str]:
    """torch's cuDNN integer as a version: 92000 -> 9.20.0 (cuDNN 9), 8907 -> 8.9.7 (cuDNN 8)."""
    if not version:
        return None
    if version >= 90000:
        return f"{version // 10000}.{version % 10000 // 100}.{version % 100}"
    return f"{version // 1000}.{version % 1000 // 100}.{version % 100}"


def mmcv_ops() -> str:
    """Whether mmcv's compiled ops load, and with or without CUDA."""
    if package_version("mmcv") == NOT_INSTALLED:
        return NOT_INSTALLED
    try:
        ext = importlib.import_module("mmcv._ext")
    except Exception as err:  # mmcv-lite, or built against another torch
        return f"not loadable ({type(err).__name__}: {str(err).strip()[:160]})"
    cuda = ext.get_compiling_cuda_version()
    kind = "CPU ops only" if cuda in ("", "not available") else f"with CUDA {cuda} ops"
    return f"compiled, {kind} ({ext.get_compiler_version()})"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_env() -> dict:
    """``{'versions': {...}, 'devices': {...}, 'gpu_warning': str|None}`` (JSON-serialisable)."""
    versions: Dict[str, Optional[str]] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for module, dist in PACKAGES.items():
        versions[module] = package_version(dist)
    spec = importlib.util.find_spec("fsa_seg")
    if spec is not None and spec.submodule_search_locations:
        versions["fsa_seg"] += f" ({list(spec.submodule_search_locations)[0]})"  # which checkout is imported
    gpus = nvidia_smi_gpus()  # nvidia-smi once (up to 20 s), for the driver and the diagnosis too
    devices: dict = {"cuda_available": False, "cuda": [], "nvidia_driver": nvidia_driver(gpus), "nvidia_smi": gpus}
    try:
        import torch
    except Exception as err:
        versions["torch"] += f" (import failed: {err})"
        threads = None
    else:
        versions["torch"] = torch.__version__  # with the build's local tag (+cu130, +cpu)
        versions["torch_cuda"] = torch.version.cuda or "none (CPU-only build)"
        versions["cudnn"] = _cudnn_text(torch.backends.cudnn.version()) if torch.version.cuda else None
        devices["cuda_available"] = torch.cuda.is_available()
        if devices["cuda_available"]:
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                devices["cuda"].append(dict(index=index, name=props.name,
                                            memory_gib=round(props.total_memory / 2 ** 30, 1),
                                            capability=f"{props.major}.{props.minor}"))
        threads = torch.get_num_threads()
    versions["mmcv_ops"] = mmcv_ops()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    devices["cpu"] = dict(model=cpu_model(), cores=os.cpu_count(), usable_cores=usable, torch_threads=threads)
    return {"versions": versions, "devices": devices, "gpu_warning": gpu_diagnosis(gpus)}


def format_env(env: dict) -> str:
    """``collect_env()`` as the text of a bug report, one ``key: value`` per line."""
    lines = [f"{key}: {value}" for key, value in env["versions"].items() if value is not None]
    devices = env["devices"]
    lines.append(f"CUDA available: {devices['cuda_available']}")
    for gpu in devices["cuda"]:
        lines.append(f"GPU {gpu['index']}: {gpu['name']}, {gpu['memory_gib']} GiB, "
                     f"compute capability {gpu['capability']}")
    lines.append(f"NVIDIA driver: {devices['nvidia_driver'] or 'none found'}")
    if not devices["cuda_available"]:
        for index, gpu in enumerate(devices["nvidia_smi"]):
            lines.append(f"nvidia-smi GPU {index}: {gpu['name']}, {gpu['memory']} (not usable by torch)")
    cpu = devices["cpu"]
    lines.append(f"CPU: {cpu['model']}, {cpu['cores']} cores ({cpu['usable_cores']} usable), "
                 f"torch threads: {cpu['torch_threads']}")
    if env.get("gpu_warning"):
        lines.append(f"warning: {env['gpu_warning']}")
    return "\n".join(lines)


def describe_run(device, dtype) -> str:
    """One line for tools to print: ``running on cuda:0 (NVIDIA H200, 139.7 GiB), float16`` or
    ``running on cpu (2 threads), float32``."""
    import torch

    device = torch.device(device)
    dtype_name = str(dtype).replace("torch.", "")
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"running on cuda:{index} ({props.name}, {props.total_memory / 2 ** 30:.1f} GiB), {dtype_name}"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"running on cpu ({threads} thread{'s' if threads != 1 else ''}), {dtype_name}"
    return f"running on {device}, {dtype_name}"


def announce_run(precision: str = "auto", device=None) -> str:
    """What the tools print before a model runs: :func:`describe_run` of the device and dtype a model config's
    ``precision`` / ``device`` resolve to (stdout), and :func:`gpu_diagnosis`'s warning, if any (stderr).
    Returns the first line."""
    from ..open_vocab import resolve_device_dtype

    line = describe_run(*resolve_device_dtype(precision, device))
    print(line, flush=True)
    warning = gpu_diagnosis()
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return line

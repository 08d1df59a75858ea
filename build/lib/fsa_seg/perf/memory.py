"""Peak extra memory of one call, for tools/benchmark.py.

CPU (Linux): growth of the process's peak resident set size (RSS) during the call.

1. glibc keeps freed blocks below its mmap threshold (which grows by itself up to 32 MiB) resident and
   hands them out again, so a call that follows a warm-up could reuse memory that is already resident and
   its RSS growth would under-count. Before the measured call the allocator is switched to a fixed 64 KiB
   threshold (``mallopt(M_MMAP_THRESHOLD)``: every block of 64 KiB or more is mmapped and unmapped when
   freed), retained free memory is returned (``malloc_trim(0)``) and Python garbage is collected.
2. ``baseline = VmRSS``; the kernel's high-water mark ``VmHWM`` is reset to the current RSS (writing ``5`` to
   ``/proc/self/clear_refs``, Linux >= 4.0); the call runs; ``extra = VmHWM - baseline``.

   Where ``clear_refs`` cannot be written, a thread samples ``VmRSS`` every 0.5 ms instead (it can miss a
   spike shorter than that); the method used is recorded with every number.

CUDA: ``torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()`` (before the call) after
``reset_peak_memory_stats()``: tensor memory only, not the caching allocator's reserve.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
import time
from typing import Callable, Dict, Optional, Tuple

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
FIXED_MMAP_THRESHOLD = 64 * 1024
GLIBC_DEFAULT_THRESHOLD = 128 * 1024
STATUS = "/proc/self/status"
CLEAR_REFS = "/proc/self/clear_refs"


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only (mallopt/malloc_trim)
        return libc
    except (OSError, AttributeError):
        return None


def settle_allocator() -> bool:
    """Fixed mmap threshold + return retained free memory to the OS (glibc); True if it could."""
    gc.collect()
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, FIXED_MMAP_THRESHOLD))
    libc.mallopt(M_TRIM_THRESHOLD, 0)
    libc.malloc_trim(0)
    return ok


def restore_allocator() -> None:
    """glibc's default thresholds again (in-process runs go on with later measurements or tests)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)


def read_status() -> Dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of this process in bytes (empty where /proc is missing)."""
    out = {}
    try:
        with open(STATUS) as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def reset_hwm() -> bool:
    try:
        with open(CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _RSSSampler(threading.Thread):
    def __init__(self, period_s: float = 5e-4) -> None:
        super().__init__(daemon=True)
        self.period_s = period_s
        self.peak = read_status().get("VmRSS", 0)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, read_status().get("VmRSS", 0))
            time.sleep(self.period_s)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, read_status().get("VmRSS", 0))
        return self.peak


def measure_cpu(fn: Callable[[], object]) -> Tuple[Optional[int], str]:
    """Extra peak RSS (bytes) of ``fn()`` and the method used (None if RSS cannot be read)."""
    if read_status().get("VmRSS") is None:
        return None, "unavailable (no /proc/self/status)"
    settled = settle_allocator()
    suffix = "" if settled else " (allocator not settled: non-glibc)"
    try:
        if reset_hwm():
            base = read_status()["VmRSS"]
            fn()
            return read_status()["VmHWM"] - base, "VmHWM reset via clear_refs" + suffix
        sampler = _RSSSampler()
        base = sampler.peak
        sampler.start()
        fn()
        return sampler.stop() - base, "VmRSS sampled every 0.5 ms" + suffix
    finally:
        restore_allocator()


def measure_cuda(fn: Callable[[], object], device) -> Tuple[int, str]:
    import torch

    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base, "torch.cuda.max_memory_allocated delta"


def measure(fn: Callable[[], object], device) -> Tuple[Optional[int], str]:
    if getattr(device, "type", str(device)) == "cuda":
        return measure_cuda(fn, device)
    return measure_cpu(fn)


def available_bytes(device=None) -> Optional[int]:
    """Memory a run may use: available system memory (CPU) or free device memory (CUDA)."""
    import torch

    from ..open_vocab import available_memory

    return available_memory(torch.device(device) if device is not None else torch.device("cpu"))

"""Measuring FSA's speed and memory (``tools/benchmark.py``): workloads (what is timed, on the plain-torch
models; SAM3's in sam3_workloads), memory (how peak memory is measured), flops (FLOPs with torch's counter),
estimates (the naive reference's peak memory from the shapes), machine (how busy the CPUs are) and runner (plan,
worker processes, report). No mmseg needed."""

"""Helpers of tools/benchmark.py: workloads (what is timed), memory (how peak memory is measured),
estimates (naive peak memory from the shapes), machine (how busy the CPUs are)."""

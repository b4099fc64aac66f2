"""Benchmarks: `python -m bench` runs every `bench/bench_*.py` module's `run(quick) -> dict`.

Targets are ratios against a baseline measured in the same process (the CPU is shared,
so absolute timings are noisy); they are reported, never asserted in tests.
"""

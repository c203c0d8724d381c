"""Benchmarks: `python -m scripts.bench` runs the set and writes docs/benchmarks.md."""

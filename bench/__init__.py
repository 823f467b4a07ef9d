"""Benchmarks (`make bench`): `python -m bench.throughput`; results and how to read them in BENCHMARKS.md."""

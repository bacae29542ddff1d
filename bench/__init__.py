"""Benchmarks for mx-exporter: run ``python bench/run.py`` (see bench/README.md)."""

"""Benchmarks (``make bench``, i.e. ``python -m bench``): not timed tests, figures for BENCHMARKS.md.

Each module here other than ``__main__`` that defines ``run() -> list[dict]`` contributes
rows with the keys ``figure``, ``value``, ``unit``, ``baseline``, ``ratio`` and ``note``.
"""

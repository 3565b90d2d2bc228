"""perdura's benchmark suite: perdura, the raw SQLite floor and peers on the same workloads.

Run ``make bench`` (or ``.venv/bin/python benchmarks/run.py --help``). ``steps.py`` is the
older, perdura-only per-step benchmark and still runs on its own.
"""

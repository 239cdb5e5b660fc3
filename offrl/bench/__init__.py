"""Benchmarks: suites and their sweeps and reports (`offrl bench run`), update throughput (`offrl bench speed`)."""
from pathlib import Path

SUITES_DIR = Path(__file__).parent / "suites"     # the built-in suites (offrl bench run NAME)

"""Benchmarks: `offrl bench speed` (update throughput)."""

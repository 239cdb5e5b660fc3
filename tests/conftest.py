"""Shared fixtures: a scripted InvertedPendulum-v5 dataset (made here, no network) and a Minari root."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

import pytest
import torch

from offrl.data import Dataset
from offrl.data.scripted import pendulum_episodes

TESTS = Path(__file__).parent
PLUGIN = TESTS / "plugin_agent.py"
PLUGIN_EXT = TESTS / "plugin_extension.py"     # a column, a synthetic source and a phase hook, from outside offrl/
EMBEDDED_MIXED = "offrl/invertedpendulum/scripted-mixed-small-v0"

# A 4-run suite on the embedded data: the sweeps of the harness tests (pool, Ray, kills) run it.
TINY = """name: tiny
agents: [bc, {name: td3_bc, label: td3_bc-small, set: {hidden: [32, 32]}}]
datasets: [offrl/invertedpendulum/scripted-mixed-small-v0, offrl/invertedpendulum/scripted-noisy-small-v0]
seeds: 2
steps: 60
eval_every: 20
eval_episodes: 2
threads: 1
"""


@pytest.fixture(scope="session")
def pendulum_dataset() -> Dataset:
    """~10k transitions; about a third of the episodes end by truncation."""
    ds = Dataset.from_episodes(pendulum_episodes(24, max_steps=600), where="scripted-pendulum",
                               name="scripted/invertedpendulum/mixed-v0", env_id="InvertedPendulum-v5",
                               ref_min_score=5.0, ref_max_score=600.0, ref_source="test")
    return ds


@pytest.fixture
def minari_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


# Under pytest-xdist (CI runs `-n 2` on its 2 cores) each worker gets one core; alone, a test gets two.
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(THREADS)
    yield


def run_cli(*args, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """`offrl ARGS` inside this process, as a CompletedProcess (exit code, stdout, stderr) like
    subprocess.run gives: the error-path tests run dozens of commands, and each interpreter start with
    torch costs seconds. Tests of process behaviour (kills, locks, progress lines) keep real subprocesses."""
    from offrl.cli import main

    out, err, before = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:                       # argparse's own usage errors
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess([str(a) for a in args], code, out.getvalue(), err.getvalue())


def bench_tiny(cwd, *args, timeout=300) -> subprocess.CompletedProcess:
    """`offrl bench tiny.yaml --no-progress ARGS` in a real process (the launchers fork and kill)."""
    import sys

    return subprocess.run([sys.executable, "-m", "offrl.cli", "bench", "tiny.yaml", "--no-progress", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory) -> str:
    """scores.csv of the tiny suite swept once, uninterrupted, by one worker: what every launcher, worker
    count and kill-and-rerun must reproduce (one sweep for the session, not one per test)."""
    d = tmp_path_factory.mktemp("tiny_reference")
    (d / "tiny.yaml").write_text(TINY)
    p = bench_tiny(d, "--workers", "1")
    assert p.returncode == 0, p.stderr
    return (d / "results" / "tiny" / "scores.csv").read_text()

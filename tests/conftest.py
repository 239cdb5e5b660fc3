"""Shared fixtures: a scripted InvertedPendulum-v5 dataset (made here, no network) and a Minari root."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from offrl.data import Dataset
from offrl.data.scripted import pendulum_episodes

TESTS = Path(__file__).parent
PLUGIN = TESTS / "plugin_agent.py"
PLUGIN_EXT = TESTS / "plugin_extension.py"     # a column, a synthetic source and a phase hook, from outside offrl/
EMBEDDED_MIXED = "offrl/invertedpendulum/scripted-mixed-small-v0"


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


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield

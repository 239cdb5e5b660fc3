"""Shared fixtures: a scripted InvertedPendulum-v5 dataset (made here, no network) and a Minari root."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from offrl.data import Dataset, Episode

TESTS = Path(__file__).parent
PLUGIN = TESTS / "plugin_agent.py"
GAINS = np.array([1.0, 20.0, 1.0, 3.0])   # a PD controller that balances InvertedPendulum-v5


def pendulum_episodes(n: int, seed: int = 0, noise_levels=(1.5, 2.5, 3.5), max_steps: int = 1000) -> list[Episode]:
    """Episodes of a noisy scripted controller: low noise survives to the time limit (truncation),
    high noise lets the pole fall (termination). Actions in the env's units [-3, 3]."""
    env = gym.make("InvertedPendulum-v5", max_episode_steps=max_steps)
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        sigma = noise_levels[i % len(noise_levels)]
        o, _ = env.reset(seed=seed * 1000 + i)
        obs, acts, rews, terms, truncs = [o], [], [], [], []
        while True:
            a = np.clip(GAINS @ o + sigma * rng.normal(), -3, 3).astype(np.float32)[None]
            o, r, term, trunc, _ = env.step(a)
            obs.append(o); acts.append(a); rews.append(r); terms.append(term); truncs.append(trunc)
            if term or trunc:
                break
        episodes.append(Episode(np.array(obs), np.array(acts), np.array(rews), np.array(terms), np.array(truncs)))
    env.close()
    return episodes


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

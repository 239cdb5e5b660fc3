"""Each agent learns a tiny real task: InvertedPendulum-v5 from a noisy scripted controller's data
(offline agents) or from scratch (SAC). A random policy averages ~4 and never passes ~15; holding the
pole still (zero action) lasts 18–34 steps. Each test takes well under 60 s on 2 CPU cores."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from offrl.trainer import RunConfig, Trainer

THRESHOLD = 100.0      # episode return; far above random (≤15) and zero-action (≤34) policies


@pytest.mark.parametrize("agent,steps", [("bc", 1000), ("td3_bc", 2000), ("iql", 2000), ("awac", 2000)])
def test_offline_agent_learns_pendulum(agent, steps, pendulum_dataset, tmp_path):
    run = RunConfig(agent=agent, dataset="pendulum", seeds=2, steps=steps, eval_every=0, eval_episodes=5,
                    log_every=500, agent_config={"hidden": "64,64"})
    result = Trainer(run, tmp_path / agent, progress=False, dataset=pendulum_dataset).train()
    final = np.array(result["final"]["return"])
    assert final.mean() >= THRESHOLD, final


def test_awac_fails_without_its_policy_loss(pendulum_dataset, tmp_path, monkeypatch):
    """The learning test above is about the actor: with every AWAC weight zeroed it stays a random policy."""
    import offrl.algorithms.awac as awac

    monkeypatch.setattr(awac, "awac_weights", lambda q, v, lam, m: torch.zeros_like(q))
    run = RunConfig(agent="awac", dataset="pendulum", seeds=2, steps=2000, eval_every=0, eval_episodes=5,
                    log_every=500, agent_config={"hidden": "64,64"})
    final = np.array(Trainer(run, tmp_path / "zeroed", progress=False, dataset=pendulum_dataset).train()["final"]["return"])
    assert final.mean() < THRESHOLD / 2, final


def test_iql_offline_to_online(pendulum_dataset, tmp_path):
    run = RunConfig(agent="iql", dataset="pendulum", seeds=2, steps=1500, online_steps=1000, eval_every=0,
                    eval_episodes=5, log_every=500, agent_config={"hidden": "64,64"})
    trainer = Trainer(run, tmp_path / "o2o", progress=False, dataset=pendulum_dataset)
    result = trainer.train()
    assert np.mean(result["offline_final"]["return"]) >= THRESHOLD
    assert np.mean(result["final"]["return"]) >= THRESHOLD
    assert trainer.buffer.online_size == 1000 and len(trainer.online_episodes) >= 2


def test_sac_learns_pendulum_online(tmp_path):
    run = RunConfig(agent="sac", env="InvertedPendulum-v5", seeds=2, steps=0, online_steps=5000, eval_every=0,
                    eval_episodes=5, log_every=1000, agent_config={"hidden": "64,64", "random_steps": "1000"})
    result = Trainer(run, tmp_path / "sac", progress=False).train()
    final = np.array(result["final"]["return"])
    assert final.mean() >= 50.0, final

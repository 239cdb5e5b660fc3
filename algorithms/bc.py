"""Behaviour cloning: a deterministic tanh policy regressed onto dataset actions (MSE)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.agent import Agent, AgentConfig, register
from offrl.fields import Positive, Sizes
from offrl.nets import DeterministicActor, per_seed_mean


@dataclass
class BCConfig(AgentConfig):
    normalize_obs: bool = True         # standardise observations (CORL's BC)
    lr: Positive = 3e-4                # Adam learning rate
    hidden: Sizes = (256, 256)         # MLP hidden sizes


@register("bc")
class BC(Agent):
    """Behaviour cloning (MSE to dataset actions). Faithfulness: CORL's BC at 100% of the data; deviations: none."""
    Config = BCConfig

    def __init__(self, spec, cfg: BCConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        self.actor = DeterministicActor(spec.obs_dim, spec.act_dim, (seeds,), cfg.hidden)
        self.optimizer("actor", self.actor.parameters(), cfg.lr)
        self.to(self.device)

    def update(self, b):
        b = self.preprocess(b)
        loss = per_seed_mean((self.actor(b.obs) - b.action) ** 2)       # [S]
        self.minimize("actor", loss)
        self.num_updates += 1
        return {"actor_loss": loss.detach()}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.actor(self.normalize(obs))

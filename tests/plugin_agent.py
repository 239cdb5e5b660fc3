"""A user plug-in agent loaded from a file (`--plugin tests/plugin_agent.py`), exactly as users write one.

A tiny deterministic policy-gradient-free agent: fitted-Q with a BC actor, enough to exercise the API.
`nan_at_update` lets the tests check the non-finite guard.
"""
from dataclasses import dataclass

import torch

from offrl.agent import Agent, AgentConfig, register
from offrl.nets import Critic, DeterministicActor, per_seed_mean


@dataclass
class PluginConfig(AgentConfig):
    lr: float = 1e-3                   # Adam learning rate
    hidden: tuple[int, ...] = (32, 32)  # MLP hidden sizes
    nan_at_update: int = -1            # make the loss NaN from this update on (-1: never)


@register("plugin_bcq")
class PluginAgent(Agent):
    """Test plug-in: BC actor + SARSA critic."""
    Config = PluginConfig

    def __init__(self, spec, cfg, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        self.actor = DeterministicActor(spec.obs_dim, spec.act_dim, (seeds,), cfg.hidden)
        self.critic = Critic(spec.obs_dim, spec.act_dim, (seeds, 1), cfg.hidden)
        self.optimizer("all", self.parameters(), cfg.lr)
        self.to(self.device)

    def update(self, b):
        b = self.preprocess(b)
        noise = 0.1 * torch.randn_like(b.action)
        bc = per_seed_mean((self.actor(b.obs) - (b.action + noise).clamp(-1, 1)) ** 2)
        with torch.no_grad():
            y = b.reward + self.cfg.gamma * b.not_done * self.critic(b.next_obs, self.actor(b.next_obs))[:, 0]
        td = per_seed_mean((self.critic(b.obs, b.action)[:, 0] - y) ** 2)
        loss = bc + td
        if 0 <= self.cfg.nan_at_update <= self.num_updates:
            loss = loss * float("nan")
        self.optimizers["all"].zero_grad(set_to_none=True)
        loss.sum().backward()
        self.optimizers["all"].step()
        self.num_updates += 1
        return {"bc_loss": bc.detach(), "td_loss": td.detach()}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.actor(self.normalize(obs))

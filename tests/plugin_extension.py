"""A plug-in that uses the core's three extension points without touching anything under offrl/:
a per-row column of its own (plus a registered one), a synthetic data source refilled by a generator,
and a phase-hook action. Loaded with `--plugin tests/plugin_extension.py`, exactly as a user would.

Agent `plugin_ext`: BC actor + a critic whose TD target is floored by the Monte-Carlo return-to-go
(Cal-QL's calibration, simplified), rows weighted by the steps left in their episode. At the switch to
online it resets the critic's optimiser and halves the BC weight.
"""
from dataclasses import dataclass

import numpy as np
import torch

from offrl.agent import Agent, AgentConfig, register
from offrl.buffer import Column, SyntheticSource, register_source
from offrl.nets import Critic, DeterministicActor, per_seed_mean


def steps_left(rows):
    """T − t − 1: steps after the row until its episode ends [N]."""
    last = np.r_[np.flatnonzero(np.diff(rows.episode)), len(rows.episode) - 1]
    end = np.repeat(rows.step[last], np.diff(np.r_[-1, last]))
    return (end - rows.step).astype(np.float64)


STEPS_LEFT = Column("steps_left", steps_left, pending=-1.0, doc="steps after the row in its episode; −1 while running")


@register_source("jittered_copies")
def jittered_copies(buffer, agent, share, every, capacity, noise=0.01, seed=0):
    """Offline rows with Gaussian noise on the observations: a stand-in for a generative model."""
    def generate(source, agent, n):
        g = source.generator
        idx = torch.randint(buffer.offline_size, (buffer.seeds, n), generator=g, device=buffer.device)
        b = buffer.as_batch(buffer.offline[idx])
        jitter = noise * torch.randn(b.obs.shape, generator=g, device=buffer.device)
        return {"obs": b.obs + jitter, "action": b.action, "reward": b.reward, "next_obs": b.next_obs + jitter,
                "not_done": b.not_done}
    return SyntheticSource(buffer, generate, share, every, capacity, seed=seed)


@dataclass
class ExtConfig(AgentConfig):
    lr: float = 1e-3                   # Adam learning rate
    hidden: tuple[int, ...] = (32, 32)  # MLP hidden sizes
    synthetic_share: float = 0.25      # share of each batch from the jittered-copies source (0: no source)
    refill_every: int = 3              # gradient steps between refills of the source


@register("plugin_ext")
class ExtAgent(Agent):
    """Test plug-in using a declared column, a synthetic source and the phase hook."""
    Config = ExtConfig

    def __init__(self, spec, cfg, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        self.actor = DeterministicActor(spec.obs_dim, spec.act_dim, (seeds,), cfg.hidden)
        self.critic = Critic(spec.obs_dim, spec.act_dim, (seeds, 1), cfg.hidden)
        # per-member state, like every tensor of an agent (the member axis leads)
        self.register_buffer("bc_weight", torch.ones(seeds))
        self.register_buffer("phase_calls", torch.zeros(seeds, dtype=torch.long))
        self.optimizer("actor", self.actor.parameters(), cfg.lr)
        self.optimizer("critic", self.critic.parameters(), cfg.lr)
        self.to(self.device)

    def columns(self):
        return ("return_to_go", STEPS_LEFT)

    def sources(self):
        if self.cfg.synthetic_share == 0:
            return {}
        return {"synthetic": {"factory": "jittered_copies", "share": self.cfg.synthetic_share,
                              "every": self.cfg.refill_every, "capacity": 64}}

    def on_phase(self, phase):
        self.phase_calls += 1
        if phase.name == "online" and phase.previous == "offline":
            self.reset_optimizer("critic")
            self.bc_weight.mul_(0.5)

    def update(self, b):
        b = self.preprocess(b)
        noise = 0.1 * torch.randn_like(b.action)
        bc = per_seed_mean((self.actor(b.obs) - (b.action + noise).clamp(-1, 1)) ** 2)
        self.minimize("actor", self.bc_weight * bc)
        with torch.no_grad():
            y = b.reward + self.cfg.gamma * b.not_done * self.critic(b.next_obs, self.actor(b.next_obs))[:, 0]
            y = torch.maximum(y, b.return_to_go)                 # −inf (unknown yet) leaves y as it is
            w = 1.0 + (b.steps_left.clamp(min=0) > 0).float()    # rows with a future count twice
        td = per_seed_mean(w * (self.critic(b.obs, b.action)[:, 0] - y) ** 2)
        self.minimize("critic", td)
        self.num_updates += 1
        return {"bc_loss": bc.detach(), "td_loss": td.detach(), "steps_left": b.steps_left.mean(1)}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.actor(self.normalize(obs))

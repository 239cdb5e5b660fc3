"""SAC (Haarnoja et al., 2018, with automatic temperature): online, and O2O from a dataset."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from offrl.agent import Agent, AgentConfig, register
from offrl.fields import Positive, Sizes, Unit
from offrl.nets import Critic, TanhGaussianActor, per_seed_mean, soft_update, target


@dataclass
class SACConfig(AgentConfig):
    actor_lr: Positive = 3e-4          # Adam learning rate of the policy
    critic_lr: Positive = 3e-4         # Adam learning rate of the twin critics
    alpha_lr: Positive = 3e-4          # Adam learning rate of log α
    tau: Unit = 0.005                  # Polyak rate of the target critics
    init_alpha: Positive = 1.0         # initial entropy temperature α
    autotune_alpha: bool = True        # learn α so that the policy entropy tracks the target
    target_entropy_scale: float = 1.0  # target entropy = −scale·|A|
    log_std_min: float = -20.0         # clamp of the policy's log σ
    log_std_max: float = 2.0
    hidden: Sizes = (256, 256)         # MLP hidden sizes


@register("sac")
class SAC(Agent):
    """Soft Actor-Critic with twin critics and learned α. Faithfulness: SAC v2 (Haarnoja et al. 2018b)
    defaults; the critic loss sums the twin MSEs as CleanRL/TD3 do (the paper's ½ factor only rescales)."""
    Config = SACConfig
    LOOP_DEFAULTS = {"random_steps": 5000}   # uniform-random env steps before the policy acts (from scratch)

    def __init__(self, spec, cfg: SACConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        O, A = spec.obs_dim, spec.act_dim
        self.actor = TanhGaussianActor(O, A, (seeds,), cfg.hidden, cfg.log_std_min, cfg.log_std_max)
        self.critic = Critic(O, A, (seeds, 2), cfg.hidden)
        self.critic_target = target(self.critic)
        self.log_alpha = nn.Parameter(torch.full((seeds,), float(cfg.init_alpha)).log())
        self.target_entropy = -cfg.target_entropy_scale * A
        self.optimizer("actor", self.actor.parameters(), cfg.actor_lr)
        self.optimizer("critic", self.critic.parameters(), cfg.critic_lr)
        self.optimizer("alpha", [self.log_alpha], cfg.alpha_lr)
        self.to(self.device)

    def update(self, b):
        cfg, b = self.cfg, self.preprocess(b)
        alpha = self.log_alpha.detach().exp()[:, None]                               # [S, 1]
        with torch.no_grad():
            next_a, next_logp = self.actor(b.next_obs)
            q_next = self.critic_target(b.next_obs, next_a).min(1).values - alpha * next_logp
            y = b.reward + cfg.gamma * b.not_done * q_next                           # [S, B]
        q = self.critic(b.obs, b.action)                                             # [S, 2, B]
        critic_loss = ((q - y[:, None]) ** 2).mean(-1).sum(1)
        self.minimize("critic", critic_loss)

        a, logp = self.actor(b.obs)
        q_pi = self.critic(b.obs, a).min(1).values
        actor_loss = per_seed_mean(alpha * logp - q_pi)
        self.minimize("actor", actor_loss)
        metrics = {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
                   "q": q.detach().mean((1, 2)), "alpha": alpha[:, 0], "entropy": -logp.detach().mean(1)}
        if cfg.autotune_alpha:
            alpha_loss = -self.log_alpha * (logp.detach().mean(1) + self.target_entropy)   # [S]
            self.minimize("alpha", alpha_loss)
            metrics["alpha_loss"] = alpha_loss.detach()
        soft_update(self.critic_target, self.critic, cfg.tau)
        self.num_updates += 1
        return metrics

    def action_log_likelihood(self, obs, action):
        """log π(a|s) [S, B] of the tanh-Gaussian policy (actions clipped to ±0.999 before atanh)."""
        return self.actor.log_prob(self.normalize(obs), action)

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.actor(self.normalize(obs), deterministic)[0]

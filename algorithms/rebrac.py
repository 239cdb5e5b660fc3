"""ReBRAC (Tarasov, Kurenkov, Nikulin & Kolesnikov, 2023): TD3+BC revisited — LayerNorm critics, a BC
penalty in the actor loss and in the critic's target, large batches, deeper nets, higher learning rates."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.agent import Agent, AgentConfig, register
from offrl.fields import AtLeastOne, NonNegative, Positive, Sizes, Unit
from offrl.nets import Critic, DeterministicActor, edac_init, per_seed_mean, soft_update, target


@dataclass
class ReBRACConfig(AgentConfig):
    batch_size: AtLeastOne = 1024      # transitions per seed per gradient step
    actor_bc_coef: NonNegative = 0.01  # β₁: weight of Σ(π(s) − a)² against the normalised Q in the actor loss
    critic_bc_coef: NonNegative = 0.01  # β₂: Σ(a' − a'_data)² subtracted from the target Q at s'
    normalize_q: bool = True           # divide the actor's Q by the batch's mean |Q| (no gradient through it)
    actor_lr: Positive = 1e-3          # Adam learning rate of the actor
    critic_lr: Positive = 1e-3         # Adam learning rate of the twin critics
    tau: Unit = 0.005                  # Polyak rate of the target networks
    policy_noise: NonNegative = 0.2    # std of the target policy smoothing noise
    noise_clip: NonNegative = 0.5      # clip of the target policy smoothing noise
    policy_freq: AtLeastOne = 2        # actor and targets are updated every k critic steps
    exploration_noise: NonNegative = 0.1  # std of Gaussian action noise when acting online
    actor_layernorm: bool = False      # LayerNorm (after each ReLU) in the actor
    critic_layernorm: bool = True      # LayerNorm (after each ReLU) in the critics
    hidden: Sizes = (256, 256, 256)    # actor and critic MLPs
    reset_optimizers: bool = False     # forget both Adams' moments when online fine-tuning starts


@register("rebrac")
class ReBRAC(Agent):
    """ReBRAC, offline and offline-to-online. Faithfulness: CORL's rebrac.py (a port of the official JAX
    code): LayerNorm after the ReLU (ε 1e-6, Flax's), the EDAC-paper init, min over the twin critics in
    the actor loss, targets updated on actor steps, hopper-medium's β₁ = β₂ = 0.01 as defaults.
    Deviations: the β's are tuned per dataset in the paper (set them with --set); the next dataset action
    of an episode's last row is its own action (the official loader drops time-limit rows and pairs a
    terminal row with the next episode's first action, which the terminal mask then ignores); antmaze
    settings (rewards ×100, its β's) are not preset; O2O keeps the offline losses on 50/50 batches
    (CORL's mixing ratio), with an optional optimiser reset, but not the paper's β decay."""
    Config = ReBRACConfig
    DEFAULTS = {"o2o": {"buffer_mixing": "fixed", "offline_fraction": 0.5}}

    def __init__(self, spec, cfg: ReBRACConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        O, A, ln = spec.obs_dim, spec.act_dim, dict(layernorm="after_relu", ln_eps=1e-6)
        self.actor = DeterministicActor(O, A, (seeds,), cfg.hidden, **(ln if cfg.actor_layernorm else {}))
        self.critic = Critic(O, A, (seeds, 2), cfg.hidden, **(ln if cfg.critic_layernorm else {}))
        edac_init(self.actor.net, 1e-3)
        edac_init(self.critic.net, 3e-3)
        self.actor_target, self.critic_target = target(self.actor), target(self.critic)
        self.optimizer("actor", self.actor.parameters(), cfg.actor_lr)
        self.optimizer("critic", self.critic.parameters(), cfg.critic_lr)
        self.to(self.device)

    def columns(self):
        return ("next_action",)

    def on_phase(self, phase):
        if phase.previous == "offline" and self.cfg.reset_optimizers:
            self.reset_optimizer("actor")
            self.reset_optimizer("critic")

    def update(self, b):
        cfg, b = self.cfg, self.preprocess(b)
        # 1. critics onto r + γ (min Q_target(s', a') − β₂ Σ(a' − a'_data)²), a' = smoothed target policy
        with torch.no_grad():
            noise = (torch.randn_like(b.action) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
            next_a = (self.actor_target(b.next_obs) + noise).clamp(-1.0, 1.0)
            penalty = ((next_a - b.next_action) ** 2).sum(-1)                         # [S, B]
            q_next = self.critic_target(b.next_obs, next_a).min(1).values - cfg.critic_bc_coef * penalty
            y = b.reward + cfg.gamma * b.not_done * q_next
        q = self.critic(b.obs, b.action)                                             # [S, 2, B]
        critic_loss = ((q - y[:, None]) ** 2).mean(-1).sum(1)                        # [S]
        self.minimize("critic", critic_loss)
        metrics = {"critic_loss": critic_loss.detach(), "q": q.detach().mean((1, 2)),
                   "target_bc_penalty": penalty.mean(1)}
        # 2. every policy_freq steps: actor on β₁ Σ(π(s) − a)² − λ min Q(s, π(s)), λ = 1/mean|Q|; targets
        if self.num_updates % cfg.policy_freq == 0:
            pi = self.actor(b.obs)
            q_pi = self.critic(b.obs, pi).min(1).values                                # [S, B]
            lmbda = 1.0 / q_pi.abs().mean(1, keepdim=True).detach() if cfg.normalize_q else 1.0
            bc = ((pi - b.action) ** 2).sum(-1)
            actor_loss = per_seed_mean(cfg.actor_bc_coef * bc - lmbda * q_pi)
            self.minimize("actor", actor_loss)
            soft_update(self.critic_target, self.critic, cfg.tau)
            soft_update(self.actor_target, self.actor, cfg.tau)
            metrics.update(actor_loss=actor_loss.detach(), actor_bc=bc.detach().mean(1))
        self.num_updates += 1
        return metrics

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        a = self.actor(self.normalize(obs))
        if deterministic:
            return a
        return (a + self.cfg.exploration_noise * torch.randn_like(a)).clamp(-1.0, 1.0)

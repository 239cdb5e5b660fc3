"""TD3 (Fujimoto, van Hoof & Meger, 2018): twin critics with clipped double-Q targets, target policy
smoothing and delayed deterministic-policy updates; online, or fine-tuning after an offline phase."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.agent import Agent, AgentConfig, register
from offrl.fields import AtLeastOne, NonNegative, Positive, Sizes, Unit
from offrl.nets import Critic, DeterministicActor, per_seed_mean, soft_update, target


@dataclass
class TD3Config(AgentConfig):
    actor_lr: Positive = 3e-4          # Adam learning rate of the actor
    critic_lr: Positive = 3e-4         # Adam learning rate of the twin critics
    tau: Unit = 0.005                  # Polyak rate of the target networks
    policy_noise: NonNegative = 0.2    # std of the target policy smoothing noise
    noise_clip: NonNegative = 0.5      # clip of the target policy smoothing noise
    policy_freq: AtLeastOne = 2        # actor and targets are updated every k critic steps
    exploration_noise: NonNegative = 0.1  # std of Gaussian action noise when acting online
    hidden: Sizes = (256, 256)         # MLP hidden sizes of actor and critics


@register("td3")
class TD3(Agent):
    """Twin Delayed DDPG. Faithfulness: the official code's defaults (256-256 nets, lr 3e-4, 25,000
    uniform-random steps before the policy acts, exploration noise 0.1); deviations: none."""
    Config = TD3Config
    LOOP_DEFAULTS = {"random_steps": 25_000}   # official code's start_timesteps (from scratch)

    def __init__(self, spec, cfg: TD3Config, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        self.actor, self.critic = self.networks(spec.obs_dim, spec.act_dim, seeds)
        self.actor_target, self.critic_target = target(self.actor), target(self.critic)
        self.optimizer("actor", self.actor.parameters(), cfg.actor_lr)
        self.optimizer("critic", self.critic.parameters(), cfg.critic_lr)
        self.to(self.device)

    def networks(self, O: int, A: int, seeds: int) -> tuple[DeterministicActor, Critic]:
        """The actor and the twin critics (one module, members (seeds, 2))."""
        return DeterministicActor(O, A, (seeds,), self.cfg.hidden), Critic(O, A, (seeds, 2), self.cfg.hidden)

    def next_q(self, b, next_a: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The clipped double-Q value of s' [S, B] at the smoothed target action next_a [S, B, A], and
        metrics [S] (none here; ReBRAC subtracts its BC penalty)."""
        return self.critic_target(b.next_obs, next_a).min(1).values, {}

    def after_critic(self, b, next_a: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Further steps between the critic's and the actor's, given the smoothed next action [S, B, A] and
        the critic's target y [S, B]; returns metrics [S] (none here; A2PR trains its V and VAE)."""
        return {}

    def actor_loss(self, pi: torch.Tensor, b) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """−Q1(s, π(s)) averaged per seed [S] for pi = π(s) [S, B, A]; and metrics [S]."""
        return per_seed_mean(-self.critic(b.obs, pi, ensemble=slice(0, 1))[:, 0]), {}

    def update(self, b):
        cfg, b = self.cfg, self.preprocess(b)
        with torch.no_grad():
            noise = (torch.randn_like(b.action) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
            next_a = (self.actor_target(b.next_obs) + noise).clamp(-1.0, 1.0)
            q_next, metrics = self.next_q(b, next_a)                                 # [S, B]
            y = b.reward + cfg.gamma * b.not_done * q_next
        q = self.critic(b.obs, b.action)                                             # [S, 2, B]
        critic_loss = ((q - y[:, None]) ** 2).mean(-1).sum(1)                        # MSE(Q1)+MSE(Q2), [S]
        self.minimize("critic", critic_loss)
        metrics.update(critic_loss=critic_loss.detach(), q=q.detach().mean((1, 2)), **self.after_critic(b, next_a, y))

        if self.num_updates % cfg.policy_freq == 0:
            actor_loss, actor_metrics = self.actor_loss(self.actor(b.obs), b)
            self.minimize("actor", actor_loss)
            soft_update(self.critic_target, self.critic, cfg.tau)
            soft_update(self.actor_target, self.actor, cfg.tau)
            metrics.update(actor_metrics, actor_loss=actor_loss.detach())
        self.num_updates += 1
        return metrics

    def action_log_likelihood(self, obs, action):
        """The deterministic actor's surrogate: log N(a; π(s), I) up to a constant = −½‖a − π(s)‖² [S, B]."""
        return -0.5 * ((action - self.actor(self.normalize(obs))) ** 2).sum(-1)

    def diagnostics(self, obs):
        """|u|, the actor's pre-tanh output, averaged over action dimensions at each probe state [S, K]. A seed
        whose actor ran into tanh's flat tails (|u| ≫ 3, tanh′ < 0.01: neither the Q term nor a BC term can
        move it back) stands out here: a dead ReBRAC seed of results/zoo sat at median |u| 98.8, live ones 0.6."""
        return {"actor_preact_abs": self.actor.net(self.normalize(obs)).abs().mean(-1)}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        a = self.actor(self.normalize(obs))
        if deterministic:
            return a
        return (a + self.cfg.exploration_noise * torch.randn_like(a)).clamp(-1.0, 1.0)

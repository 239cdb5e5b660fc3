"""AWAC (Nair, Gupta, Dalal & Levine, 2020): twin-Q TD learning on the policy's own next actions and an
advantage-weighted actor, with one update rule offline and online."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.agent import Agent, AgentConfig, register
from offrl.fields import Positive, Sizes, Unit
from offrl.nets import Critic, GaussianActor, per_seed_mean, soft_update, target


def awac_weights(q_data: torch.Tensor, q_pi: torch.Tensor, lam: float, max_weight: float) -> torch.Tensor:
    """exp((Q(s, a) − Q(s, a_π)) / λ), clipped at `max_weight`: the actor's regression weights [S, B]."""
    return torch.exp((q_data - q_pi) / lam).clamp(max=max_weight)


@dataclass
class AWACConfig(AgentConfig):
    normalize_obs: bool = True         # CORL standardises states with the dataset's mean/std (+1e-3)
    awac_lambda: Positive = 0.3333     # λ: actor weights exp(A/λ) (CORL's locomotion configs; antmaze, adroit: 0.1)
    exp_adv_max: Positive = 100.0      # clip of the actor weights
    actor_lr: Positive = 3e-4          # Adam learning rate of the policy
    critic_lr: Positive = 3e-4         # Adam learning rate of the twin critics
    tau: Unit = 0.005                  # Polyak rate of the target critics
    log_std_min: float = -20.0         # clip of the policy's state-independent log σ
    log_std_max: float = 2.0
    hidden: Sizes = (256, 256, 256)    # three hidden layers for the policy and the critics (CORL)


@register("awac")
class AWAC(Agent):
    """Advantage-weighted actor-critic, offline and offline-to-online (online transitions join the buffer).
    Faithfulness: CORL's awac.py (offline and finetune share the update) and its per-dataset λ;
    deviations: none in the math (CORL's policy mean is unbounded, as here; actions are clipped)."""
    Config = AWACConfig
    policy_conditioning = 0            # extra policy inputs after the state (FamO2O's β embedding)
    DEFAULTS = {
        "antmaze": {"awac_lambda": 0.1, "reward_transform": "antmaze"},
        "adroit": {"awac_lambda": 0.1},
    }

    def __init__(self, spec, cfg: AWACConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        O, A = spec.obs_dim, spec.act_dim
        self.actor = GaussianActor(O + self.policy_conditioning, A, (seeds,), cfg.hidden, cfg.log_std_min, cfg.log_std_max, tanh_mean=False)
        self.critic = Critic(O, A, (seeds, 2), cfg.hidden)                   # twin critics, one module
        self.critic_target = target(self.critic)
        self.optimizer("actor", self.actor.parameters(), cfg.actor_lr)
        self.optimizer("critic", self.critic.parameters(), cfg.critic_lr)
        self.to(self.device)

    def update(self, b):
        cfg, b = self.cfg, self.preprocess(b)
        # 1. critic: TD onto r + γ min Q_target(s', a'), a' ~ π(s')
        with torch.no_grad():
            next_a = self.actor.sample(b.next_obs)
            y = b.reward + cfg.gamma * b.not_done * self.critic_target(b.next_obs, next_a).min(1).values
        q = self.critic(b.obs, b.action)                                             # [S, 2, B]
        critic_loss = ((q - y[:, None]) ** 2).mean(-1).sum(1)                        # MSE(Q1)+MSE(Q2), [S]
        self.minimize("critic", critic_loss)
        # 2. actor: weighted log-likelihood of dataset actions, A = min Q(s, a) − min Q(s, a_π), new critic
        with torch.no_grad():
            q_data = self.critic(b.obs, b.action).min(1).values
            q_pi = self.critic(b.obs, self.actor.sample(b.obs)).min(1).values
            weights = awac_weights(q_data, q_pi, cfg.awac_lambda, cfg.exp_adv_max)   # [S, B]
        actor_loss = per_seed_mean(-weights * self.actor.log_prob(b.obs, b.action))
        self.minimize("actor", actor_loss)
        soft_update(self.critic_target, self.critic, cfg.tau)
        self.num_updates += 1
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
                "q": q.detach().mean((1, 2)), "adv": (q_data - q_pi).mean(1)}

    def action_log_likelihood(self, obs, action):
        """log π(a|s) [S, B] of the Gaussian policy (its mean and σ before the action clip)."""
        return self.actor.log_prob(self.normalize(obs), action)

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.actor.sample(self.normalize(obs), deterministic)

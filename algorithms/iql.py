"""IQL (Kostrikov, Nair & Levine, 2021): expectile value, in-sample TD critic, AWR actor."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch

from offrl.agent import Agent, AgentConfig, register
from offrl.data.dataset import REWARD_TRANSFORMS
from offrl.fields import Check, Count, NonNegative, OneOf, Positive, Sizes, Unit
from offrl.nets import Critic, GaussianActor, ValueNet, per_seed_mean, soft_update, target


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """|τ − 1(u < 0)| · u² elementwise, u = Q − V: the asymmetric L2 whose minimiser is the τ-expectile."""
    return torch.where(diff < 0, 1.0 - expectile, expectile) * diff.square()


@dataclass
class IQLConfig(AgentConfig):
    reward_transform: OneOf(*REWARD_TRANSFORMS) = "iql_locomotion"  # r·1000/(R_max−R_min) on locomotion; antmaze: r−1
    expectile: Annotated[float, Check(gt=0, lt=1)] = 0.7  # τ of the expectile regression of V onto min Q_target
    temperature: NonNegative = 3.0     # β: AWR weight exp(β·(Q−V))
    exp_adv_max: Positive = 100.0      # clip of the AWR weight
    actor_lr: Positive = 3e-4          # Adam learning rate of the policy
    critic_lr: Positive = 3e-4         # Adam learning rate of the twin Q
    value_lr: Positive = 3e-4          # Adam learning rate of V
    actor_lr_decay_steps: Count = 1_000_000  # cosine decay of the actor lr to 0 over this many steps (0: none)
    tau: Unit = 0.005                  # Polyak rate of the target Q
    dropout: Annotated[float, Check(ge=0, lt=1)] = 0.0  # dropout in the policy MLP (adroit/kitchen: 0.1)
    hidden: Sizes = (256, 256)         # MLP hidden sizes


@register("iql")
class IQL(Agent):
    """Implicit Q-Learning, offline and offline-to-online. Faithfulness: the official JAX code's order,
    inits (orthogonal √2) and per-domain configs; deviation: online rewards get the same transform as
    the dataset (the official fine-tuning script leaves online locomotion rewards unscaled)."""
    Config = IQLConfig
    policy_conditioning = 0            # extra policy inputs after the state (FamO2O's β embedding)
    DEFAULTS = {
        "antmaze": {"expectile": 0.9, "temperature": 10.0, "reward_transform": "antmaze"},
        "adroit": {"expectile": 0.7, "temperature": 0.5, "dropout": 0.1, "reward_transform": "none"},
        "kitchen": {"expectile": 0.7, "temperature": 0.5, "dropout": 0.1, "reward_transform": "none"},  # paper: as Adroit
        "maze": {"reward_transform": "none"},  # no published IQL maze2d setting: locomotion τ, β; 0/1 rewards as given
        "classic": {},
        "o2o": {"actor_lr_decay_steps": 0},          # the fine-tuning configs do not decay the lr
    }

    def __init__(self, spec, cfg: IQLConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        O, A, init = spec.obs_dim, spec.act_dim, dict(init="orthogonal", gain=math.sqrt(2))
        self.actor = GaussianActor(O + self.policy_conditioning, A, (seeds,), cfg.hidden, dropout=cfg.dropout, **init)
        self.critic = Critic(O, A, (seeds, 2), cfg.hidden, **init)
        self.value = ValueNet(O, (seeds,), cfg.hidden, **init)
        self.critic_target = target(self.critic)
        # Actor and critic steps both depend only on the new V, not on each other (as in the official
        # update), so they share one backward and one Adam with a param group each: the same math.
        opt = self.optimizer("actor_critic", [{"params": self.actor.parameters(), "lr": cfg.actor_lr},
                                              {"params": self.critic.parameters(), "lr": cfg.critic_lr}], cfg.actor_lr)
        self.optimizer("value", self.value.parameters(), cfg.value_lr)
        if cfg.actor_lr_decay_steps > 0:
            T = cfg.actor_lr_decay_steps      # optax.cosine_decay_schedule: stays at 0 after T steps
            self.schedulers["actor"] = torch.optim.lr_scheduler.LambdaLR(
                opt, [lambda t: 0.5 * (1 + math.cos(math.pi * min(t, T) / T)), lambda t: 1.0])
        self.to(self.device)

    def update(self, b):
        cfg, b = self.cfg, self.preprocess(b)
        with torch.no_grad():
            q_t = self.critic_target(b.obs, b.action).min(1).values                  # [S, B]
        # 1. V ← expectile of min Q_target
        value_loss = per_seed_mean(expectile_loss(q_t - self.value(b.obs), cfg.expectile))
        self.minimize("value", value_loss)
        # 2. actor: advantage-weighted regression with the new V
        with torch.no_grad():
            v, next_v = self.value(torch.cat([b.obs, b.next_obs], 1)).chunk(2, 1)   # new V at s and s'
            exp_adv = torch.exp((q_t - v) * cfg.temperature).clamp(max=cfg.exp_adv_max)
        actor_loss = per_seed_mean(-exp_adv * self.actor.log_prob(b.obs, b.action))
        # 3. critic: TD onto r + γ V(s')
        y = b.reward + cfg.gamma * b.not_done * next_v
        q = self.critic(b.obs, b.action)                                             # [S, 2, B]
        critic_loss = ((q - y[:, None]) ** 2).mean(-1).sum(1)                        # [S]
        self.minimize("actor_critic", actor_loss + critic_loss)
        if "actor" in self.schedulers:
            self.schedulers["actor"].step()
        soft_update(self.critic_target, self.critic, cfg.tau)
        self.num_updates += 1
        return {"value_loss": value_loss.detach(), "actor_loss": actor_loss.detach(),
                "critic_loss": critic_loss.detach(), "q": q.detach().mean((1, 2)),
                "adv": (q_t - v).mean(1)}

    def action_log_likelihood(self, obs, action):
        """log π(a|s) [S, B] of the Gaussian policy (its mean and σ before the action clip)."""
        return self.actor.log_prob(self.normalize(obs), action)

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.actor.sample(self.normalize(obs), deterministic)

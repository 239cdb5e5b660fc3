"""TD3+BC (Fujimoto & Gu, 2021): TD3 with a behaviour-cloning term and a Q-scale-free weight λ."""
from __future__ import annotations

from dataclasses import dataclass

from offrl.agent import register
from offrl.fields import NonNegative
from offrl.nets import per_seed_mean
from offrl.algorithms.td3 import TD3, TD3Config


@dataclass
class TD3BCConfig(TD3Config):
    normalize_obs: bool = True         # the paper standardises states with dataset mean/std (+1e-3)
    alpha: NonNegative = 2.5           # λ = α / mean|Q(s, π(s))|: weight of Q against BC in the actor loss


@register("td3_bc")
class TD3BC(TD3):
    """TD3+BC: TD3 whose actor also regresses onto dataset actions, with Q scaled by λ = α/mean|Q|.
    Faithfulness: defaults from the paper and its official code (TD3's networks, noise and delays);
    deviations: none."""
    Config = TD3BCConfig
    LOOP_DEFAULTS = {}                 # starts from its offline policy: no random warm-up

    def actor_loss(self, pi, b):
        """−λ Q1(s, π(s)) + (π(s) − a)², λ per seed from this batch's mean |Q1| (no gradient through λ)."""
        q1 = self.critic(b.obs, pi, ensemble=slice(0, 1))[:, 0]                      # Q1 only, [S, B]
        lmbda = self.cfg.alpha / q1.abs().mean(1, keepdim=True).detach()              # [S, 1]
        return per_seed_mean(-lmbda * q1) + per_seed_mean((pi - b.action) ** 2), {}

"""ReBRAC (Tarasov, Kurenkov, Nikulin & Kolesnikov, 2023): TD3+BC revisited — LayerNorm critics, a BC
penalty in the actor loss and in the critic's target, large batches, deeper nets, higher learning rates."""
from __future__ import annotations

from dataclasses import dataclass

from offrl.agent import register
from offrl.fields import AtLeastOne, NonNegative, Positive, Sizes
from offrl.nets import Critic, DeterministicActor, edac_init, per_seed_mean
from offrl.algorithms.td3 import TD3, TD3Config


@dataclass
class ReBRACConfig(TD3Config):
    batch_size: AtLeastOne = 1024      # transitions per seed per gradient step
    actor_bc_coef: NonNegative = 0.01  # β₁: weight of Σ(π(s) − a)² against the normalised Q in the actor loss
    critic_bc_coef: NonNegative = 0.01  # β₂: Σ(a' − a'_data)² subtracted from the target Q at s'
    normalize_q: bool = True           # divide the actor's Q by the batch's mean |Q| (no gradient through it)
    actor_lr: Positive = 1e-3          # Adam learning rate of the actor
    critic_lr: Positive = 1e-3         # Adam learning rate of the twin critics
    actor_layernorm: bool = False      # LayerNorm (after each ReLU) in the actor
    critic_layernorm: bool = True      # LayerNorm (after each ReLU) in the critics
    hidden: Sizes = (256, 256, 256)    # actor and critic MLPs
    reset_optimizers: bool = False     # forget both Adams' moments when online fine-tuning starts


@register("rebrac")
class ReBRAC(TD3):
    """ReBRAC, offline and offline-to-online. Faithfulness: CORL's rebrac.py (a port of the official JAX
    code) on TD3's update (smoothed targets, delayed actor and target steps): LayerNorm after the ReLU
    (ε 1e-6, Flax's), the EDAC-paper init, min over the twin critics in the actor loss, hopper-medium's
    β₁ = β₂ = 0.01 as defaults. Deviations: the β's are tuned per dataset in the paper (set them with
    --set); the next dataset action of an episode's last row is its own action (the official loader drops
    time-limit rows and pairs a terminal row with the next episode's first action, which the terminal
    mask then ignores); antmaze settings (rewards ×100, its β's) are not preset; O2O keeps the offline
    losses on 50/50 batches (CORL's mixing ratio), with an optional optimiser reset, not the β decay."""
    Config = ReBRACConfig
    LOOP_DEFAULTS = {}
    DEFAULTS = {"o2o": {"buffer_mixing": "fixed", "offline_fraction": 0.5}}

    def networks(self, O, A, seeds):
        cfg, ln = self.cfg, dict(layernorm="after_relu", ln_eps=1e-6)
        actor = DeterministicActor(O, A, (seeds,), cfg.hidden, **(ln if cfg.actor_layernorm else {}))
        critic = Critic(O, A, (seeds, 2), cfg.hidden, **(ln if cfg.critic_layernorm else {}))
        edac_init(actor.net, 1e-3)
        edac_init(critic.net, 3e-3)
        return actor, critic

    def columns(self):
        return ("next_action",)

    def on_phase(self, phase):
        if phase.previous == "offline" and self.cfg.reset_optimizers:
            self.reset_optimizer("actor")
            self.reset_optimizer("critic")

    def next_q(self, b, next_a):
        """min Q_target(s', a') − β₂ Σ(a' − a'_data)²."""
        penalty = ((next_a - b.next_action) ** 2).sum(-1)                             # [S, B]
        q_next = self.critic_target(b.next_obs, next_a).min(1).values - self.cfg.critic_bc_coef * penalty
        return q_next, {"target_bc_penalty": penalty.mean(1)}

    def actor_loss(self, pi, b):
        """β₁ Σ(π(s) − a)² − λ min_i Q_i(s, π(s)), λ = 1/mean|min Q| per seed (no gradient through λ)."""
        q_pi = self.critic(b.obs, pi).min(1).values                                    # [S, B]
        lmbda = 1.0 / q_pi.abs().mean(1, keepdim=True).detach() if self.cfg.normalize_q else 1.0
        bc = ((pi - b.action) ** 2).sum(-1)
        return per_seed_mean(self.cfg.actor_bc_coef * bc - lmbda * q_pi), {"actor_bc": bc.detach().mean(1)}

"""ReBRAC (Tarasov, Kurenkov, Nikulin & Kolesnikov, 2023): TD3+BC revisited — LayerNorm critics, a BC
penalty in the actor loss and in the critic's target, large batches, deeper nets, higher learning rates."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.agent import register
from offrl.fields import AtLeastOne, NonNegative, Positive, Sizes, Unit
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
    online_bc_decay: bool = True       # fine-tuning as the official code: β₁ decays linearly over the online updates, β₂ = 0
    min_bc_decay: Unit = 0.0           # floor of β₁'s online decay factor (official min_decay_coef)


@register("rebrac")
class ReBRAC(TD3):
    """ReBRAC, offline and offline-to-online. Faithfulness: CORL's rebrac.py (a port of the official JAX
    code) on TD3's update (smoothed targets, delayed actor and target steps): LayerNorm after the ReLU
    (ε 1e-6, Flax's), the EDAC-paper init, min over the twin critics in the actor loss; β₁, β₂ per dataset
    from CORL's configs (DATASET_DEFAULTS; hopper-medium's 0.01, 0.01 elsewhere). O2O as the official
    rebrac_finetune.py: 50/50 offline/online batches, exploration noise 0.03, β₁ decayed linearly to
    `min_bc_decay`·β₁ over the online updates, β₂ = 0 online, optional optimiser reset. Deviations: the
    next dataset action of an episode's last row is its own action (the official loader drops time-limit
    rows and pairs a terminal row with the next episode's first action, which the terminal mask then
    ignores); antmaze settings (rewards ×100, its β's and fine-tuning learning rates) are not preset."""
    Config = ReBRACConfig
    LOOP_DEFAULTS = {}
    DEFAULTS = {"o2o": {"buffer_mixing": "fixed", "offline_fraction": 0.5, "exploration_noise": 0.03}}
    # (β₁ actor, β₂ critic) per D4RL dataset, CORL's configs/offline/rebrac (from the paper's tuning).
    DATASET_DEFAULTS = {f"{task}-{level}": {"actor_bc_coef": b1, "critic_bc_coef": b2} for task, level, b1, b2 in [
        ("halfcheetah", "random", 0.001, 0.1), ("halfcheetah", "medium", 0.001, 0.01),
        ("halfcheetah", "expert", 0.01, 0.01), ("halfcheetah", "medium-expert", 0.01, 0.1),
        ("halfcheetah", "medium-replay", 0.01, 0.001), ("halfcheetah", "full-replay", 0.001, 0.1),
        ("hopper", "random", 0.001, 0.01), ("hopper", "medium", 0.01, 0.01),
        ("hopper", "expert", 0.1, 0.1), ("hopper", "medium-expert", 0.1, 0.01),
        ("hopper", "medium-replay", 0.05, 0.5), ("hopper", "full-replay", 0.01, 0.01),
        ("walker2d", "random", 0.01, 0.0), ("walker2d", "medium", 0.05, 0.1),
        ("walker2d", "expert", 0.01, 0.5), ("walker2d", "medium-expert", 0.01, 0.01),
        ("walker2d", "medium-replay", 0.05, 0.01), ("walker2d", "full-replay", 0.01, 0.01)]}

    def __init__(self, spec, cfg: ReBRACConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        # Where β₁'s online decay starts (an update count) and how many updates it spans; checkpointed.
        # Per seed [S], as every state on the member axis.
        self.register_buffer("bc_decay_from", torch.zeros(seeds, device=self.device))
        self.register_buffer("bc_decay_over", torch.ones(seeds, device=self.device))

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
        if phase.name == "online":
            self.bc_decay_from.fill_(self.num_updates)
            self.bc_decay_over.fill_(max(phase.updates, 1))

    def bc_coefs(self) -> tuple[torch.Tensor | float, float]:
        """(β₁, β₂) of this update: the configured values offline; when fine-tuning online (with
        `online_bc_decay`), β₁·max(min_bc_decay, 1 − k/K) [S, 1] after k of the K online updates, and β₂ = 0."""
        cfg = self.cfg
        if self.phase != "online" or not cfg.online_bc_decay:
            return cfg.actor_bc_coef, cfg.critic_bc_coef
        done = (self.num_updates - self.bc_decay_from) / self.bc_decay_over
        return cfg.actor_bc_coef * (1.0 - done).clamp(min=cfg.min_bc_decay)[:, None], 0.0

    def next_q(self, b, next_a):
        """min Q_target(s', a') − β₂ Σ(a' − a'_data)²."""
        penalty = ((next_a - b.next_action) ** 2).sum(-1)                             # [S, B]
        q_next = self.critic_target(b.next_obs, next_a).min(1).values - self.bc_coefs()[1] * penalty
        return q_next, {"target_bc_penalty": penalty.mean(1)}

    def actor_loss(self, pi, b):
        """β₁ Σ(π(s) − a)² − λ min_i Q_i(s, π(s)), λ = 1/mean|min Q| per seed (no gradient through λ)."""
        q_pi = self.critic(b.obs, pi).min(1).values                                    # [S, B]
        lmbda = 1.0 / q_pi.abs().mean(1, keepdim=True).detach() if self.cfg.normalize_q else 1.0
        bc = ((pi - b.action) ** 2).sum(-1)
        beta = self.bc_coefs()[0]
        metrics = {"actor_bc": bc.detach().mean(1)}
        if isinstance(beta, torch.Tensor):              # the decaying online weight [S, 1]; offline it is the config's
            metrics["actor_bc_coef"] = beta[:, 0].detach()
        return per_seed_mean(beta * bc - lmbda * q_pi), metrics

"""A2PR (Liu, Zhang, Hu, et al., ICML 2024): TD3+BC whose actor is pulled not towards every dataset action
but towards the higher-advantage of {dataset action, a VAE's reconstruction of the actor's own action},
with a VAE trained only on positive-advantage data and a value net as the advantage baseline."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from offrl.agent import register
from offrl.fields import AtLeastOne, NonNegative, Positive, Sizes
from offrl.nets import MLP, Critic, DeterministicActor, ValueNet, per_seed_mean
from offrl.algorithms.td3 import TD3, TD3Config


def regularisation_target(adv_vae, adv_data, a_vae, action, mask: float, weight_sum: bool = True):
    """The actor's regression target and weight: a* = ã_π where A(ã_π) ≥ A(a), else the data action a
    ([S, B, A]); weight m·(1{A(ã_π) ≥ 0} + 1{A(a) > 0}) ∈ {0, m, 2m} (the code's), or with `weight_sum`
    False m·1{A(a*) ≥ 0} ([S, B]). Advantages [S, B] carry no gradient."""
    use_vae = adv_vae >= adv_data
    if weight_sum:
        weight = mask * ((adv_vae >= 0).float() + (adv_data > 0).float())
    else:
        weight = mask * torch.where(use_vae, adv_vae >= 0, adv_data > 0).float()
    return torch.where(use_vae[..., None], a_vae, action), weight, use_vae


@dataclass
class A2PRConfig(TD3Config):
    normalize_obs: bool = True         # per-dimension dataset mean/std (+1e-3), training and evaluation alike
    alpha: NonNegative = 2.5           # λ = α / mean|Q1(s, π(s))|: weight of Q against the regulariser
    vae_weight: NonNegative = 1.5      # w_vae: weight of the advantage-filtered reconstruction term
    mask: NonNegative = 1.0            # m: regulariser weight per positive indicator (weights ∈ {0, m, 2m})
    value_lr: Positive = 3e-4          # Adam learning rate of V
    vae_lr: Positive = 1e-3            # Adam learning rate of the VAE (the code's torch default)
    actor_hidden: Sizes = (256, 256, 256)           # π: 3×256
    hidden: Sizes = (256, 256, 256, 256)            # twin Q and V: 4×256
    vae_hidden: Sizes = (750, 750)                  # encoder and decoder
    latent_factor: AtLeastOne = 2      # VAE latent size = factor·|A|
    detach_target: bool = False        # quirk 1 off: stop the gradient through the VAE target (the code keeps it)
    weight_sum: bool = True            # quirk 2: weight m·(1{A(ã_π) ≥ 0} + 1{A(a) > 0}); False: m·1{A(a*) ≥ 0}


class VAE(nn.Module):
    """BCQ-style conditional VAE on the member axis: enc(s, a) → (μ, log σ) [S, B, L], dec(s, z) → a."""

    def __init__(self, obs_dim: int, act_dim: int, seeds: int, hidden, latent: int):
        super().__init__()
        self.latent = latent
        self.encoder = MLP(obs_dim + act_dim, 2 * latent, (seeds,), hidden)
        self.decoder = MLP(obs_dim + latent, act_dim, (seeds,), hidden)

    def forward(self, obs, action):
        """(reconstruction [S, B, A] from a posterior sample, μ, σ [S, B, L])."""
        mean, log_std = self.encoder(torch.cat([obs, action], -1)).chunk(2, -1)
        std = log_std.clamp(-4.0, 15.0).exp()
        z = mean + std * torch.randn_like(std)
        return torch.tanh(self.decoder(torch.cat([obs, z], -1))), mean, std


@register("a2pr")
class A2PR(TD3):
    """A2PR, offline. Faithfulness: the official PyTorch code (ltlhuuu/A2PR): networks (3×256 actor, 4×256 twin
    Q and V, 750-750 VAE with latent 2·|A|, torch default init), the order critic → V → VAE → actor every
    2nd step with the targets, V's target min(y, r + γ min Q(s', ã') of the just-updated critic), the
    reconstruction averaged over the whole batch (zeros where A ≤ 0) with the KL unfiltered (×0.5), and the
    per-dataset α, w_vae, m, γ of the authors' README history (DATASET_DEFAULTS; the zoo's levels share
    D4RL's names). Both code quirks are kept by default and switchable: the regularisation target is not
    detached (the gradient also runs through the VAE into π), and the weight is m·(sum of two indicators).
    Deviations: none in the math; antmaze settings are not published (the authors' issue #1) and not preset."""
    Config = A2PRConfig
    LOOP_DEFAULTS = {}
    # (α, vae_weight, mask, γ) per D4RL dataset, the authors' READMEv0.md (final values where several).
    DATASET_DEFAULTS = {f"{task}-{level}": {"alpha": a, "vae_weight": w, "mask": m, "gamma": g} for task, level, a, w, m, g in [
        ("hopper", "random", 2.5, 1.5, 1.5, 0.995), ("hopper", "medium", 2.5, 1.0, 0.4, 0.995),
        ("hopper", "medium-replay", 2.5, 1.5, 0.5, 0.99), ("hopper", "medium-expert", 2.5, 1.0, 4.0, 0.99),
        ("halfcheetah", "medium", 40.0, 1.0, 1.0, 0.99), ("halfcheetah", "medium-replay", 40.0, 1.5, 0.8, 0.995),
        ("halfcheetah", "medium-expert", 40.0, 1.0, 15.0, 0.99), ("walker2d", "medium", 2.5, 1.5, 1.0, 0.99),
        ("walker2d", "medium-replay", 2.5, 1.5, 1.2, 0.995), ("walker2d", "medium-expert", 2.5, 1.0, 0.8, 0.99)]}

    def __init__(self, spec, cfg: A2PRConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        O, A = spec.obs_dim, spec.act_dim
        self.value = ValueNet(O, (seeds,), cfg.hidden)
        self.vae = VAE(O, A, seeds, cfg.vae_hidden, cfg.latent_factor * A)
        self.optimizer("value", self.value.parameters(), cfg.value_lr)
        self.optimizer("vae", self.vae.parameters(), cfg.vae_lr)
        self.to(self.device)

    def networks(self, O, A, seeds):
        return DeterministicActor(O, A, (seeds,), self.cfg.actor_hidden), Critic(O, A, (seeds, 2), self.cfg.hidden)

    def after_critic(self, b, next_a, y):
        """V onto min(y, r + γ min Q(s', ã')) with the just-updated critic; then the advantage-filtered VAE."""
        cfg = self.cfg
        with torch.no_grad():
            y_v = torch.minimum(y, b.reward + cfg.gamma * b.not_done * self.critic(b.next_obs, next_a).min(1).values)
        value_loss = per_seed_mean((self.value(b.obs) - y_v) ** 2)
        self.minimize("value", value_loss)
        with torch.no_grad():
            positive = (self.critic(b.obs, b.action, ensemble=slice(0, 1))[:, 0] > self.value(b.obs)).float()   # [S, B]
        recon, mean, std = self.vae(b.obs, b.action)
        recon_loss = per_seed_mean(cfg.vae_weight * positive[..., None] * (recon - b.action) ** 2)
        kl = per_seed_mean(-0.5 * (1 + (std ** 2).log() - mean ** 2 - std ** 2))
        self.minimize("vae", recon_loss + 0.5 * kl)
        return {"value_loss": value_loss.detach(), "vae_recon": recon_loss.detach(), "vae_kl": kl.detach(),
                "positive_frac": positive.mean(1)}

    def actor_loss(self, pi, b):
        """−λ·Q1(s, π(s)) + weight·(π(s) − a*)², a* the higher-advantage of the data action and ã_π = VAE(s, π(s))."""
        cfg = self.cfg
        q1 = self.critic(b.obs, pi, ensemble=slice(0, 1))[:, 0]                        # [S, B]
        lmbda = cfg.alpha / q1.abs().mean(1, keepdim=True).detach()
        a_vae = self.vae(b.obs, pi)[0]                                                 # ã_π [S, B, A]
        if cfg.detach_target:
            a_vae = a_vae.detach()
        with torch.no_grad():
            v = self.value(b.obs)
            adv_vae = self.critic(b.obs, a_vae, ensemble=slice(0, 1))[:, 0] - v
            adv_data = self.critic(b.obs, b.action, ensemble=slice(0, 1))[:, 0] - v
        target, weight, use_vae = regularisation_target(adv_vae, adv_data, a_vae, b.action, cfg.mask, cfg.weight_sum)
        reg = per_seed_mean(weight[..., None] * (pi - target) ** 2)
        return per_seed_mean(-lmbda * q1) + reg, {"actor_reg": reg.detach(), "vae_target_frac": use_vae.float().mean(1),
                                                 "reg_weight": weight.mean(1)}

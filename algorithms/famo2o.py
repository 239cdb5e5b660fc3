"""FamO2O (Wang, Yang, Shi, Huang, Song & Huang, NeurIPS 2023): a universal policy π_u(a | s, β) trained for
a continuum of improvement/constraint balances β at once (β drawn per sample offline), and a balance
model π_b(β | s) that picks, per state, the member of that family whose action the critic values most
(online). Bases: IQL (`famo2o_iql`) and CQL (`famo2o_cql`), the official code's; AWAC (`famo2o_awac`),
reconstructed."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from offrl import OffrlError
from offrl.agent import register
from offrl.fields import AtLeastOne, NonNegative, Positive
from offrl.nets import MLP, TanhGaussianActor, per_seed_mean, soft_update
from offrl.algorithms.awac import AWAC, AWACConfig
from offrl.algorithms.cql import CQL, CQLConfig, repeat_rows
from offrl.algorithms.iql import IQL, IQLConfig, expectile_loss

EMBED_DIM, EMBED_BASE = 6, 10_000.0


def beta_embedding(beta: torch.Tensor) -> torch.Tensor:
    """β [...] → [..., 6]: (sin, cos)(β / 10000^(2i/6)) for i = 0, 1, 2, interleaved (the official code's)."""
    freqs = EMBED_BASE ** (-torch.arange(0, EMBED_DIM, 2, device=beta.device, dtype=beta.dtype) / EMBED_DIM)
    angles = beta[..., None] * freqs                                                  # [..., 3]
    return torch.stack([angles.sin(), angles.cos()], -1).flatten(-2)


class BalanceModel(nn.Module):
    """π_b(u | s): a 1-D tanh-Gaussian, u ∈ (−1, 1), with an MLP mean and a state-independent log σ (init 0)
    clipped to [−10, 2]. forward(obs [S, B, O]) → (u [S, B], log π_b(u|s) [S, B] with the tanh Jacobian)."""

    def __init__(self, obs_dim: int, seeds: int, hidden, **mlp):
        super().__init__()
        self.net = MLP(obs_dim, 1, (seeds,), hidden, **mlp)
        self.log_std = nn.Parameter(torch.zeros(seeds, 1, 1))

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.net(obs)
        if deterministic:
            return torch.tanh(mean)[..., 0], torch.zeros(mean.shape[:-1], device=mean.device)
        log_std = self.log_std.clamp(-10.0, 2.0)
        eps = torch.randn_like(mean)
        x = mean + log_std.exp() * eps
        log_prob = -0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi) - 2 * (math.log(2) - x - F.softplus(-2 * x))
        return torch.tanh(x)[..., 0], log_prob[..., 0]


@dataclass
class FamO2OFields:
    """The balance settings both bases share (mixed into each base's config)."""
    beta_low: float = 1.0              # β interval: locomotion [1, 5] (the learner's default), antmaze [8, 14]
    beta_high: float = 5.0
    balance_lr: Positive = 3e-4        # Adam learning rate of the balance model and of its temperature
    balance_every: AtLeastOne = 5      # balance (and temperature) step every k updates: 5 locomotion (ports), 1 antmaze (code)
    balance_target_entropy: float = -0.5   # H̄ of the balance temperature (−dim(β)/2)


class FamO2O:
    """The β machinery on a base whose `actor` is the universal policy on [s, e(β)]."""
    policy_conditioning = EMBED_DIM    # the base builds its policy on [s, e(β)]

    def check_interval(self) -> None:
        cfg = self.cfg
        if not cfg.beta_low < cfg.beta_high:
            raise OffrlError(f"{self.name}: beta_low ({cfg.beta_low}) must be below beta_high ({cfg.beta_high})")

    def build_balance(self, spec, seeds) -> None:
        cfg = self.cfg
        self.check_interval()
        self.balance = BalanceModel(spec.obs_dim, seeds, cfg.hidden, init="orthogonal", gain=math.sqrt(2))
        self.log_balance_alpha = nn.Parameter(torch.zeros(seeds))
        self.optimizer("balance", self.balance.parameters(), cfg.balance_lr)
        self.optimizer("balance_alpha", [self.log_balance_alpha], cfg.balance_lr)

    def to_beta(self, u: torch.Tensor) -> torch.Tensor:
        """u ∈ (−1, 1) → β ∈ (β_lo, β_hi), the IQL code's map."""
        return self.cfg.beta_low + (u + 1) / 2 * (self.cfg.beta_high - self.cfg.beta_low)

    def conditioned(self, obs: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """The universal policy's input [S, B, O + 6] for β [S, B]."""
        return torch.cat([obs, beta_embedding(beta)], -1)

    def awr_beta(self, b) -> torch.Tensor:
        """β [S, B] of this update's AWR step: uniform per sample offline; online a stochastic sample of the
        balance model as it is before its own step (no gradient)."""
        cfg = self.cfg
        if self.phase != "online":
            return cfg.beta_low + torch.rand_like(b.reward) * (cfg.beta_high - cfg.beta_low)
        with torch.no_grad():
            return self.to_beta(self.balance(b.obs)[0])

    def balance_step(self, b, critic) -> dict[str, torch.Tensor]:
        """π_b ← argmin α_b·log π_b(u|s) − min_i critic_i(s, ã), ã ~ π_u(·|s, β(u)) reparameterised through β
        (π_u is not stepped); then α_b·(H − H̄). Every `balance_every` updates, offline and online."""
        if self.num_updates % self.cfg.balance_every:
            return {}
        u, logp = self.balance(b.obs)
        beta = self.to_beta(u)
        mean, log_std = self.actor(self.conditioned(b.obs, beta))
        a = mean + log_std.exp() * torch.randn_like(mean)                            # not clipped (the code's)
        balance_loss = per_seed_mean(self.log_balance_alpha.detach().exp()[:, None] * logp - critic(b.obs, a).min(1).values)
        self.minimize("balance", balance_loss)
        entropy = -logp.detach().mean(1)                                             # [S]
        alpha = self.log_balance_alpha.exp()          # after the step above: one graph per backward under --compile
        alpha_loss = alpha * (entropy - self.cfg.balance_target_entropy)
        self.minimize("balance_alpha", alpha_loss)
        return {"balance_loss": balance_loss.detach(), "balance_alpha": alpha.detach(), "balance_entropy": entropy,
                "balance_beta": beta.detach().mean(1)}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        obs = self.normalize(obs)
        beta = self.to_beta(self.balance(obs, deterministic=True)[0])                # the balance model's mean
        return self.actor.sample(self.conditioned(obs, beta), deterministic)

    def action_log_likelihood(self, obs, action):
        """log π_u(a | s, β) [S, B] at the balance model's β for s (its mean): the policy the agent acts with."""
        obs = self.normalize(obs)
        beta = self.to_beta(self.balance(obs, deterministic=True)[0])
        return self.actor.log_prob(self.conditioned(obs, beta), action)

    def diagnostics(self, obs):
        """β the balance model chooses (its mean) at each probe state [S, K]."""
        return {"beta": self.to_beta(self.balance(self.normalize(obs), deterministic=True)[0])}


@dataclass
class FamO2OIQLConfig(FamO2OFields, IQLConfig):
    actor_lr_decay_steps: int = 0      # constant: the code's cosine over the online steps alone hits 0 after pre-training (§1.9.7)


@register("famo2o_iql")
class FamO2OIQL(FamO2O, IQL):
    """FamO2O on IQL, offline and offline-to-online. Faithfulness: the official jax_iql learner: per update
    V (expectile, target critic) → balance model (SAC-style through the universal policy, target critic)
    → its temperature α_b·(H − H̄) → universal AWR with weights min(exp(β·(min Q_t − V_new)), 100) → critic
    onto r + γ V_new(s') → targets; orthogonal √2 init; the universal policy is IQL's Gaussian (tanh mean,
    state-independent log σ) on [s, e(β)]; β per sample U[β_lo, β_hi] offline, a balance sample online,
    the balance mean when acting; one combined buffer online. Per domain: locomotion β ∈ [1, 5], expectile
    0.7, balance every 5 updates (the two PyTorch ports; the code steps it every update); antmaze [8, 14],
    0.9, every update, r − 1. Deviation: the actor learning rate is constant (the code's default cosine
    decays over the online steps only, so it reaches 0 at the end of pre-training: §1.9 item 7)."""
    Config = FamO2OIQLConfig
    DEFAULTS = {
        "antmaze": {"expectile": 0.9, "reward_transform": "antmaze", "beta_low": 8.0, "beta_high": 14.0, "balance_every": 1},
        "adroit": IQL.DEFAULTS["adroit"],
        "kitchen": IQL.DEFAULTS["kitchen"],
        "classic": {},
        "o2o": {},
    }

    def __init__(self, spec, cfg: FamO2OIQLConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        self.build_balance(spec, seeds)
        self.to(self.device)

    def update(self, b):
        cfg, b = self.cfg, self.preprocess(b)
        beta = self.awr_beta(b)                                                       # before the balance step
        with torch.no_grad():
            q_t = self.critic_target(b.obs, b.action).min(1).values                  # [S, B]
        value_loss = per_seed_mean(expectile_loss(q_t - self.value(b.obs), cfg.expectile))
        self.minimize("value", value_loss)
        metrics = self.balance_step(b, self.critic_target)
        with torch.no_grad():
            v, next_v = self.value(torch.cat([b.obs, b.next_obs], 1)).chunk(2, 1)
            exp_adv = torch.exp((q_t - v) * beta).clamp(max=cfg.exp_adv_max)
        actor_loss = per_seed_mean(-exp_adv * self.actor.log_prob(self.conditioned(b.obs, beta), b.action))
        y = b.reward + cfg.gamma * b.not_done * next_v
        q = self.critic(b.obs, b.action)
        critic_loss = ((q - y[:, None]) ** 2).mean(-1).sum(1)
        self.minimize("actor_critic", actor_loss + critic_loss)
        soft_update(self.critic_target, self.critic, cfg.tau)
        self.num_updates += 1
        return {**metrics, "value_loss": value_loss.detach(), "actor_loss": actor_loss.detach(),
                "critic_loss": critic_loss.detach(), "q": q.detach().mean((1, 2)), "adv": (q_t - v).mean(1),
                "awr_beta": beta.mean(1)}


@dataclass
class FamO2OAWACConfig(FamO2OFields, AWACConfig):
    pass


@register("famo2o_awac")
class FamO2OAWAC(FamO2O, AWAC):
    """FamO2O on AWAC, offline and offline-to-online — reconstructed: the paper's main base, but not in the
    released code (reference §1.5). AWAC's update (CORL's) with the universal policy: the critic's next action
    a' ~ π_u(·|s', β_b(s)) with the balance sample of the current state (as the CQL variant's code), the
    actor weights min(exp(β·(min Q(s, a) − min Q(s, ã))), 100) with ã ~ π_u(·|s, β) in place of exp(A/λ),
    and the balance model and temperature stepped as in the IQL variant (on the online critic here:
    AWAC's actor reads it too). β range: [1, 5] on locomotion around AWAC's 1/λ = 3, [8, 14] on antmaze
    around 1/λ = 10 (open choices, as the reference says)."""
    Config = FamO2OAWACConfig
    DEFAULTS = {
        "antmaze": {"reward_transform": "antmaze", "beta_low": 8.0, "beta_high": 14.0, "balance_every": 1},
    }

    def __init__(self, spec, cfg: FamO2OAWACConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        self.build_balance(spec, seeds)
        self.to(self.device)

    def update(self, b):
        cfg, b = self.cfg, self.preprocess(b)
        beta = self.awr_beta(b)                                                       # [S, B], before the balance step
        with torch.no_grad():
            next_beta = self.to_beta(self.balance(b.obs)[0])                          # balance β of s, for a' at s'
            next_a = self.actor.sample(self.conditioned(b.next_obs, next_beta))
            y = b.reward + cfg.gamma * b.not_done * self.critic_target(b.next_obs, next_a).min(1).values
        q = self.critic(b.obs, b.action)
        critic_loss = ((q - y[:, None]) ** 2).mean(-1).sum(1)
        self.minimize("critic", critic_loss)
        metrics = self.balance_step(b, self.critic)
        with torch.no_grad():
            q_data = self.critic(b.obs, b.action).min(1).values
            q_pi = self.critic(b.obs, self.actor.sample(self.conditioned(b.obs, beta))).min(1).values
            weights = torch.exp(beta * (q_data - q_pi)).clamp(max=cfg.exp_adv_max)
        actor_loss = per_seed_mean(-weights * self.actor.log_prob(self.conditioned(b.obs, beta), b.action))
        self.minimize("actor", actor_loss)
        soft_update(self.critic_target, self.critic, cfg.tau)
        self.num_updates += 1
        return {**metrics, "critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
                "q": q.detach().mean((1, 2)), "adv": (q_data - q_pi).mean(1), "awr_beta": beta.mean(1)}


class TanhGaussianBalance(TanhGaussianActor):
    """The CQL variant's balance model: CQL's policy head with one output (state-dependent log σ with a
    learned scale and offset); forward(obs) → (u [S, B], log π_b(u|s) [S, B])."""

    def forward(self, obs, deterministic=False):
        u, log_prob = super().forward(obs, deterministic)
        return u[..., 0], log_prob


@dataclass
class FamO2OCQLConfig(FamO2OFields, CQLConfig):
    beta_low: float = 0.5              # β scales the Q term of the SAC actor loss: [0.5, 1.5] (the code's config)
    beta_high: float = 1.5
    balance_every: AtLeastOne = 1      # the code steps the balance model every update
    code_beta_map: bool = False        # the released code's online map β = u·(β_hi − β_lo) + β_lo ∈ (−0.5, 1.5): a bug, off
    cql_alpha: NonNegative = 1.0       # the FamO2O config's CQL weight (its own CQL baseline: 5)
    critic_layernorm: bool = True      # the FamO2O config's critics (its CQL baseline has none)
    policy_lr: Positive = 3e-4         # Adam 3e-4 for every network (the code's config)
    normalize_obs: bool = False        # the code does not standardise states


@register("famo2o_cql")
class FamO2OCQL(FamO2O, CQL):
    """FamO2O on CQL, offline and offline-to-online. Faithfulness: the official jax_cql code: the universal
    policy is CQL's tanh-Gaussian (learned log-σ scale and offset) on [s, e(β)], trained on α·log π_u(ã|s, β)
    − β·min Q(s, ã) (β scales the Q term); the balance model is the same head with one output, trained on
    −min Q(s, π_u(s, β_b(s))) with the online critics and no entropy term; the critics' next actions and the
    conservative term's policy samples are conditioned on the balance β of the current state s, in both
    phases (§1.9 item 4, kept); CQL(H) with importance sampling, weight 1, LayerNorm critics, no Lagrange,
    no max backup, no entropy backup; Adam 3e-4 everywhere; raw states and rewards. The losses are built
    in the order balance → policy → α → critics, each on networks no earlier step has changed, which is the
    code's joint step. Deviation (default, §1.9 item 3): online β uses the IQL code's map into [β_lo, β_hi];
    `code_beta_map=true` restores the released code's u·(β_hi − β_lo) + β_lo. Inits are CORL's CQL ones
    (orthogonal critics; the policy's Glorot last layer), not Flax's LeCun-normal."""
    Config = FamO2OCQLConfig
    DEFAULTS = {}

    def build_balance(self, spec, seeds):
        cfg = self.cfg
        self.check_interval()
        self.balance = TanhGaussianBalance(spec.obs_dim, 1, (seeds,), cfg.hidden, log_std_offset=cfg.log_std_offset,
                                           last_init="xavier", last_gain=1e-2)
        self.optimizer("balance", self.balance.parameters(), cfg.balance_lr)

    def __init__(self, spec, cfg: FamO2OCQLConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        self.build_balance(spec, seeds)
        self.to(self.device)

    @torch.compiler.disable     # eager under --compile: its draw keeps its place among the graphs' draws
    def balance_sample(self, obs):
        """A reparameterised balance sample u [S, B] for the balance step."""
        return self.balance(obs)[0]

    def to_beta(self, u):
        cfg = self.cfg
        return u * (cfg.beta_high - cfg.beta_low) + cfg.beta_low if cfg.code_beta_map else super().to_beta(u)

    def update(self, b):
        cfg, b = self.cfg, self.preprocess(b)
        S, B, A = b.action.shape
        beta = self.awr_beta(b)                                                       # [S, B], pre-update balance
        n = cfg.cql_n_actions
        with torch.no_grad():                                                         # balance β of s: for a' and the samples
            state_beta = self.to_beta(self.balance(b.obs)[0])
            next_a, _ = self.actor(self.conditioned(b.next_obs, state_beta))
            y = b.reward + cfg.gamma * b.not_done * self.critic_target(b.next_obs, next_a).min(1).values
            beta_n = repeat_rows(state_beta[..., None], n)[..., 0]
            obs_n = repeat_rows(b.obs, n)
            cur_a, cur_logp = self.actor(self.conditioned(obs_n, beta_n))
            nxt_a, nxt_logp = self.actor(self.conditioned(repeat_rows(b.next_obs, n), beta_n))
            samples = (2.0 * torch.rand_like(repeat_rows(b.action, n)) - 1.0, cur_a, cur_logp, nxt_a, nxt_logp, obs_n)
        metrics = {}
        if self.num_updates % cfg.balance_every == 0:                                 # 1. balance model, online critics
            u = self.balance_sample(b.obs)
            a_b, _ = self.actor(self.conditioned(b.obs, self.to_beta(u)))
            balance_loss = per_seed_mean(-self.critic(b.obs, a_b).min(1).values)
            self.minimize("balance", balance_loss)
            metrics.update(balance_loss=balance_loss.detach(), balance_beta=self.to_beta(u).detach().mean(1))
        a, logp = self.actor(self.conditioned(b.obs, beta))                           # 2. universal policy
        alpha = self.log_alpha.detach().exp()[:, None] * cfg.alpha_multiplier
        actor_loss = per_seed_mean(alpha * logp - beta * self.critic(b.obs, a).min(1).values)
        self.minimize("actor", actor_loss)
        alpha_loss = -self.log_alpha * (logp.detach() + self.target_entropy).mean(1)  # 3. SAC temperature
        self.minimize("alpha", alpha_loss)
        q = self.critic(b.obs, b.action)                                              # 4. critics: TD + CQL(H)
        td_loss = ((q - y[:, None]) ** 2).mean(-1).sum(1)
        gap, _ = self.conservative_gap(b, q, samples)
        gap = gap.mean(-1)
        critic_loss = td_loss + (self.cql_alpha * gap).sum(1)
        self.minimize("critic", critic_loss)
        soft_update(self.critic_target, self.critic, cfg.tau)
        self.num_updates += 1
        return {**metrics, "actor_loss": actor_loss.detach(), "alpha": alpha[:, 0], "alpha_loss": alpha_loss.detach(),
                "entropy": -logp.detach().mean(1), "critic_loss": critic_loss.detach(), "td_loss": td_loss.detach(),
                "cql_gap": gap.detach().mean(1), "q": q.detach().mean((1, 2)), "awr_beta": beta.mean(1)}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        obs = self.normalize(obs)
        beta = self.to_beta(self.balance(obs, deterministic=True)[0])
        return self.actor(self.conditioned(obs, beta), deterministic)[0]

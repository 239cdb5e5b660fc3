"""CQL (Kumar, Zhou, Tucker & Levine, 2020): SAC whose twin critics also push down a log-sum-exp of Q
over random and policy actions and push up Q on dataset actions; the Lagrange variant for AntMaze."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from offrl.agent import Agent, AgentConfig, register
from offrl.fields import AtLeastOne, Count, NonNegative, Positive, Sizes, Unit
from offrl.nets import Critic, TanhGaussianActor, per_seed_mean, soft_update, target


def repeat_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """[S, B, F] → [S, B·n, F], each row n times in a row (row b's copies at b·n … b·n+n−1)."""
    return x.repeat_interleave(n, dim=1)


@dataclass
class CQLConfig(AgentConfig):
    normalize_obs: bool = True         # CORL standardises states (+1e-3) on locomotion; not on antmaze
    cql_alpha: NonNegative = 10.0      # α: weight of the conservative term (CORL's locomotion configs; antmaze 5)
    cql_alpha_online: float = -1.0     # α once the online phase starts (< 0: keep cql_alpha; CORL's fine-tuning configs keep it)
    cql_n_actions: AtLeastOne = 10     # sampled actions per state for each of: uniform, π(s), π(s')
    cql_importance_sample: bool = True  # log-sum-exp over Q − log density of each sampler (CQL(H) with IS)
    cql_temp: Positive = 1.0           # temperature of the log-sum-exp
    cql_lagrange: bool = False         # learn α' ≥ 0 so that the gap tracks cql_target_action_gap (antmaze)
    cql_target_action_gap: float = -1.0  # τ of the Lagrange variant (antmaze 0.8)
    cql_max_target_backup: bool = False  # target: max over cql_n_actions sampled next actions (antmaze)
    cql_clip_diff_min: float = -math.inf  # clip of logsumexp − Q(s, a_data) per row (antmaze −200)
    cql_clip_diff_max: float = math.inf
    backup_entropy: bool = False       # subtract α·log π(a'|s') in the TD target (CORL: off)
    policy_lr: Positive = 3e-5         # Adam learning rate of the policy and of log α (antmaze 1e-4)
    qf_lr: Positive = 3e-4             # Adam learning rate of the critics and of log α'
    tau: Unit = 0.005                  # Polyak rate of the target critics (updated every step)
    alpha_multiplier: NonNegative = 1.0  # SAC temperature = multiplier · exp(log α)
    autotune_alpha: bool = True        # learn α towards target entropy −|A|
    hidden: Sizes = (256, 256, 256)    # policy and critic MLPs (CORL: 3×256)
    critic_layers: Count = 0           # > 0: the critics get this many hidden layers of width hidden[-1] (antmaze: 5)
    critic_layernorm: bool = False     # LayerNorm (ε 1e-6) after each hidden layer of the critics, before the ReLU
    log_std_offset: float = -1.0       # the policy's learned log σ affine starts at 1·raw − 1 (CORL)


@register("cql")
class CQL(Agent):
    """Conservative Q-Learning (CQL(H), importance-sampled), offline and offline-to-online.
    Faithfulness: CORL's cql.py (a port of Young Geng's JAX CQL) and its per-dataset configs: the update
    order (α, actor on the pre-update critics, then critics), orthogonal critic init (√2, last 1e-2),
    the policy's default init with a Glorot last layer (gain 1e-2) and learned log-σ scale and offset,
    separate α (SAC) and α' (Lagrange) per seed. Deviations: CORL's hopper configs rescale rewards by
    5·1000/(R_max−R_min) − 1 through a duplicated dataclass field (reward_scale 5, bias −1 silently
    override 1 and 0); we leave locomotion rewards raw, as its halfcheetah and walker2d configs do.
    `bc_steps` (0 in every CORL config) is not implemented."""
    Config = CQLConfig
    policy_conditioning = 0            # extra policy inputs after the state (FamO2O's β embedding)
    DEFAULTS = {
        "antmaze": {"cql_alpha": 5.0, "cql_lagrange": True, "cql_target_action_gap": 0.8,
                    "cql_max_target_backup": True, "cql_clip_diff_min": -200.0, "policy_lr": 1e-4,
                    "critic_layers": 5, "normalize_obs": False, "reward_transform": "cql_antmaze"},
    }

    def __init__(self, spec, cfg: CQLConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        O, A = spec.obs_dim, spec.act_dim
        critic_hidden = (cfg.hidden[-1],) * cfg.critic_layers if cfg.critic_layers else cfg.hidden
        self.actor = TanhGaussianActor(O + self.policy_conditioning, A, (seeds,), cfg.hidden,
                                       log_std_offset=cfg.log_std_offset, last_init="xavier", last_gain=1e-2)
        ln = dict(layernorm=True, ln_eps=1e-6) if cfg.critic_layernorm else {}
        self.critic = Critic(O, A, (seeds, 2), critic_hidden, init="orthogonal", gain=math.sqrt(2),
                             last_gain=1e-2, **ln)
        self.critic_target = target(self.critic)
        self.log_alpha = nn.Parameter(torch.zeros(seeds))                 # SAC temperature, α = e^0 = 1
        self.log_alpha_prime = nn.Parameter(torch.ones(seeds))            # Lagrange multiplier, α' = e^1
        self.target_entropy = -float(A)
        self.optimizer("actor", self.actor.parameters(), cfg.policy_lr)
        self.optimizer("critic", self.critic.parameters(), cfg.qf_lr)
        self.optimizer("alpha", [self.log_alpha], cfg.policy_lr)
        self.optimizer("alpha_prime", [self.log_alpha_prime], cfg.qf_lr)
        self.to(self.device)

    @property
    def cql_alpha(self) -> float:
        """α of the phase running now (`self.phase` is set by the trainer's phase hook and checkpointed)."""
        online = self.phase == "online" and self.cfg.cql_alpha_online >= 0
        return self.cfg.cql_alpha_online if online else self.cfg.cql_alpha

    def bound_policy_q(self, q_ood: torch.Tensor, b) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Q at the sampled actions [S, 2, 3, B, n] (samplers: uniform, π(s), π(s')) before the log-sum-exp,
        and metrics [S]; CQL leaves them as they are (Cal-QL lower-bounds the policy's)."""
        return q_ood, {}

    @torch.no_grad()
    def policy_samples(self, b) -> tuple[torch.Tensor, ...]:
        """The conservative term's actions, n per state: uniform, π(s) and π(s') [S, B·n, A] (row b's n
        samples at b·n …), with the log-densities of π's [S, B·n]; last, the states repeated [S, B·n, O]."""
        n = self.cfg.cql_n_actions
        obs_n = repeat_rows(b.obs, n)
        rand_a = 2.0 * torch.rand_like(repeat_rows(b.action, n)) - 1.0                  # U[-1, 1]^A
        cur_a, cur_logp = self.actor(obs_n)
        next_a, next_logp = self.actor(repeat_rows(b.next_obs, n))
        return rand_a, cur_a, cur_logp, next_a, next_logp, obs_n

    def conservative_gap(self, b, q: torch.Tensor, samples) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """logsumexp over the sampled actions of Q(s, ·) minus Q(s, a_data), clipped, per row [S, 2, B]; and
        the metrics of `bound_policy_q`. q [S, 2, B]: Q(s, a_data); samples: `policy_samples(b)`."""
        cfg, (S, B, A), n = self.cfg, b.action.shape, self.cfg.cql_n_actions
        rand_a, cur_a, cur_logp, next_a, next_logp, obs_n = samples
        # one critic call for the three samplers, all evaluated at s: [S, 2, 3·B·n] → [S, 2, 3, B, n]
        q_ood = self.critic(obs_n.repeat(1, 3, 1), torch.cat([rand_a, cur_a, next_a], 1)).view(S, 2, 3, B, n)
        q_ood, metrics = self.bound_policy_q(q_ood, b)
        if cfg.cql_importance_sample:
            log_density = torch.stack([torch.full_like(cur_logp, A * math.log(0.5)), cur_logp, next_logp], 1)
            cat = (q_ood - log_density.view(S, 1, 3, B, n)).permute(0, 1, 3, 2, 4).reshape(S, 2, B, 3 * n)
        else:                                            # CQL(H) without IS also includes Q(s, a_data)
            cat = torch.cat([q_ood.permute(0, 1, 3, 2, 4).reshape(S, 2, B, 3 * n), q[..., None]], -1)
        ood = torch.logsumexp(cat / cfg.cql_temp, -1) * cfg.cql_temp
        return (ood - q).clamp(cfg.cql_clip_diff_min, cfg.cql_clip_diff_max), metrics

    def td_target(self, b, alpha: torch.Tensor) -> torch.Tensor:
        """r + γ (1 − d) min_i Q_target,i(s', a') [S, B]; a' ~ π(s'), or the best of n samples."""
        cfg, n = self.cfg, (self.cfg.cql_n_actions if self.cfg.cql_max_target_backup else 1)
        next_n = repeat_rows(b.next_obs, n)
        next_a, next_logp = self.actor(next_n)
        q_next = self.critic_target(next_n, next_a).min(1).values                          # [S, B·n]
        q_next, best = q_next.view(q_next.shape[0], -1, n).max(-1)
        if cfg.backup_entropy:
            q_next = q_next - alpha * next_logp.view(q_next.shape[0], -1, n).gather(-1, best[..., None])[..., 0]
        return b.reward + cfg.gamma * b.not_done * q_next

    def update(self, b):
        cfg, b = self.cfg, self.preprocess(b)
        # 1. the policy on the critics before this step's critic update, and α on the same sample; the
        #    critics' targets and sampled actions come from the policy before its update (as CORL's)
        a, logp = self.actor(b.obs)
        alpha = self.log_alpha.detach().exp()[:, None] * cfg.alpha_multiplier               # [S, 1]
        actor_loss = per_seed_mean(alpha * logp - self.critic(b.obs, a).min(1).values)
        with torch.no_grad():
            y = self.td_target(b, alpha)
        samples = self.policy_samples(b)
        # (each loss is minimised before the next is built: under --compile one graph per loss)
        self.minimize("actor", actor_loss)
        metrics = {"actor_loss": actor_loss.detach(), "alpha": alpha[:, 0], "entropy": -logp.detach().mean(1)}
        if cfg.autotune_alpha:
            alpha_loss = -self.log_alpha * (logp.detach() + self.target_entropy).mean(1)     # [S]
            self.minimize("alpha", alpha_loss)
            metrics["alpha_loss"] = alpha_loss.detach()
        # 2. critics: TD + α·(logsumexp_a Q(s, a) − Q(s, a_data)), α' ≥ 0 learned in the Lagrange variant
        q = self.critic(b.obs, b.action)                                                     # [S, 2, B]
        td_loss = ((q - y[:, None]) ** 2).mean(-1).sum(1)                                    # [S]
        gap, gap_metrics = self.conservative_gap(b, q, samples)
        gap = gap.mean(-1)                                                                   # [S, 2]
        if cfg.cql_lagrange:
            alpha_prime = self.log_alpha_prime.detach().exp().clamp(0.0, 1e6)[:, None]     # [S, 1]
            cql_loss = alpha_prime * self.cql_alpha * (gap - cfg.cql_target_action_gap)
        else:
            cql_loss = self.cql_alpha * gap
        critic_loss = td_loss + cql_loss.sum(1)
        self.minimize("critic", critic_loss)
        if cfg.cql_lagrange:        # α' ascends on α'·α·(gap − τ): grows while the gap exceeds τ
            alpha_prime_loss = -0.5 * self.log_alpha_prime.exp().clamp(0.0, 1e6) * self.cql_alpha * (
                gap.detach() - cfg.cql_target_action_gap).sum(1)
            self.minimize("alpha_prime", alpha_prime_loss)
            metrics.update(alpha_prime=alpha_prime[:, 0], alpha_prime_loss=alpha_prime_loss.detach())
        soft_update(self.critic_target, self.critic, cfg.tau)
        self.num_updates += 1
        return {**metrics, **gap_metrics, "critic_loss": critic_loss.detach(), "td_loss": td_loss.detach(),
                "cql_gap": gap.detach().mean(1), "q": q.detach().mean((1, 2))}

    def action_log_likelihood(self, obs, action):
        """log π(a|s) [S, B] of the tanh-Gaussian policy (actions clipped to ±0.999 before atanh)."""
        return self.actor.log_prob(self.normalize(obs), action)

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.actor(self.normalize(obs), deterministic)[0]

"""Stock-augmented distributional actor-critic for continuous control (offline and O2O).

Built on Ávila Pires et al. (2025), "Optimizing Return Distributions with Distributional Dynamic
Programming", carried to continuous actions as the reference's §4.2 recommends (the paper has no
continuous agent and no code; TD3+BC supplies the offline actor-critic skeleton):

* State (s, c) with stock c: C_0 = c_0, C_{t+1} = (C_t + R_{t+1})/γ. With γ = 1 and the time feature
  (t/T in the observation, time limit = terminal) the objective is the *undiscounted episodic* return.
* Quantile critic ensemble Z_φ(s, c, a): N quantiles per member, members on the member axis; the
  critic's own law of the dataset action takes, per quantile level, the minimum over members of
  their sorted quantiles (pessimism for offline data, as in CODAC/TQC-style distributional offline RL).
* Quantile Huber threshold κ = 0.01 in scaled units, not QR-DQN's κ = 1: with rewards scaled by 0.01 a
  whole 200-step return is ~2 units, so κ = 1 put every residual in the quadratic zone, where the loss
  fits expectiles, not quantiles. Expectiles of a law with a rare large penalty sit near its mean:
  on the risky pendulum the critic's lower tail vanished (its 5 % quantile 10 % below the mean) and the
  CVaR agent behaved as the risk-neutral one (results/distributional/README.md).
* Critic target, `target=in_sample` (default): y = r + γ·Z_V(s', c'), where Z_V(s, c) is fitted by
  quantile regression to that law of the dataset action with IQL's expectile asymmetry applied to the
  objective's score (weight |κ_e − 1{S(Z(s,c,a_D)) < S(Z_V(s,c))}|), so no out-of-distribution action
  is queried. `target=policy`: y = r + γ·Z⁻(s', c', a'), a' = π⁻(s', c') + clipped noise — target
  actions chosen by the same stock-aware policy at c' = (c + r)/γ.
* `n_step` = n > 1: offline rows span m = min(n, steps left in the episode) env steps (Buffer), with
  r = Σ_{k<m} γ^k r_{t+k}, c' = (c + r)/γ^m and y = r + γ^m·Z(s_{t+m}, c', ·). With γ = 1 and 200-step
  episodes one-step targets behind a Polyak τ = 0.005 target network had not carried values back to
  the first state within 10k updates; n-step targets cut the bootstrap chain n-fold, at the price of
  following the data's actions for m − 1 steps (uncorrected n-step; online rows stay one-step).
  Caveat, measured on mixed-quality data (the risky pendulum's zoo full-replay level, 79 % of episodes
  falling early): those m − 1 behaviour steps and the in-sample value's mild action improvement
  (`value_expectile`) leave the learnt law at the first states a mixture of the behaviours' laws, whose
  lower tail is the bad behaviours' falls — the tail a CVaR objective reads. A higher expectile (0.9)
  helped there; a competent-behaviour dataset does not need it (results/distributional/README.md §2).
* Deterministic actor π(s, c) improving the objective's score S(s, c, a) = (1/N)Σ_i f(c + θ_i(s, c, a))
  under an offline regulariser: by default advantage-weighted regression (AWR/AWAC, IQL's actor
  extraction), loss = exp(β·A/mean|A|)·‖π(s, c) − a_D‖² with A = S(s, c, a_D) − S(Z_V(s, c))
  (− S(s, c, π(s, c)) with `target=policy`); or TD3+BC's −λ·S(s, c, π(s, c)) + ‖π − a_D‖²,
  λ = α / mean|S| (`actor_loss=td3_bc`). On the risky InvertedPendulum data TD3+BC's form fell over in
  most episodes, as TD3+BC itself did (results/distributional/README.md).
* Offline stock relabelling (valid for any c because the stock dynamics are known): by default
  (`stock_relabel=trajectory`) every sampled row gets a fresh initial stock c_0 ~ U[c_lo, c_hi] and the
  stock its own episode would have reached, c_t = (c_0 + Σ_{k<t} γ^k r_k)/γ^t (RIGOR's stock editing);
  `uniform` draws c_t ~ U[c_lo, c_hi] as the reference suggests. On the risky pendulum the uniform
  stocks, most of which no trajectory through the state reaches (e.g. c ≤ −G_max, where the CVaR
  score is the mean's), pulled the actor to the risk-neutral choice (results/distributional/). Stocks are clipped to [c_lo, c_hi] = [−G_max, −G_min]
  (policy-preserving for utilities affine on each side of 0, reference T7) and scaled to [−1, 1].
* Deployment: c_0 = −θ for threshold/target objectives; for CVaR-type objectives c_0 maximises
  −c + (1/N)Σ_i f(c + θ_i) over a grid of stocks, θ = Z_V(s_0, c) (or Z(s_0, c, π(s_0, c)) with
  `target=policy`), at the episode's first state (≈ −VaR_τ of the learnt return). The stock then
  follows the rewards the episode receives.

Baselines in the same code path: objective=mean (f = x, no stock input) and objective=naive_cvar
(per-state CVaR_τ of Z(s, a), no stock: time-inconsistent, reference T2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor

from offrl import OffrlError
from offrl.agent import Agent, AgentConfig, register
from offrl.buffer import NStep
from offrl.fields import AtLeastOne, Check, NonNegative, OneOf, Positive, Sizes, Unit
from offrl.nets import MLP, Critic, DeterministicActor, per_seed_mean, quantile_huber_loss, soft_update, target
from offrl.risk import objective as make_objective

OBJECTIVES = ("mean", "cvar", "mean_cvar", "naive_cvar", "prob", "target")


@dataclass
class StockACConfig(AgentConfig):
    gamma: Annotated[float, Check(gt=0, le=1)] = 1.0  # 1: undiscounted episodic objective (with time_feature)
    time_feature: bool = True          # t/T in the observation; the time limit is a terminal state
    n_step: AtLeastOne = 1             # offline targets over n env steps (stock and discount follow); γ = 1 over long episodes needs n > 1
    normalize_obs: bool = True         # standardise observations with the dataset's mean/std (+1e-3)
    objective: OneOf(*OBJECTIVES) = "cvar"  # mean | cvar | mean_cvar | naive_cvar | prob | target
    risk_level: Annotated[float, Check(gt=0, le=1)] = 0.1  # τ of CVaR_τ (cvar, mean_cvar, naive_cvar)
    cvar_weight: Unit = 0.0            # w of mean_cvar: w·E G + (1−w)·CVaR_τ
    threshold: float = 0.0             # θ (raw return units) of prob (P(G ≥ θ)) and target (−E|G − θ|)
    reward_scale: Positive = 0.01      # rewards (and stocks) are multiplied by this inside the agent
    stock_low: float = math.nan        # c_lo in raw return units (nan: −(max dataset return) − margin)
    stock_high: float = math.nan       # c_hi in raw return units (nan: −min(min dataset return, 0) + margin)
    stock_margin: NonNegative = 0.1    # margin added on both sides, as a fraction of the dataset's return range
    stock_relabel: OneOf("trajectory", "uniform") = "trajectory"  # trajectory: c_t = (c_0 + Σ_{k<t} γ^k r_k)/γ^t, c_0 ~ U[c_lo, c_hi] | uniform: c_t ~ U[c_lo, c_hi]
    c0_grid: AtLeastOne = 101          # stocks scanned to choose c_0 for cvar/mean_cvar
    n_quantiles: AtLeastOne = 32       # N quantiles per critic
    n_critics: AtLeastOne = 2          # critic ensemble members (target: per-level min of sorted quantiles)
    kappa: Positive = 0.01             # quantile Huber threshold in scaled units (0.01 = one raw return unit): see below
    target: OneOf("in_sample", "policy") = "in_sample"  # in_sample: y = r + γ·Z_V(s', c') (IQL-style, no policy actions) | policy: y = r + γ·Z(s', c', π(s', c'))
    value_expectile: Annotated[float, Check(gt=0, lt=1)] = 0.7  # in_sample: Z_V's asymmetric weight |κ_e − 1{S(Z(s,c,a_D)) < S(Z_V(s,c))}|
    actor_loss: OneOf("awr", "td3_bc") = "awr"  # awr: advantage-weighted regression to dataset actions | td3_bc: −λ·score + BC
    awr_beta: NonNegative = 3.0        # awr: inverse temperature on the advantage normalised by mean|advantage|
    awr_max_weight: Positive = 100.0   # awr: weight clip (as IQL)
    alpha: NonNegative = 2.5           # td3_bc: λ = α / mean|score|
    actor_lr: Positive = 3e-4          # Adam learning rate of the actor
    critic_lr: Positive = 3e-4         # Adam learning rate of the critics
    tau: Unit = 0.005                  # Polyak rate of the target networks
    policy_noise: NonNegative = 0.2    # std of the target policy smoothing noise
    noise_clip: NonNegative = 0.5      # clip of the target policy smoothing noise
    policy_freq: AtLeastOne = 2        # actor and targets are updated every k critic steps
    exploration_noise: NonNegative = 0.1  # std of Gaussian action noise when acting online
    hidden: Sizes = (256, 256)         # MLP hidden sizes of actor and critics


def lower_tail_mean(atoms: Tensor, tau: float) -> Tensor:
    """CVaR_τ of N equal-weight atoms [..., N]: mean of the lowest τN, the last one fractionally."""
    n = atoms.shape[-1]
    k = torch.arange(n, device=atoms.device, dtype=atoms.dtype)
    w = (tau * n - k).clamp(0, 1) / (tau * n)
    return (atoms.sort(-1).values * w).sum(-1)


@register("stock_ac")
class StockAC(Agent):
    """Stock-augmented distributional actor-critic (CVaR, P(G≥θ), targets); in-sample value law, AWR actor."""
    Config = StockACConfig

    def __init__(self, spec, cfg: StockACConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)         # checks every field's declared range
        if cfg.n_step > 1 and self.reward_shift != 0:
            raise OffrlError(f"n_step={cfg.n_step} sums raw rewards in the buffer, which reward_transform="
                             f"{cfg.reward_transform!r} (a shift per step) cannot follow; use a pure scaling "
                             "(none or iql_locomotion)")
        self.use_stock = cfg.objective not in ("mean", "naive_cvar")
        name = {"naive_cvar": "mean"}.get(cfg.objective, cfg.objective)
        self.obj = make_objective(name, tau=cfg.risk_level, theta=cfg.threshold * cfg.reward_scale,
                                  weight=cfg.cvar_weight)
        self.obj.utility.check_gamma(cfg.gamma)
        lo, hi = self._stock_range(spec, cfg)
        self.c_lo, self.c_hi = lo * cfg.reward_scale, hi * cfg.reward_scale
        O, A, N = spec.obs_dim + 1, spec.act_dim, cfg.n_quantiles            # +1: the scaled stock
        self.actor = DeterministicActor(O, A, (seeds,), cfg.hidden)
        self.critic = Critic(O, A, (seeds, cfg.n_critics), cfg.hidden, out_features=N)
        self.actor_target, self.critic_target = target(self.actor), target(self.critic)
        self.optimizer("actor", self.actor.parameters(), cfg.actor_lr)
        self.optimizer("critic", self.critic.parameters(), cfg.critic_lr)
        if cfg.target == "in_sample":       # Z_V(s, c): the return law of the best in-sample actions
            self.value = MLP(O, N, (seeds,), cfg.hidden)
            self.optimizer("value", self.value.parameters(), cfg.critic_lr)
        self.to(self.device)

    def columns(self):
        """The episode's past for trajectory relabelling; n-step offline rows when n_step > 1."""
        return ("elapsed", "past_return") + ((NStep(self.cfg.n_step),) if self.cfg.n_step > 1 else ())

    @staticmethod
    def _stock_range(spec, cfg: StockACConfig) -> tuple[float, float]:
        """[c_lo, c_hi] = [−G_max, −G_min] in raw return units, from the config or the dataset."""
        if not (math.isnan(cfg.stock_low) or math.isnan(cfg.stock_high)):
            lo, hi = cfg.stock_low, cfg.stock_high
        elif spec.return_range is not None:
            r_min, r_max = spec.return_range
            margin = cfg.stock_margin * max(r_max - r_min, 1e-6)
            lo = cfg.stock_low if not math.isnan(cfg.stock_low) else -max(r_max, 0.0) - margin
            hi = cfg.stock_high if not math.isnan(cfg.stock_high) else -min(r_min, 0.0) + margin
        else:
            raise OffrlError("stock_ac without a dataset needs the stock range: --set stock_low=… stock_high=… "
                             "(raw return units: −max return and −min return)")
        if not hi > lo:
            raise OffrlError(f"stock_low must be below stock_high, got [{lo}, {hi}]")
        return lo, hi

    # --- inputs ---
    def _with_stock(self, obs: Tensor, c: Tensor) -> Tensor:
        """[obs, stock scaled to [−1, 1]] (the stock input is 0 for stock-free objectives)."""
        if not self.use_stock:
            return torch.cat([obs, torch.zeros_like(obs[..., :1])], -1)
        scaled = 2 * (c.clamp(self.c_lo, self.c_hi) - self.c_lo) / (self.c_hi - self.c_lo) - 1
        return torch.cat([obs, scaled.unsqueeze(-1)], -1)

    def relabel(self, c: Tensor, b) -> Tensor:
        """Stocks [S, B] (scaled units) for a batch's rows, from draws c ~ U[c_lo, c_hi].

        `trajectory`: c is the episode's initial stock c_0 and the row gets the stock its episode would
        have reached, C_t = (c_0 + Σ_{k<t} γ^k r_k)/γ^t, clipped: the (time, stock) pairs a deployed agent
        meets, rather than stocks no trajectory through the state reaches. `uniform`: c itself (and so
        for online rows whose episode is still running: their past columns hold 0 until it ends)."""
        if self.cfg.stock_relabel != "trajectory":
            return c
        return ((c + b.past_return * self.cfg.reward_scale) / self.cfg.gamma ** b.elapsed).clamp(self.c_lo, self.c_hi)

    def next_stock(self, c: Tensor, r: Tensor, horizon: Tensor | None) -> tuple[Tensor, Tensor]:
        """Stock after a row and its bootstrap discount, both [S, B] (scaled units).

        A row spans m = horizon env steps (n-step rows carry r = Σ_{k<m} γ^k r_{t+k}): the stock m steps on
        is (c + r)/γ^m (C_{t+1} = (C_t + R_{t+1})/γ applied m times), clipped to [c_lo, c_hi], and the
        discount is γ^m."""
        discount = self.cfg.gamma ** (horizon if horizon is not None else torch.ones_like(r))
        return ((c + r) / discount).clamp(self.c_lo, self.c_hi), discount

    def score(self, c: Tensor, z: Tensor) -> Tensor:
        """The actor's objective for stocks c [...] and quantiles z [..., N] → [...]."""
        if self.cfg.objective == "naive_cvar":
            return lower_tail_mean(z, self.cfg.risk_level)
        if not self.use_stock:
            return z.mean(-1)
        return self.obj.utility(c.clamp(self.c_lo, self.c_hi).unsqueeze(-1) + z).mean(-1)

    @staticmethod
    def pessimistic(z: Tensor) -> Tensor:
        """Per quantile level, the minimum over members of their sorted quantiles: [S, M, B, N] → [S, B, N]."""
        return z.sort(-1).values.min(1).values

    # --- learning ---
    def update(self, b):
        cfg, b = self.cfg, self.preprocess(b)
        r = b.reward * cfg.reward_scale
        # Relabel: a fresh stock per transition, uniform on [c_lo, c_hi] (Φ of a normal draw keeps
        # every random draw of the agent a randn_like on an [S, ...] tensor).
        u = 0.5 * (1 + torch.erf(torch.randn_like(r) / math.sqrt(2)))
        c = self.relabel(self.c_lo + (self.c_hi - self.c_lo) * u, b)
        c2, discount = self.next_stock(c, r, b.horizon if self.cfg.n_step > 1 else None)
        x, x2 = self._with_stock(b.obs, c), self._with_stock(b.next_obs, c2)
        metrics: dict[str, torch.Tensor] = {}
        if cfg.target == "in_sample":
            # Z_V: weighted quantile regression towards the (pessimistic) law of the dataset action, with
            # IQL's expectile asymmetry applied to the objective's score, so Z_V leans towards the
            # in-sample actions the objective prefers; no out-of-distribution action is ever queried.
            with torch.no_grad():
                zq = self.pessimistic(self.critic_target(x, b.action))             # [S, B, N]
            zv = self.value(x)
            with torch.no_grad():
                below = (self.score(c, zq) < self.score(c, zv)).to(zq.dtype)
                w = (cfg.value_expectile - below).abs()
            value_loss = per_seed_mean(w * quantile_huber_loss(zv, zq, cfg.kappa))
            self.minimize("value", value_loss)
            metrics["value_loss"] = value_loss.detach()
            with torch.no_grad():
                z2 = self.value(x2)
        else:
            with torch.no_grad():
                noise = (torch.randn_like(b.action) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
                a2 = (self.actor_target(x2) + noise).clamp(-1.0, 1.0)
                z2 = self.pessimistic(self.critic_target(x2, a2))                   # [S, B, N]
        with torch.no_grad():
            y = r.unsqueeze(-1) + (discount * b.not_done).unsqueeze(-1) * z2
        z = self.critic(x, b.action)                                                # [S, M, B, N]
        critic_loss = quantile_huber_loss(z, y.unsqueeze(1), cfg.kappa).mean(-1).sum(1)   # [S]
        self.minimize("critic", critic_loss)
        metrics.update(critic_loss=critic_loss.detach(), z_mean=z.detach().mean((1, 2, 3)) / cfg.reward_scale)

        if self.num_updates % cfg.policy_freq == 0:
            pi = self.actor(x)
            if cfg.actor_loss == "td3_bc":
                s = self.score(c, self.critic(x, pi, ensemble=slice(0, 1))[:, 0])    # [S, B]
                lmbda = cfg.alpha / s.abs().mean(1, keepdim=True).detach().clamp(min=1e-6)
                actor_loss = per_seed_mean(-lmbda * s) + per_seed_mean((pi - b.action) ** 2)
            else:
                # AWR with the objective's advantage: score of the dataset action minus the score of
                # the policy's action at the same (s, c); weights exp(β·A/mean|A|), clipped.
                with torch.no_grad():
                    if cfg.target == "in_sample":             # baseline: the score of Z_V(s, c)
                        s_data = self.score(c, self.pessimistic(self.critic(x, b.action)))
                        s_pi = self.score(c, self.value(x))
                    else:                                     # baseline: the score of the policy's action
                        both = self.critic(torch.cat([x, x], 1), torch.cat([b.action, pi], 1), ensemble=slice(0, 1))[:, 0]
                        s_data, s_pi = self.score(torch.cat([c, c], 1), both).chunk(2, 1)
                    adv = s_data - s_pi
                    adv = adv / adv.abs().mean(1, keepdim=True).clamp(min=1e-6)
                    w = torch.exp(cfg.awr_beta * adv).clamp(max=cfg.awr_max_weight)
                actor_loss = per_seed_mean(w * ((pi - b.action) ** 2).sum(-1))
            self.minimize("actor", actor_loss)
            soft_update(self.critic_target, self.critic, cfg.tau)
            soft_update(self.actor_target, self.actor, cfg.tau)
            metrics["actor_loss"] = actor_loss.detach()
        self.num_updates += 1
        return metrics

    # --- acting: the stock follows each episode's rewards ---
    @torch.no_grad()
    def initial_stock(self, obs: Tensor) -> Tensor:
        """c_0 [S, E] for first observations [S, E, O] (scaled units)."""
        S, E = obs.shape[:2]
        if not self.use_stock:
            return torch.zeros(S, E, device=obs.device)
        if not self.obj.search_c0:
            return torch.full((S, E), float(self.obj.c0), device=obs.device)
        grid = torch.linspace(self.c_lo, self.c_hi, self.cfg.c0_grid, device=obs.device)
        K = len(grid)
        o = self.normalize(obs).unsqueeze(2).expand(S, E, K, -1).reshape(S, E * K, -1)
        c = grid.repeat(S, E, 1).reshape(S, E * K)
        x = self._with_stock(o, c)
        z = self.value(x) if self.cfg.target == "in_sample" else self.critic(x, self.actor(x), ensemble=slice(0, 1))[:, 0]
        j = (self.obj.utility(c.unsqueeze(-1) + z).mean(-1) - c).view(S, E, K)       # J(c) = V(c) − c
        return grid[j.argmax(-1)]

    def begin_episodes(self, obs, starting):
        c0 = self.initial_stock(obs)
        old = self.episode_state.get("stock")
        if old is not None and old.shape == c0.shape:
            c0 = torch.where(starting, c0, old)
        self.episode_state["stock"] = c0

    def observe(self, reward):
        c = self.episode_state.get("stock")
        if c is not None:
            r = self.transform_reward(reward) * self.cfg.reward_scale
            self.episode_state["stock"] = (c + r) / self.cfg.gamma

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        c = self.episode_state.get("stock")
        if c is None or c.shape != obs.shape[:2]:          # called without begin_episodes: start one now
            c = self.initial_stock(obs)
            self.episode_state["stock"] = c
        a = self.actor(self._with_stock(self.normalize(obs), c))
        if deterministic:
            return a
        return (a + self.cfg.exploration_noise * torch.randn_like(a)).clamp(-1.0, 1.0)

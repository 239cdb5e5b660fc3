"""DηN for finite state and action sets: QR-DQN with a stock input and stock-aware greedy targets.

After Ávila Pires et al. (2025), "Optimizing Return Distributions with Distributional Dynamic
Programming", §6 (no official code; the details below follow the reference's reconstruction, §1.8):

* Z(s, c, a) is represented by N quantiles θ_i(s, c, a) at levels τ̂_i = (2i−1)/(2N) of the
  return-to-go; the stock c (clipped to [−G_max, −G_min], then scaled to [−1, 1]) is an input.
* The greedy action maximises the objective, not the mean: a* = argmax_a (1/N) Σ_i f(c + θ_i(s, c, a)).
* Targets use c' = (c + r)/γ and the same f-greedy rule at (s', c') on the target network:
  y_j = r + γ·θ⁻_j(s', c', a'); using QR-DQN's mean-greedy a' would evaluate a risk-neutral policy.
* Loss: Σ_i mean_j ρ_{τ̂_i}(y_j − θ_i), ρ_τ(u) = |τ − 1{u < 0}|·L_κ(u)/κ (quantile Huber, κ = 1).
* Offline stock relabelling: every sampled transition gets a fresh stock c ~ U[c_lo, c_hi]; the
  stock dynamics are known, so any c is a valid augmented state.

States are one-hot inputs; the network carries the member axis (seeds) like every offrl network.
This learner is for tabular MDPs (offrl.tabular) where exact answers exist to compare with; it is not
an `Agent` (no continuous actions, no Trainer), so it lives next to the exact solvers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from offrl.nets import MLP, per_seed_mean, quantile_huber_loss, soft_update, target
from offrl.risk import Utility


@dataclass
class DEtaNConfig:
    n_quantiles: int = 32            # N quantile atoms per action
    hidden: tuple[int, ...] = (128, 128)  # MLP hidden sizes
    lr: float = 1e-3                 # Adam learning rate
    batch_size: int = 256            # transitions per seed per step
    gamma: float = 1.0               # discount
    tau: float = 0.01                # Polyak rate of the target network
    kappa: float = 1.0               # quantile Huber threshold
    allow_invalid_gamma: bool = False  # run an objective at a γ where greedy stock DP is not optimal (warns)


class DEtaN(nn.Module):
    """θ(s, c) → [S, B, A, N] for S seeds (member axis)."""

    def __init__(self, num_states: int, num_actions: int, utility: Utility, stock_range: tuple[float, float],
                 cfg: DEtaNConfig = DEtaNConfig(), seeds: int = 1):
        super().__init__()
        # the same rule as the exact solvers: a utility that greedy DP cannot optimise at this γ is refused
        utility.check_gamma(cfg.gamma, cfg.allow_invalid_gamma)
        self.cfg, self.utility, self.seeds = cfg, utility, seeds
        self.num_states, self.num_actions = num_states, num_actions
        self.c_lo, self.c_hi = float(stock_range[0]), float(stock_range[1])
        self.net = MLP(num_states + 1, num_actions * cfg.n_quantiles, (seeds,), cfg.hidden)
        self.target_net = target(self.net)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)

    def _inputs(self, s: Tensor, c: Tensor) -> Tensor:
        # Clipping to [−G_max, −G_min] keeps greedy choices for piecewise-affine f (reference T7).
        c = c.clamp(self.c_lo, self.c_hi)
        scaled = 2 * (c - self.c_lo) / max(self.c_hi - self.c_lo, 1e-8) - 1
        return torch.cat([F.one_hot(s, self.num_states).float(), scaled.unsqueeze(-1)], -1)

    def quantiles(self, s: Tensor, c: Tensor, net: nn.Module | None = None) -> Tensor:
        """s [S, B] int, c [S, B] → θ [S, B, A, N] (sorted quantiles are not enforced, as in QR-DQN)."""
        out = (net or self.net)(self._inputs(s, c))
        return out.view(*s.shape, self.num_actions, self.cfg.n_quantiles)

    def f_greedy(self, q: Tensor, c: Tensor) -> Tensor:
        """argmax_a (1/N) Σ_i f(c + θ_i(a)) for quantiles q [..., A, N] and stocks c [...] → [...]."""
        return self.utility(c[..., None, None] + q).mean(-1).argmax(-1)

    @torch.no_grad()
    def greedy(self, s: Tensor, c: Tensor) -> Tensor:
        """The f-greedy action [S, B] at states s [S, B] and stocks c [S, B]."""
        c = c.clamp(self.c_lo, self.c_hi)
        return self.f_greedy(self.quantiles(s, c), c)

    def update(self, s: Tensor, a: Tensor, r: Tensor, s2: Tensor, done: Tensor, c: Tensor) -> Tensor:
        """One step on transitions [S, B] relabelled with stocks c [S, B]; returns the loss [S]."""
        cfg = self.cfg
        with torch.no_grad():
            c2 = ((c + r) / cfg.gamma).clamp(self.c_lo, self.c_hi)
            q2 = self.quantiles(s2, c2, self.target_net)                                  # [S, B, A, N]
            a2 = self.f_greedy(q2, c2)                                                     # f-greedy at (s', c')
            z2 = q2.gather(2, a2[..., None, None].expand(*a2.shape, 1, cfg.n_quantiles)).squeeze(2)
            y = r.unsqueeze(-1) + cfg.gamma * (~done).float().unsqueeze(-1) * z2           # [S, B, N]
        q = self.quantiles(s, c)
        pred = q.gather(2, a[..., None, None].expand(*a.shape, 1, cfg.n_quantiles)).squeeze(2)
        loss = per_seed_mean(quantile_huber_loss(pred, y, cfg.kappa))
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.opt.step()
        soft_update(self.target_net, self.net, cfg.tau)
        return loss.detach()

    def fit(self, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_states: np.ndarray,
            done: np.ndarray, steps: int, generator: torch.Generator | None = None) -> list[float]:
        """Offline training on a transition set with fresh uniform stocks each batch; returns losses."""
        data = [torch.as_tensor(x) for x in (states, actions, rewards, next_states, done)]
        n, S, B = len(states), self.seeds, self.cfg.batch_size
        losses = []
        for _ in range(steps):
            idx = torch.randint(n, (S, B), generator=generator)
            s, a, r, s2, d = (x[idx] for x in data)
            c = self.c_lo + (self.c_hi - self.c_lo) * torch.rand(S, B, generator=generator)
            losses.append(self.update(s, a, r.float(), s2, d, c))
        return [float(x.mean()) for x in losses]

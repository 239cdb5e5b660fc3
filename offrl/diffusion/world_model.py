"""The autoregressive baseline of PGD's dynamics-error comparison: a MOPO/MBPO-style ensemble of
probabilistic MLPs predicting (Δs, r) as Gaussians, trained by negative log-likelihood on the dataset
and rolled out step by step with a policy (a random member per trajectory and step)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from offrl.data.dataset import Dataset
from offrl.nets import MLP


@dataclass
class WorldModelConfig:
    members: int = 7                   # ensemble size (MOPO: 7)
    hidden: tuple[int, ...] = (200, 200, 200)   # MOPO uses 4×200; 3×200 fits a CPU
    lr: float = 1e-3
    batch_size: int = 256
    steps: int = 5000


class EnsembleDynamics(nn.Module):
    """E members on the member axis: normalised [s, a] [E, B, O + A] → mean and log-variance of the
    normalised [Δs, r] [E, B, O + 1], the log-variance softly kept within learned bounds (MBPO)."""

    def __init__(self, ds: Dataset, cfg: WorldModelConfig, seed: int = 0):
        super().__init__()
        O, A = ds.obs_dim, ds.act_dim
        self.cfg, self.obs_dim = cfg, O
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = MLP(O + A, 2 * (O + 1), (cfg.members,), cfg.hidden)
        x = np.concatenate([ds.observations, ds.actions], 1).astype(np.float64)
        y = np.concatenate([ds.next_observations - ds.observations, ds.rewards[:, None]], 1).astype(np.float64)
        for name, v in (("x_mean", x.mean(0)), ("x_std", x.std(0) + 1e-6), ("y_mean", y.mean(0)), ("y_std", y.std(0) + 1e-6)):
            self.register_buffer(name, torch.as_tensor(v, dtype=torch.float32))
        self.max_logvar = nn.Parameter(torch.full((O + 1,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((O + 1,), -10.0))
        self.data = (torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.net((x - self.x_mean) / self.x_std).chunk(2, -1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        return mean, self.min_logvar + F.softplus(logvar - self.min_logvar)

    def fit(self, generator: torch.Generator, log: Callable[[str], None] | None = None) -> list[float]:
        """NLL training, each member on its own bootstrap-free random batches; returns the loss every 500 steps."""
        cfg, (x, y) = self.cfg, self.data
        opt = torch.optim.Adam(self.parameters(), lr=cfg.lr)
        yn, losses = (y - self.y_mean) / self.y_std, []
        for step in range(cfg.steps):
            idx = torch.randint(len(x), (cfg.members, cfg.batch_size), generator=generator)
            mean, logvar = self(x[idx])
            nll = (((mean - yn[idx]) ** 2) * torch.exp(-logvar) + logvar).mean()
            loss = nll + 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % 500 == 0:
                losses.append(float(nll.detach()))
                if log:
                    log(f"world model step {step + 1}/{cfg.steps}: nll {losses[-1]:.4f}")
        return losses

    @torch.no_grad()
    def rollout(self, start: torch.Tensor, policy: Callable[[torch.Tensor], torch.Tensor], horizon: int,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
        """From states [n, O]: obs [n, H + 1, O], action [n, H, A], reward [n, H], sampling a member and the
        Gaussian's noise each step."""
        obs, acts, rews = [start], [], []
        s = start
        for _ in range(horizon):
            a = policy(s)
            mean, logvar = self(torch.cat([s, a], -1).expand(self.cfg.members, *s.shape[:-1], -1))
            pick = torch.randint(self.cfg.members, (len(s),), generator=generator)
            mean, std = mean[pick, torch.arange(len(s))], (0.5 * logvar[pick, torch.arange(len(s))]).exp()
            y = (mean + std * torch.randn(mean.shape, generator=generator)) * self.y_std + self.y_mean
            s = s + y[:, :self.obs_dim]
            obs.append(s)
            acts.append(a)
            rews.append(y[:, self.obs_dim])
        return {"obs": torch.stack(obs, 1), "action": torch.stack(acts, 1), "reward": torch.stack(rews, 1)}

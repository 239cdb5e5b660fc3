"""EDM (Karras et al. 2022) on trajectory windows, as policy-guided diffusion uses it (reference §3.4–3.5):
preconditioned denoiser, log-normal σ training with EMA weights, the stochastic Heun sampler with churn,
and action guidance from a policy's log-likelihood with the λ_i schedule.

Shapes: trajectories x [G, n, L, D] (G groups, e.g. the seeds of an agent whose policy guides each group's
trajectories; n per group), normalised; the denoiser sees [G·n, L, D]."""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from offrl import OffrlError
from offrl.diffusion.unet import TemporalUNet
from offrl.diffusion.windows import Normalizer, Windows

# log π(a | s) per (group, row): obs [G, m, O] (raw), action [G, m, A] in [-1, 1] → [G, m]
LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class EDMConfig:
    features: int = 64                 # U-Net width (official 1024 = 178M parameters; 64–128 on a CPU)
    n_blocks: int = 3
    length: int = 32                   # training window L (timesteps)
    stride: int = 8                    # window starts every `stride` steps
    train_steps: int = 20_000          # gradient steps (the learning-rate schedule spans them)
    batch_size: int = 32
    lr: float = 2e-3                   # peak; from 0.1·lr over the first 10% of steps, then cosine to 0
    ema_decay: float = 0.995           # EMA of the weights, applied every `ema_every` steps (the sampler's model)
    ema_every: int = 10
    sigma_data: float = 1.0
    p_mean: float = -1.2               # ln σ ~ N(p_mean, p_std²) in training
    p_std: float = 1.2
    # sampling
    sample_steps: int = 256            # N
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    s_churn: float = 80.0              # γ_i = min(s_churn/N, √2 − 1) for σ_i in [s_tmin, s_tmax]: 0.3125 at N = 256
    s_tmin: float = 0.05
    s_tmax: float = 50.0
    s_noise: float = 1.003
    euler_from_x: bool = False         # the official code's Euler step from x instead of EDM's x̂ (a deviation; off)

    def check(self) -> None:
        for k in ("features", "n_blocks", "length", "stride", "train_steps", "batch_size", "sample_steps", "ema_every"):
            if getattr(self, k) < 1:
                raise OffrlError(f"diffusion setting {k} must be >= 1, got {getattr(self, k)}")
        if self.features % 8:
            raise OffrlError(f"diffusion features must be a multiple of 8 (GroupNorm(8)), got {self.features}")


def sigma_schedule(cfg: EDMConfig, n: int | None = None) -> torch.Tensor:
    """σ_0 = σ_max … σ_{N−1} = σ_min (ρ-spaced), then σ_N = 0: [N + 1]."""
    n = n or cfg.sample_steps
    i = torch.arange(n, dtype=torch.float64)
    r = 1.0 / cfg.rho
    s = (cfg.sigma_max ** r + i / max(n - 1, 1) * (cfg.sigma_min ** r - cfg.sigma_max ** r)) ** cfg.rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


def churn(cfg: EDMConfig, sigma: float, n: int) -> float:
    """γ_i: min(S_churn/N, √2 − 1) inside [S_tmin, S_tmax], else 0."""
    return min(cfg.s_churn / n, math.sqrt(2) - 1) if cfg.s_tmin <= sigma <= cfg.s_tmax else 0.0


def guidance_weight(i: int, n: int, coef: float, cos_coef: float = 0.3) -> float:
    """λ_i = c·[(1 − i/N) + c_cos·sin(π(i + 1)/N)] for i < N − 1, and 0 at the last step."""
    return 0.0 if i >= n - 1 else coef * ((1 - i / n) + cos_coef * math.sin(math.pi * (i + 1) / n))


def preconditioning(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in, c_noise) of EDM for σ [N]."""
    s2, d2 = sigma ** 2, sigma_data ** 2
    return d2 / (s2 + d2), sigma * sigma_data / (s2 + d2).sqrt(), 1 / (s2 + d2).sqrt(), sigma.log() / 4


class Diffusion:
    """A trajectory diffusion model of one dataset: the U-Net, its EMA, the optimiser and the windows'
    normaliser; train with `train_step`, sample with `sample` (guided or not); checkpoint with `state_dict`."""

    def __init__(self, windows: Windows, cfg: EDMConfig, seed: int = 0, device: str | torch.device = "cpu"):
        cfg.check()
        self.cfg, self.windows, self.device = cfg, windows, torch.device(device)
        with torch.random.fork_rng(devices=[]):            # a seeded init that leaves the global RNG alone
            torch.manual_seed(seed)
            self.net = TemporalUNet(windows.dim, cfg.features, cfg.n_blocks).to(self.device)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.step = 0
        self.data = torch.as_tensor(windows.train, device=self.device)

    # --- the denoiser ---
    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, net: torch.nn.Module | None = None) -> torch.Tensor:
        """D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise): x [N, L, D], σ [N]."""
        c_skip, c_out, c_in, c_noise = (c[:, None, None] if c.dim() else c for c in preconditioning(sigma, self.cfg.sigma_data))
        return c_skip * x + c_out * (net or self.ema)(c_in * x, c_noise.reshape(-1))

    def lr_at(self, step: int) -> float:
        cfg, T = self.cfg, self.cfg.train_steps
        warm = max(int(0.1 * T), 1)
        if step < warm:
            return cfg.lr * (0.1 + 0.9 * step / warm)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(step - warm, T - warm) / max(T - warm, 1)))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """EDM's weighted denoising loss on clean windows x [B, L, D] (σ and noise from the model's generator)."""
        cfg, g = self.cfg, self.generator
        sigma = (torch.randn(len(x), device=self.device, generator=g) * cfg.p_std + cfg.p_mean).exp()
        noise = torch.randn(x.shape, device=self.device, generator=g)
        weight = (sigma ** 2 + cfg.sigma_data ** 2) / (sigma * cfg.sigma_data) ** 2
        out = self.denoise(x + sigma[:, None, None] * noise, sigma, self.net)
        return (weight[:, None, None] * (out - x) ** 2).mean()

    def train_step(self) -> float:
        cfg = self.cfg
        idx = torch.randint(len(self.data), (cfg.batch_size,), device=self.device, generator=self.generator)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss = self.loss(self.data[idx])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        if self.step % cfg.ema_every == 0:
            with torch.no_grad():
                torch._foreach_lerp_(list(self.ema.parameters()), list(self.net.parameters()), 1 - cfg.ema_decay)
        return float(loss.detach())

    @torch.no_grad()
    def validation_loss(self, batches: int = 8) -> float | None:
        """The loss of the EMA model on held-out windows (None without any), on a fixed generator."""
        if len(self.windows.valid) == 0:
            return None
        saved, self.generator = self.generator, torch.Generator(device=self.device).manual_seed(12345)
        net, self.net = self.net, self.ema
        try:
            valid = torch.as_tensor(self.windows.valid, device=self.device)
            return float(np.mean([self.loss(valid[i::batches]).item() for i in range(min(batches, len(valid)))]))
        finally:
            self.generator, self.net = saved, net

    # --- sampling ---
    def sample(self, groups: int, n: int, length: int | None = None, generator: torch.Generator | None = None,
               log_likelihood: LogLikelihood | None = None, coef: float = 0.0, cos_coef: float = 0.3,
               steps: int | None = None, noise: Callable[[tuple], torch.Tensor] | None = None) -> torch.Tensor:
        """Normalised trajectories [groups, n, length, D] by the stochastic Heun sampler with churn; with
        `log_likelihood` and coef > 0 the action block is moved by λ_i·∇ log π(tanh(a)|s) before each step.
        `noise(shape)` replaces the Gaussian draws (tests); otherwise they come from `generator`."""
        cfg, w = self.cfg, self.windows
        N, L, D = steps or cfg.sample_steps, length or w.length, w.dim
        if log_likelihood is None and coef != 0:
            raise OffrlError("guidance coefficient > 0 needs a policy log-likelihood to guide with")
        gen = generator or torch.Generator(device=self.device).manual_seed(0)
        draw = noise or (lambda shape: torch.randn(shape, device=self.device, generator=gen))
        sig = sigma_schedule(cfg, N).tolist()
        x = draw((groups, n, L, D)) * sig[0]
        mean = torch.as_tensor(w.normalizer.mean, dtype=torch.float32, device=self.device)
        std = torch.as_tensor(w.normalizer.std, dtype=torch.float32, device=self.device)
        for i in range(N):
            lam = guidance_weight(i, N, coef, cos_coef) if log_likelihood is not None else 0.0
            if lam != 0.0:
                x = self.guide(x, log_likelihood, lam, mean, std)
            s, s_next = sig[i], sig[i + 1]
            gamma = churn(cfg, s, N)
            s_hat = s * (1 + gamma)
            x_hat = x + math.sqrt(max(s_hat ** 2 - s ** 2, 0.0)) * cfg.s_noise * draw(x.shape) if gamma > 0 else x
            d = (x_hat - self._denoise_groups(x_hat, s_hat)) / s_hat
            x_next = (x if cfg.euler_from_x else x_hat) + (s_next - s_hat) * d
            if s_next > 0:                                             # Heun's correction (not on the last step)
                d2 = (x_next - self._denoise_groups(x_next, s_next)) / s_next
                x_next = x_hat + 0.5 * (s_next - s_hat) * (d + d2)
            x = x_next
        return x

    def _denoise_groups(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        G, n, L, D = x.shape
        flat = x.reshape(G * n, L, D)
        with torch.no_grad():
            return self.denoise(flat, torch.full((G * n,), sigma, device=self.device)).reshape(G, n, L, D)

    def guide(self, x: torch.Tensor, log_likelihood: LogLikelihood, lam: float, mean: torch.Tensor,
              std: torch.Tensor) -> torch.Tensor:
        """x with its (normalised, pre-tanh) action block moved by λ·∇_ã Σ log π(tanh(unnorm(ã)) | unnorm(s))."""
        O, A = self.windows.obs_dim, self.windows.act_dim
        G, n, L, _ = x.shape
        obs = (x[..., :O] * std[:O] + mean[:O]).reshape(G, n * L, O)
        with torch.enable_grad():
            a_pre = x[..., O:O + A].detach().requires_grad_(True)
            action = torch.tanh(a_pre * std[O:O + A] + mean[O:O + A]).reshape(G, n * L, A)
            grad, = torch.autograd.grad(log_likelihood(obs, action).sum(), a_pre)
        return torch.cat([x[..., :O], x[..., O:O + A] + lam * grad, x[..., O + A:]], -1)

    # --- checkpoints ---
    def state_dict(self) -> dict:
        w = self.windows
        return {"config": asdict(self.cfg), "net": self.net.state_dict(), "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(), "generator": self.generator.get_state(), "step": self.step,
                "normalizer": {"mean": w.normalizer.mean.tolist(), "std": w.normalizer.std.tolist()},
                "dims": [w.obs_dim, w.act_dim], "dataset_hash": w.dataset_hash}

    def load_state_dict(self, state: dict) -> None:
        w = self.windows
        if state["dataset_hash"] != w.dataset_hash:
            raise OffrlError("this diffusion checkpoint was trained on another dataset (its content hash "
                             f"{state['dataset_hash'][:12]}… differs from {w.dataset_hash[:12]}…); train one for "
                             "this dataset with `offrl pgd train`")
        self.net.load_state_dict(state["net"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        w.normalizer = Normalizer(np.asarray(state["normalizer"]["mean"]), np.asarray(state["normalizer"]["std"]))

"""The 1-D temporal U-Net denoiser of policy-guided diffusion (reference §3.3), fully convolutional over
time: x [N, L, D] and c_noise [N] → [N, L, D]. Width `features` (the official 1024 is 178M parameters;
64–128 fit a CPU)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def noise_features(c_noise: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features [N, dim] of the scalar noise level (dim/2 frequencies, sin then cos)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=c_noise.device, dtype=torch.float32) / half)
    angles = c_noise.float()[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], -1)


class Block(nn.Module):
    """Conv(k) → + Dense(noise embedding) → GroupNorm(8) → ReLU → [Conv(3) → GroupNorm → ReLU] × extra."""

    def __init__(self, c_in: int, c_out: int, emb: int, kernel: int = 3, extra: int = 1):
        super().__init__()
        self.kernel = kernel
        self.first = nn.Conv1d(c_in, c_out, kernel)
        self.emb = nn.Linear(emb, c_out)
        self.norm = nn.GroupNorm(8, c_out)
        self.rest = nn.ModuleList(nn.Conv1d(c_out, c_out, 3, padding=1) for _ in range(extra))
        self.rest_norms = nn.ModuleList(nn.GroupNorm(8, c_out) for _ in range(extra))

    def forward(self, x: torch.Tensor, emb: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        k = self.kernel                                        # SAME padding (an even kernel pads one more on the right)
        h = self.first(F.pad(x, ((k - 1) // 2, k // 2)))
        h = F.relu(self.norm(h + self.emb(emb)[..., None]))
        if skip is not None:
            h = torch.cat([h, skip], 1)
        for conv, norm in zip(self.rest, self.rest_norms):
            h = F.relu(norm(conv(h)))
        return h


class TemporalUNet(nn.Module):
    """Encoder blocks at widths features·2^i (i < n_blocks) with max-pooling between them; decoder blocks
    that upsample (nearest) to the skip's length, Conv(k=2), add the noise embedding, concatenate the skip,
    then two Conv(3)s; a Conv(1) out to D channels."""

    def __init__(self, dim: int, features: int = 64, n_blocks: int = 3):
        super().__init__()
        if features % 8 or features < 8:
            raise ValueError(f"features must be a positive multiple of 8 (GroupNorm(8)), got {features}")
        self.features = features
        self.embed = nn.Sequential(nn.Linear(features // 4, features), nn.SiLU(), nn.Linear(features, features))
        widths = [features * 2 ** i for i in range(n_blocks)]
        self.down = nn.ModuleList(Block(c_in, c, features) for c_in, c in zip([dim] + widths[:-1], widths))
        self.up = nn.ModuleList(DecoderBlock(widths[i + 1], widths[i], features) for i in reversed(range(n_blocks - 1)))
        self.out = nn.Conv1d(features, dim, 1)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = F.silu(self.embed(noise_features(c_noise, self.features // 4)))
        h, skips = x.transpose(1, 2), []                      # [N, D, L]
        for i, block in enumerate(self.down):
            h = block(h, emb)
            if i < len(self.down) - 1:
                skips.append(h)
                h = F.max_pool1d(h, 2, ceil_mode=True)
        for block in self.up:
            skip = skips.pop()
            h = block(F.interpolate(h, size=skip.shape[-1], mode="nearest"), emb, skip)
        return self.out(h).transpose(1, 2)


class DecoderBlock(Block):
    def __init__(self, c_in: int, c_out: int, emb: int):
        super().__init__(c_in, c_out, emb, kernel=2, extra=0)
        self.rest = nn.ModuleList([nn.Conv1d(2 * c_out, c_out, 3, padding=1), nn.Conv1d(c_out, c_out, 3, padding=1)])
        self.rest_norms = nn.ModuleList([nn.GroupNorm(8, c_out), nn.GroupNorm(8, c_out)])

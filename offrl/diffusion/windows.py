"""Trajectory windows for policy-guided diffusion (Jackson et al. 2024, reference §3.2).

Each timestep is the vector [obs, atanh(clip(action, ±0.999)), reward, terminal] (D = O + A + 2; actions in
pre-tanh space), every feature standardised over all timesteps. A window is L consecutive timesteps of
one episode: starts every `stride` steps (0 included), plus the window that ends at a terminal; a window
that ends at a time-limit step is dropped, so "terminal" is 1 only ever at a window's last position."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from offrl import OffrlError
from offrl.data.dataset import Dataset

ACTION_CLIP = 0.999


@dataclass
class Normalizer:
    """Per-feature mean and std [D] of the timestep vectors (std 0 → 1)."""
    mean: np.ndarray
    std: np.ndarray

    def normalize(self, x):
        return (x - self.mean) / self.std

    def unnormalize(self, x):
        return x * self.std + self.mean


@dataclass
class Windows:
    """Training windows [N, L, D] (normalised float32) of one dataset, with what decoding needs."""
    train: np.ndarray
    valid: np.ndarray
    normalizer: Normalizer
    obs_dim: int
    act_dim: int
    length: int
    dataset_hash: str

    @property
    def dim(self) -> int:
        return self.obs_dim + self.act_dim + 2


def timestep_vectors(ds: Dataset) -> np.ndarray:
    """[N, O + A + 2] float64: obs, atanh(clipped action), reward, terminal of every transition."""
    a = np.arctanh(np.clip(ds.actions.astype(np.float64), -ACTION_CLIP, ACTION_CLIP))
    return np.concatenate([ds.observations.astype(np.float64), a, ds.rewards[:, None].astype(np.float64),
                           ds.terminals[:, None].astype(np.float64)], 1)


def window_starts(length_of_episode: int, terminated: bool, L: int, stride: int) -> list[int]:
    """Start steps of the windows of one episode of T steps (see the module docstring)."""
    T = length_of_episode
    starts = set(range(0, T - L + 1, stride))
    if terminated and T >= L:
        starts.add(T - L)                      # the window ending at the terminal
    if not terminated:
        starts.discard(T - L)                  # a window ending at the time limit
    return sorted(starts)


def make_windows(ds: Dataset, length: int = 32, stride: int = 8, holdout: float = 0.05, seed: int = 0) -> Windows:
    """All windows of `ds`, `holdout` of its episodes (at random, seeded) set apart for validation."""
    if length < 2:
        raise OffrlError(f"window length must be >= 2 timesteps (one transition), got {length}")
    if stride < 1:
        raise OffrlError(f"stride must be >= 1, got {stride}")
    lengths = np.bincount(ds.episode)
    if lengths.max() < length:
        raise OffrlError(f"{ds.name}: every episode is shorter than the window length {length} (longest "
                         f"{int(lengths.max())} steps); choose a horizon of at most {int(lengths.max())}")
    vec = timestep_vectors(ds)
    std = vec.std(0)
    norm = Normalizer(vec.mean(0), np.where(std > 0, std, 1.0))
    vec = norm.normalize(vec).astype(np.float32)
    starts_of_episode = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rng = np.random.default_rng(seed)
    held = set(rng.choice(len(lengths), int(round(holdout * len(lengths))), replace=False).tolist())
    out: dict[bool, list[np.ndarray]] = {False: [], True: []}
    for e, (T, first) in enumerate(zip(lengths, starts_of_episode)):
        terminated = bool(ds.terminals[first + T - 1])
        for s in window_starts(int(T), terminated, length, stride):
            out[e in held].append(vec[first + s:first + s + length])
    empty = np.zeros((0, length, vec.shape[1]), np.float32)
    train = np.stack(out[False]) if out[False] else empty
    if len(train) == 0:
        raise OffrlError(f"{ds.name}: no training windows of length {length}; use a shorter horizon or more data")
    return Windows(train, np.stack(out[True]) if out[True] else empty, norm, ds.obs_dim, ds.act_dim, length,
                   ds.content_hash())


def decode(x: np.ndarray, normalizer: Normalizer, obs_dim: int, act_dim: int) -> dict[str, np.ndarray]:
    """Normalised trajectories [..., L, D] → transitions (t < L − 1) with leading dims [..., L − 1]:
    obs, action = tanh(pre-tanh), reward, terminal (unnormalised value > 0.5), next_obs."""
    v = normalizer.unnormalize(np.asarray(x, np.float64))
    O, A = obs_dim, act_dim
    obs = v[..., :O]
    return {"obs": obs[..., :-1, :].astype(np.float32), "action": np.tanh(v[..., :-1, O:O + A]).astype(np.float32),
            "reward": v[..., :-1, O + A].astype(np.float32), "terminal": v[..., :-1, O + A + 1] > 0.5,
            "next_obs": obs[..., 1:, :].astype(np.float32)}

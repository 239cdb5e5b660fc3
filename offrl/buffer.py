"""Device-resident replay storage and samplers.

The offline dataset is one set of tensors on the training device shared by all seeds; the online
part is a FIFO per seed ([S, C, ...]). Every sample is drawn on the device with a device generator:
`sample(B)` returns a `Batch` of [S, B, ...] tensors with independent indices per seed and no host
round trip.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from offrl import OffrlError
from offrl.data.dataset import Dataset


class Batch(NamedTuple):
    """Transitions for S seeds: obs/next_obs [S, B, O], action [S, B, A], reward/not_done [S, B].

    horizon [S, B]: the env steps m a row spans (1 except for n-step rows, see `n_step_transitions`):
    reward is then Σ_{k<m} γ^k r_{t+k}, next_obs the observation m steps on, and the bootstrap
    discount γ^m. None where a batch is built by hand.
    elapsed, past_return [S, B]: the row's step t within its episode and Σ_{k<t} γ^k r_k, the discounted
    return before it (what history-dependent agents need to relabel a state's stock consistently with
    its trajectory, see stock_ac); 0 for online rows."""
    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    not_done: Tensor
    horizon: Tensor | None = None
    elapsed: Tensor | None = None
    past_return: Tensor | None = None


def past_returns(dataset: Dataset, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per transition: its step t within its episode [N] int64 and Σ_{k<t} γ^k r_k [N] float64."""
    t = dataset.steps_in_episode()
    discounted = dataset.rewards.astype(np.float64) * gamma ** t.astype(np.float64)
    through = np.cumsum(discounted)
    before = through - discounted
    start = np.flatnonzero(t == 0)
    return t, before - np.repeat(before[start], np.diff(np.append(start, len(t))))


def n_step_transitions(dataset: Dataset, n: int, gamma: float) -> tuple[np.ndarray, ...]:
    """n-step rows of the offline data, never crossing an episode's end.

    Row t spans m_t = min(n, steps left in its episode) steps: reward Σ_{k<m} γ^k r_{t+k} [N] float64,
    next observation o_{t+m} [N, O], terminal 1{the episode terminated at step t+m−1} [N] bool and m_t
    [N] int64. Rows that end on a time-limit truncation bootstrap from o_{t+m}, like one-step rows. The
    sum uses the behaviour's next m−1 actions, so for m > 1 the target leans towards the data's
    policy (Peng's/uncorrected n-step); it propagates values n times faster, which γ = 1 over
    hundreds of steps needs."""
    if n < 1:
        raise OffrlError(f"n_step must be ≥ 1, got {n}")
    N = len(dataset)
    reward = np.zeros(N, np.float64)
    last = np.arange(N)
    ep = dataset.episode
    for k in range(n):
        j = np.arange(k, N + k)
        inside = j < N
        inside[inside] = ep[j[inside]] == ep[:N][inside]
        reward[inside] += gamma ** k * dataset.rewards[j[inside]].astype(np.float64)
        last[inside] = j[inside]
    return reward, dataset.next_observations[last], dataset.terminals[last], last - np.arange(N) + 1


@dataclass
class Mixing:
    """How a batch is split between offline data and online transitions (the O2O schemes).

    union:    uniform over offline ∪ online, per seed (IQL, AWAC, CQL fine-tuning)
    fixed:    round(offline_fraction·B) offline rows per batch (Cal-QL, ReBRAC, d3rlpy)
    annealed: offline fraction falls linearly from `offline_fraction` to `floor` over `anneal_steps`
              online steps (TorchRL's OfflineToOnlineReplayBuffer)
    """
    scheme: str = "union"
    offline_fraction: float = 0.5
    floor: float = 0.0
    anneal_steps: int = 100_000

    def __post_init__(self) -> None:
        if self.scheme not in ("union", "fixed", "annealed"):
            raise OffrlError(f"unknown buffer mixing {self.scheme!r}; choose union, fixed or annealed")
        if not 0.0 <= self.floor <= self.offline_fraction <= 1.0:
            raise OffrlError(f"mixing fractions must satisfy 0 ≤ floor ({self.floor}) ≤ offline_fraction "
                             f"({self.offline_fraction}) ≤ 1")

    def offline_rows(self, batch_size: int, online_step: int) -> int:
        frac = self.offline_fraction
        if self.scheme == "annealed":
            t = min(online_step / max(self.anneal_steps, 1), 1.0)
            frac = self.offline_fraction + t * (self.floor - self.offline_fraction)
        return int(round(frac * batch_size))


class Buffer:
    """Offline transitions (shared by seeds) + an online FIFO per seed, all on `device`.

    Each transition is one row [obs | action | reward | next_obs | not_done | horizon | elapsed |
    past_return] of a float32 matrix, so a batch is one gather; `Batch` fields are column views of it.

    dataset: the offline data, or None for online-only runs.
    seeds: S; online_capacity: C rows per seed (0 for offline-only runs).
    n_step, gamma: offline rows as n-step transitions with discount γ (`n_step_transitions`); online
    rows are always one-step (horizon 1), so agents must discount with γ^horizon. γ also discounts
    the past_return column.
    """

    def __init__(self, dataset: Dataset | None, seeds: int, device: torch.device | str = "cpu",
                 online_capacity: int = 0, obs_dim: int | None = None, act_dim: int | None = None,
                 mixing: Mixing | None = None, seed: int = 0, n_step: int = 1, gamma: float = 1.0):
        self.device = torch.device(device)
        self.seeds = seeds
        self.mixing = mixing or Mixing()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        if dataset is not None:
            obs_dim, act_dim = dataset.obs_dim, dataset.act_dim
        if obs_dim is None or act_dim is None:
            raise OffrlError("a Buffer without a dataset needs obs_dim and act_dim")
        O, A = obs_dim, act_dim
        self.columns = (slice(0, O), slice(O, O + A), O + A, slice(O + A + 1, 2 * O + A + 1), 2 * O + A + 1,
                        2 * O + A + 2, 2 * O + A + 3, 2 * O + A + 4)
        self.width = 2 * O + A + 5
        self.n_step = n_step
        self.offline = None
        if dataset is not None:
            if n_step == 1:
                reward, next_obs, terminal = dataset.rewards, dataset.next_observations, dataset.terminals
                horizon = np.ones(len(dataset))
            else:
                reward, next_obs, terminal, horizon = n_step_transitions(dataset, n_step, gamma)
            elapsed, past = past_returns(dataset, gamma)
            rows = np.concatenate([dataset.observations, dataset.actions, reward[:, None], next_obs,
                                   (~terminal)[:, None], horizon[:, None], elapsed[:, None], past[:, None]], 1,
                                  dtype=np.float32)
            self.offline = torch.as_tensor(rows, device=self.device)
        self.capacity = online_capacity
        self.online_size = 0          # rows filled per seed (the same for every seed: envs step in lockstep)
        self.online_pos = 0           # next row to write
        self.online_added = 0         # online transitions added per seed since the start
        self.online = (torch.zeros(seeds, online_capacity, self.width, device=self.device)
                       if online_capacity > 0 else None)

    @property
    def offline_size(self) -> int:
        return 0 if self.offline is None else len(self.offline)

    def _batch(self, rows: Tensor) -> Batch:
        """Column views of gathered rows [S, B, width]."""
        return Batch(*(rows[..., c] for c in self.columns))

    def add(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, terminal: Tensor) -> None:
        """Append one transition per seed: obs [S, O], action [S, A], reward/terminal [S]."""
        if self.online is None:
            raise OffrlError("this buffer has no online part; create it with online_capacity > 0")
        self.online[:, self.online_pos] = torch.cat(
            [obs, action, reward[:, None], next_obs, 1.0 - terminal.float()[:, None], torch.ones_like(reward)[:, None],
             torch.zeros_like(reward)[:, None], torch.zeros_like(reward)[:, None]], 1)
        self.online_pos = (self.online_pos + 1) % self.capacity
        self.online_size = min(self.online_size + 1, self.capacity)
        self.online_added += 1

    def _offline_rows(self, n: int) -> Tensor:
        idx = torch.randint(self.offline_size, (self.seeds, n), device=self.device, generator=self.generator)
        return self.offline[idx]

    def _online_rows(self, n: int) -> Tensor:
        idx = torch.randint(self.online_size, (self.seeds, n), device=self.device, generator=self.generator)
        return self.online[torch.arange(self.seeds, device=self.device)[:, None], idx]

    def sample(self, batch_size: int) -> Batch:
        """A batch [S, B, ...]: each seed draws its own indices."""
        n_off, n_on = self.offline_size, self.online_size
        if n_off + n_on == 0:
            raise OffrlError("cannot sample from an empty buffer")
        if n_on == 0:
            return self._batch(self._offline_rows(batch_size))
        if n_off == 0:
            return self._batch(self._online_rows(batch_size))
        if self.mixing.scheme == "union":
            idx = torch.randint(n_off + n_on, (self.seeds, batch_size), device=self.device, generator=self.generator)
            from_offline = (idx < n_off)[..., None]
            seed_idx = torch.arange(self.seeds, device=self.device)[:, None]
            rows = torch.where(from_offline, self.offline[idx.clamp(max=n_off - 1)],
                               self.online[seed_idx, (idx - n_off).clamp(min=0)])
            return self._batch(rows)
        k = self.mixing.offline_rows(batch_size, self.online_added)
        if k == 0:
            return self._batch(self._online_rows(batch_size))
        if k == batch_size:
            return self._batch(self._offline_rows(batch_size))
        return self._batch(torch.cat([self._offline_rows(k), self._online_rows(batch_size - k)], 1))

    # --- checkpoints: the online part and the sampling RNG (the offline part comes from the dataset) ---
    def state_dict(self) -> dict:
        return {"online": None if self.online is None else self.online[:, :self.online_size].cpu(),
                "online_pos": self.online_pos, "online_size": self.online_size,
                "online_added": self.online_added, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if state["online"] is not None:
            self.online[:, :state["online_size"]] = state["online"].to(self.device)
        self.online_pos, self.online_size = state["online_pos"], state["online_size"]
        self.online_added = state["online_added"]
        self.generator.set_state(state["generator"])

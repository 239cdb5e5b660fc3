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
    """Transitions for S seeds: obs/next_obs [S, B, O], action [S, B, A], reward/not_done [S, B]."""
    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    not_done: Tensor


FIELDS = Batch._fields


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

    dataset: the offline data, or None for online-only runs.
    seeds: S; online_capacity: C rows per seed (0 for offline-only runs).
    """

    def __init__(self, dataset: Dataset | None, seeds: int, device: torch.device | str = "cpu",
                 online_capacity: int = 0, obs_dim: int | None = None, act_dim: int | None = None,
                 mixing: Mixing | None = None, seed: int = 0):
        self.device = torch.device(device)
        self.seeds = seeds
        self.mixing = mixing or Mixing()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        if dataset is not None:
            obs_dim, act_dim = dataset.obs_dim, dataset.act_dim
            to = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=self.device)
            self.offline = Batch(to(dataset.observations), to(dataset.actions), to(dataset.rewards),
                                 to(dataset.next_observations), to(~dataset.terminals).float())
        else:
            self.offline = None
        if obs_dim is None or act_dim is None:
            raise OffrlError("a Buffer without a dataset needs obs_dim and act_dim")
        self.capacity = online_capacity
        self.online_size = 0          # rows filled per seed (the same for every seed: envs step in lockstep)
        self.online_pos = 0           # next row to write
        self.online_added = 0         # online transitions added per seed since the start
        S, C = seeds, online_capacity
        z = lambda *shape: torch.zeros(S, C, *shape, device=self.device)
        self.online = Batch(z(obs_dim), z(act_dim), z(), z(obs_dim), z()) if C > 0 else None

    @property
    def offline_size(self) -> int:
        return 0 if self.offline is None else len(self.offline.reward)

    def add(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, terminal: Tensor) -> None:
        """Append one transition per seed: obs [S, O], action [S, A], reward/terminal [S]."""
        if self.online is None:
            raise OffrlError("this buffer has no online part; create it with online_capacity > 0")
        row = self.online_pos
        for store, value in zip(self.online, (obs, action, reward, next_obs, 1.0 - terminal.float())):
            store[:, row] = value
        self.online_pos = (row + 1) % self.capacity
        self.online_size = min(self.online_size + 1, self.capacity)
        self.online_added += 1

    def _offline_rows(self, n: int) -> Batch:
        idx = torch.randint(self.offline_size, (self.seeds, n), device=self.device, generator=self.generator)
        return Batch(*(f[idx] for f in self.offline))

    def _online_rows(self, n: int) -> Batch:
        idx = torch.randint(self.online_size, (self.seeds, n), device=self.device, generator=self.generator)
        seed_idx = torch.arange(self.seeds, device=self.device)[:, None]
        return Batch(*(f[seed_idx, idx] for f in self.online))

    def sample(self, batch_size: int) -> Batch:
        """A batch [S, B, ...]: each seed draws its own indices."""
        n_off, n_on = self.offline_size, self.online_size
        if n_off + n_on == 0:
            raise OffrlError("cannot sample from an empty buffer")
        if n_on == 0:
            return self._offline_rows(batch_size)
        if n_off == 0:
            return self._online_rows(batch_size)
        if self.mixing.scheme == "union":
            idx = torch.randint(n_off + n_on, (self.seeds, batch_size), device=self.device, generator=self.generator)
            from_offline = idx < n_off
            off_idx = idx.clamp(max=n_off - 1)
            on_idx = (idx - n_off).clamp(min=0)
            seed_idx = torch.arange(self.seeds, device=self.device)[:, None]
            out = []
            for off, on in zip(self.offline, self.online):
                a, b = off[off_idx], on[seed_idx, on_idx]
                mask = from_offline.view(*from_offline.shape, *([1] * (a.dim() - 2)))
                out.append(torch.where(mask, a, b))
            return Batch(*out)
        k = self.mixing.offline_rows(batch_size, self.online_added)
        if k == 0:
            return self._online_rows(batch_size)
        if k == batch_size:
            return self._offline_rows(batch_size)
        off, on = self._offline_rows(k), self._online_rows(batch_size - k)
        return Batch(*(torch.cat([a, b], 1) for a, b in zip(off, on)))

    # --- checkpoints: the online part and the sampling RNG (the offline part comes from the dataset) ---
    def state_dict(self) -> dict:
        return {"online": None if self.online is None else {k: v[:, :self.online_size].cpu()
                                                            for k, v in self.online._asdict().items()},
                "online_pos": self.online_pos, "online_size": self.online_size,
                "online_added": self.online_added, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if state["online"] is not None:
            n = state["online_size"]
            for k, v in state["online"].items():
                getattr(self.online, k)[:, :n] = v.to(self.device)
        self.online_pos, self.online_size = state["online_pos"], state["online_size"]
        self.online_added = state["online_added"]
        self.generator.set_state(state["generator"])

"""Device-resident replay storage: sources of rows, declared per-row columns, one sampler.

Every transition is one row [obs | action | reward | next_obs | not_done | columns…] of a float32
matrix, so a batch is one gather per source and `Batch` fields are column views of it. Rows come
from *sources*:

- `offline`: the dataset, one set of rows on the device shared by all seeds;
- `online`: a FIFO per seed ([S, C, width]) that the trainer's env steps fill;
- further sources (`Source`), e.g. synthetic transitions that a generator (a diffusion model, a
  world model) refills every k gradient steps; each takes a set share of every batch.

The sampler splits a batch between offline and online rows by an O2O mixing rule (`Mixing`:
union, fixed or annealed) and gives each further source its share. Every index is drawn on the
device with the buffer's own generator: `sample(B)` returns [S, B, …] tensors with independent
indices per seed and no host round trip.

*Columns* are per-transition quantities computed from whole episodes (`Column`: return-to-go,
step in episode, past discounted return, episode id, n-step rows). An agent declares the ones it
reads (`Agent.columns()`) and the buffer builds exactly those for the offline rows, and for online
rows when their episode ends.
"""
from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from offrl import OffrlError
from offrl.data.dataset import Dataset
from offrl.utils import closest

BASE_FIELDS = ("obs", "action", "reward", "next_obs", "not_done")


class Batch(NamedTuple):
    """Transitions for S seeds: obs/next_obs [S, B, O], action [S, B, A], reward/not_done [S, B].

    Batches sampled by a buffer whose agent declared columns are of `batch_type(columns)`: these five
    fields, then one [S, B] field per column, by the column's name."""
    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    not_done: Tensor


@functools.cache
def batch_type(columns: tuple[str, ...] = ()) -> type:
    """The Batch type with the base fields and one field per column name (cached, so one type each)."""
    if not columns:
        return Batch
    return collections.namedtuple("Batch", BASE_FIELDS + tuple(columns))


# --- columns: per-transition quantities computed from episodes ---
@dataclass(frozen=True)
class Rows:
    """The transitions a column is computed over, flattened episode after episode (numpy, [N] each):
    reward, step t within the episode (0 at its first transition), episode id, terminal flag; γ; and the
    actions [N, A] (in [-1, 1])."""
    reward: np.ndarray
    step: np.ndarray
    episode: np.ndarray
    terminal: np.ndarray
    gamma: float
    action: np.ndarray | None = None


@dataclass(frozen=True)
class Column:
    """A per-row quantity: `compute(rows) -> [N]` over whole episodes, read as `batch.<name>` [S, B]; or,
    with `width` "action" (the action size) or an int > 1, `compute(rows) -> [N, width]` read as [S, B, width].

    Offline rows get it when the buffer is built. Online rows hold `pending` (in every entry) from the
    moment they are written until their episode ends (by termination or truncation); then the buffer
    computes the column over that episode's rows, exactly as for an offline episode, and writes it in."""
    name: str
    compute: Callable[[Rows], np.ndarray]
    pending: float = 0.0
    doc: str = ""
    width: int | str = 1

    def size(self, act_dim: int) -> int:
        """Entries per row."""
        return act_dim if self.width == "action" else int(self.width)


def _segment_starts(episode: np.ndarray) -> np.ndarray:
    """Index of each episode's first row (rows of one episode are contiguous)."""
    return np.flatnonzero(np.diff(episode, prepend=episode[:1] - 1) != 0)


def past_return(rows: Rows) -> np.ndarray:
    """Σ_{k<t} γ^k r_k: the discounted return before each row within its episode [N] float64."""
    discounted = rows.reward.astype(np.float64) * rows.gamma ** rows.step.astype(np.float64)
    # (rows of an online episode whose start has left the FIFO sum from the first row still stored)
    before = np.cumsum(discounted) - discounted
    start = _segment_starts(rows.episode)
    return before - np.repeat(before[start], np.diff(np.append(start, len(rows.step))))


def return_to_go(rows: Rows) -> np.ndarray:
    """Σ_{k≥t} γ^{k−t} r_k to the end of the row's episode [N] float64 (the Monte-Carlo return; an episode
    cut by a time limit sums to its last stored reward, with no bootstrap)."""
    from scipy.signal import lfilter

    out = np.empty(len(rows.reward), np.float64)
    bounds = np.append(_segment_starts(rows.episode), len(rows.reward))
    for a, b in zip(bounds[:-1], bounds[1:]):       # backward recursion G_t = r_t + γ G_{t+1}, per episode
        out[a:b] = lfilter([1.0], [1.0, -rows.gamma], rows.reward[a:b][::-1].astype(np.float64))[::-1]
    return out


def next_action(rows: Rows) -> np.ndarray:
    """a_{t+1} of the row's episode [N, A]; an episode's last row repeats its own action (no next one is
    stored: a terminal row's next action is never used, a time-limit cut's is unknown)."""
    out = np.empty_like(rows.action)
    out[:-1] = rows.action[1:]
    last = np.append(np.diff(rows.episode) != 0, True)
    out[last] = rows.action[last]
    return out


COLUMNS: dict[str, Column] = {}


def register_column(column: Column) -> Column:
    """Make a column available by name to `Agent.columns()` (plug-ins may also return Column objects)."""
    if column.name in BASE_FIELDS:
        raise OffrlError(f"column name {column.name!r} is a base Batch field; choose another name")
    COLUMNS[column.name] = column
    return column


register_column(Column("elapsed", lambda r: r.step.astype(np.float64), 0.0,
                       "step t of the row within its episode"))
register_column(Column("past_return", past_return, 0.0, "Σ_{k<t} γ^k r_k, the discounted return before the row"))
register_column(Column("return_to_go", return_to_go, float("-inf"),
                       "Σ_{k≥t} γ^{k−t} r_k to the episode's end; online rows hold −inf (no lower bound known) "
                       "until their episode ends"))
register_column(Column("episode", lambda r: r.episode.astype(np.float64), -1.0,
                       "episode id: offline episodes 0…E−1, online episodes E, E+1, … per seed; −1 while running"))
register_column(Column("next_action", next_action, 0.0, "a_{t+1} [A] (the last row of an episode: its own action; "
                       "online rows hold 0 until their episode ends)", width="action"))


@dataclass(frozen=True)
class NStep:
    """Declared like a column: offline rows become n-step rows (`n_step_transitions`) and a `horizon`
    column [S, B] says how many env steps m each row spans (reward Σ_{k<m} γ^k r_{t+k}, next_obs m
    steps on, bootstrap discount γ^m). Online rows stay one-step (horizon 1)."""
    n: int
    name: str = "horizon"


def resolve_columns(declared: Sequence[str | Column | NStep]) -> tuple[list[Column], int]:
    """Declared columns → (Column objects, n of n-step rows). Unknown names fail with the closest one."""
    cols, n_step = [], 1
    for c in declared:
        if isinstance(c, NStep):
            if c.n < 1:
                raise OffrlError(f"n_step must be ≥ 1, got {c.n}")
            n_step = c.n
            continue
        if isinstance(c, str):
            if c not in COLUMNS:
                raise OffrlError(f"unknown column {c!r}{closest(c, COLUMNS)}; known columns: {', '.join(COLUMNS)} "
                                 "(a plug-in can return its own offrl.buffer.Column)")
            c = COLUMNS[c]
        if not isinstance(c, Column):
            raise OffrlError(f"a declared column is a name, a Column or NStep(n), got {c!r}")
        if any(x.name == c.name for x in cols) or c.name in BASE_FIELDS or c.name == "horizon":
            raise OffrlError(f"column {c.name!r} is declared twice or shadows a Batch field")
        cols.append(c)
    return cols, n_step


def _shift(at: int | slice, by: int) -> int | slice:
    """A layout entry moved by `by` columns."""
    return at + by if isinstance(at, int) else slice(at.start + by, at.stop + by)


def dataset_rows(dataset: Dataset, gamma: float) -> Rows:
    return Rows(dataset.rewards, dataset.steps_in_episode(), dataset.episode, dataset.terminals, gamma, dataset.actions)



def past_returns(dataset: Dataset, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per transition: its step t within its episode [N] int64 and Σ_{k<t} γ^k r_k [N] float64."""
    rows = dataset_rows(dataset, gamma)
    return rows.step, past_return(rows)


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
    """How the offline/online part of a batch is split between offline data and online transitions.

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


# --- further sources ---
class Source:
    """A further source of rows with a fixed share of every batch (see `Buffer.add_source`).

    Subclasses hold rows [S, n, width] in the buffer's layout and implement `size` (rows per seed
    available now), `rows(idx)` for indices [S, k], and their checkpoint state. `refresh(step, agent)`
    is called by the trainer before every gradient step (eager, outside any compiled graph), with the
    number of gradient steps taken so far."""
    share: float = 0.0

    def size(self) -> int:
        raise NotImplementedError

    def rows(self, idx: Tensor) -> Tensor:
        raise NotImplementedError

    def refresh(self, step: int, agent: Any) -> None:
        """Called before each gradient step; a generator-backed source refills itself here."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class SyntheticSource(Source):
    """Rows made by a generator: a per-seed FIFO of `capacity` rows refilled every `every` gradient steps.

    generate(source, agent, n) → dict with obs [S, n, O], action [S, n, A], reward [S, n], next_obs
    [S, n, O], not_done [S, n] (and optionally any declared column by name; others get their pending
    value). It draws its randomness from `source.generator` (seeded, checkpointed with the rows), so a
    killed and resumed run regenerates exactly what an uninterrupted one does. The first refill happens
    before the first gradient step; `per_refill` rows are written each time (default: `capacity`)."""

    def __init__(self, buffer: "Buffer", generate: Callable[["SyntheticSource", Any, int], dict[str, Tensor]],
                 share: float, every: int, capacity: int, per_refill: int = 0, seed: int = 0):
        if not 0.0 < share < 1.0:
            raise OffrlError(f"a source's share of each batch must be in (0, 1), got {share}")
        if every < 1 or capacity < 1:
            raise OffrlError(f"a synthetic source needs every ≥ 1 and capacity ≥ 1, got every={every}, capacity={capacity}")
        self.buffer, self.generate, self.share, self.every = buffer, generate, share, every
        self.capacity, self.per_refill = capacity, min(per_refill or capacity, capacity)
        self.generator = torch.Generator(device=buffer.device)
        self.generator.manual_seed(seed)
        self.data = torch.zeros(buffer.seeds, capacity, buffer.width, device=buffer.device)
        self.filled, self.pos, self.refills = 0, 0, 0

    def size(self) -> int:
        return self.filled

    def rows(self, idx: Tensor) -> Tensor:
        return self.data[torch.arange(self.data.shape[0], device=idx.device)[:, None], idx]

    def refresh(self, step: int, agent: Any) -> None:
        if step % self.every:
            return
        made = self.generate(self, agent, self.per_refill)
        rows = self.buffer.to_rows(made)
        n = rows.shape[1]
        at = (self.pos + torch.arange(n, device=rows.device)) % self.capacity
        self.data[:, at] = rows
        self.pos = (self.pos + n) % self.capacity
        self.filled = min(self.filled + n, self.capacity)
        self.refills += 1

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.data[:, :self.filled].cpu(), "filled": self.filled, "pos": self.pos,
                "refills": self.refills, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data[:, :state["filled"]] = state["data"].to(self.data.device)
        self.filled, self.pos, self.refills = state["filled"], state["pos"], state["refills"]
        self.generator.set_state(state["generator"])


SOURCES: dict[str, Callable[..., Source]] = {}


def register_source(name: str):
    """Decorator: a factory `(buffer, agent, **settings) -> Source` usable by name from a run's `sources`
    setting (`--source NAME:share=…,every=…`) or an agent's `sources()`."""
    def deco(factory: Callable[..., Source]) -> Callable[..., Source]:
        SOURCES[name] = factory
        return factory
    return deco


class Buffer:
    """Offline transitions (shared by seeds), an online FIFO per seed and further sources, all on `device`.

    dataset: the offline data, or None for online-only runs.
    seeds: S; online_capacity: C rows per seed (0 for offline-only runs).
    columns: what the agent declared (`Agent.columns()`): names, `Column`s and `NStep(n)`.
    gamma: discount of the columns (n-step sums, past and future returns).
    """

    def __init__(self, dataset: Dataset | None, seeds: int, device: torch.device | str = "cpu",
                 online_capacity: int = 0, obs_dim: int | None = None, act_dim: int | None = None,
                 mixing: Mixing | None = None, seed: int = 0, columns: Sequence[str | Column | NStep] = (),
                 gamma: float = 0.99):
        self.device = torch.device(device)
        self.seeds, self.dataset = seeds, dataset       # the dataset: for sources built from it (e.g. pgd)
        self.mixing = mixing or Mixing()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        if dataset is not None:
            obs_dim, act_dim = dataset.obs_dim, dataset.act_dim
        if obs_dim is None or act_dim is None:
            raise OffrlError("a Buffer without a dataset needs obs_dim and act_dim")
        O, A = obs_dim, act_dim
        self.obs_dim, self.act_dim, self.gamma = O, A, gamma
        self.column_specs, self.n_step = resolve_columns(columns)
        names = tuple(c.name for c in self.column_specs) + (("horizon",) if self.n_step > 1 else ())
        self.batch_type = batch_type(names)
        self.base = base = 2 * O + A + 2        # first column after the base fields
        sizes = [c.size(A) for c in self.column_specs] + [1] * (self.n_step > 1)
        vector = [c.width != 1 for c in self.column_specs] + [False] * (self.n_step > 1)   # [S, B, k] fields
        starts = base + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int) if sizes else []
        self.layout = (slice(0, O), slice(O, O + A), O + A, slice(O + A + 1, 2 * O + A + 1), 2 * O + A + 1) + tuple(
            slice(int(a), int(a) + k) if v else int(a) for a, k, v in zip(starts, sizes, vector))
        self.column_width = sum(sizes[:len(self.column_specs)])     # entries of the declared columns
        self.width = base + sum(sizes)
        self.offline = None
        self.offline_episodes = 0
        if dataset is not None:
            if self.n_step == 1:
                reward, next_obs, terminal = dataset.rewards, dataset.next_observations, dataset.terminals
                extra = []
            else:
                reward, next_obs, terminal, horizon = n_step_transitions(dataset, self.n_step, gamma)
                extra = [horizon]
            rows = dataset_rows(dataset, gamma)
            values = [c.compute(rows) for c in self.column_specs] + extra
            self.offline = torch.as_tensor(np.concatenate(
                [dataset.observations, dataset.actions, reward[:, None], next_obs, (~terminal)[:, None]]
                + [v.reshape(len(v), -1) for v in values], 1, dtype=np.float32), device=self.device)
            self.offline_episodes = dataset.num_episodes
        self.capacity = online_capacity
        self.online_size = 0          # rows filled per seed (the same for every seed: envs step in lockstep)
        self.online_pos = 0           # next row to write
        self.online_added = 0         # online transitions added per seed since the start
        self.online = (torch.zeros(seeds, online_capacity, self.width, device=self.device)
                       if online_capacity > 0 else None)
        self.pending = torch.tensor([c.pending for c in self.column_specs for _ in range(c.size(A))]
                                    + [1.0] * (self.n_step > 1), dtype=torch.float32, device=self.device)
        self.episode_start = np.zeros(seeds, np.int64)   # online_added when each seed's current episode began
        self.online_episodes = np.zeros(seeds, np.int64)  # finished online episodes per seed
        self.sources: dict[str, Source] = {}

    @property
    def offline_size(self) -> int:
        return 0 if self.offline is None else len(self.offline)

    def add_source(self, name: str, source: Source) -> None:
        """Give `source` its share of every batch, drawn after the offline/online rows."""
        if name in ("offline", "online") or name in self.sources:
            raise OffrlError(f"a buffer source named {name!r} exists already; choose another name")
        total = sum(s.share for s in self.sources.values()) + source.share
        if total >= 1.0:
            raise OffrlError(f"the further sources' shares add up to {total:g}; they must leave room for the "
                             "offline/online rows (< 1)")
        self.sources[name] = source

    def as_batch(self, rows: Tensor) -> Batch:
        """Column views of rows [S, B, width] in this buffer's layout (e.g. rows a generator reads back)."""
        return self.batch_type(*(rows[..., c] for c in self.layout))

    def to_rows(self, fields: dict[str, Tensor]) -> Tensor:
        """Rows [S, n, width] from base fields [S, n, …]; columns not given get their pending value."""
        missing = [f for f in BASE_FIELDS if f not in fields]
        if missing:
            raise OffrlError(f"generated transitions lack {missing}; give obs, action, reward, next_obs, not_done")
        S, n = fields["reward"].shape
        extra = self.pending.expand(S, n, -1).clone()
        names = self.batch_type._fields[len(BASE_FIELDS):]
        for name, at in zip(names, self.layout[len(BASE_FIELDS):]):
            if name in fields:
                extra[..., _shift(at, -self.base)] = fields[name]
        return torch.cat([fields["obs"], fields["action"], fields["reward"][..., None], fields["next_obs"],
                          fields["not_done"][..., None], extra], -1)

    # --- online rows ---
    def add(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, terminal: Tensor) -> None:
        """Append one transition per seed: obs [S, O], action [S, A], reward/terminal [S]. Declared columns
        hold their pending value until `end_episodes` marks the seed's episode finished."""
        if self.online is None:
            raise OffrlError("this buffer has no online part; create it with online_capacity > 0")
        self.online[:, self.online_pos] = torch.cat(
            [obs, action, reward[:, None], next_obs, 1.0 - terminal.float()[:, None],
             self.pending.expand(self.seeds, -1)], 1)
        self.online_pos = (self.online_pos + 1) % self.capacity
        self.online_size = min(self.online_size + 1, self.capacity)
        self.online_added += 1

    def end_episodes(self, finished: Sequence[int]) -> None:
        """The current episodes of the seeds in `finished` ended with the last row added: compute the
        declared columns over each one's rows and start a new episode. (An episode longer than the FIFO
        has lost its first rows: past sums then start at the oldest row still stored.)"""
        for s in finished:
            length = self.online_added - int(self.episode_start[s])
            if self.column_specs and length > 0:
                kept = min(length, self.capacity)
                at = (self.online_pos - kept + torch.arange(kept, device=self.device)) % self.capacity
                rows = self.online[s, at]
                ep = np.full(kept, self.offline_episodes + int(self.online_episodes[s]))
                terminal = (rows[:, self.layout[4]] == 0).cpu().numpy()
                values = Rows(rows[:, self.layout[2]].cpu().numpy(), np.arange(length - kept, length), ep,
                              terminal, self.gamma, rows[:, self.layout[1]].cpu().numpy())
                cols = np.concatenate([c.compute(values).reshape(kept, -1) for c in self.column_specs], 1)
                self.online[s, at, self.base:self.base + self.column_width] = torch.as_tensor(
                    cols, dtype=torch.float32, device=self.device)
            self.episode_start[s] = self.online_added
            self.online_episodes[s] += 1

    # --- sampling ---
    def _offline_rows(self, n: int) -> Tensor:
        idx = torch.randint(self.offline_size, (self.seeds, n), device=self.device, generator=self.generator)
        return self.offline[idx]

    def _online_rows(self, n: int) -> Tensor:
        idx = torch.randint(self.online_size, (self.seeds, n), device=self.device, generator=self.generator)
        return self.online[torch.arange(self.seeds, device=self.device)[:, None], idx]

    def _core_rows(self, batch_size: int) -> Tensor:
        """Offline and online rows [S, B, width] mixed by `self.mixing`."""
        n_off, n_on = self.offline_size, self.online_size
        if n_off + n_on == 0:
            raise OffrlError("cannot sample from an empty buffer")
        if n_on == 0:
            return self._offline_rows(batch_size)
        if n_off == 0:
            return self._online_rows(batch_size)
        if self.mixing.scheme == "union":
            idx = torch.randint(n_off + n_on, (self.seeds, batch_size), device=self.device, generator=self.generator)
            from_offline = (idx < n_off)[..., None]
            seed_idx = torch.arange(self.seeds, device=self.device)[:, None]
            return torch.where(from_offline, self.offline[idx.clamp(max=n_off - 1)],
                               self.online[seed_idx, (idx - n_off).clamp(min=0)])
        k = self.mixing.offline_rows(batch_size, self.online_added)
        if k == 0:
            return self._online_rows(batch_size)
        if k == batch_size:
            return self._offline_rows(batch_size)
        return torch.cat([self._offline_rows(k), self._online_rows(batch_size - k)], 1)

    def sample(self, batch_size: int) -> Batch:
        """A batch [S, B, ...]: each seed draws its own indices; each further source with rows gives
        round(share·B) of them, the offline/online rows the rest."""
        parts, rest = [], batch_size
        for source in self.sources.values():
            k = int(round(source.share * batch_size)) if source.size() > 0 else 0
            if k > 0:
                idx = torch.randint(source.size(), (self.seeds, k), device=self.device, generator=self.generator)
                parts.append(source.rows(idx))
                rest -= k
        rows = self._core_rows(rest)
        return self.as_batch(torch.cat([rows] + parts, 1) if parts else rows)

    def refresh(self, step: int, agent: Any) -> None:
        """Before gradient step `step` (0-based count of steps taken): let generator-backed sources refill."""
        for source in self.sources.values():
            source.refresh(step, agent)

    # --- checkpoints: online rows, further sources, the sampling RNG (the offline rows come from the dataset) ---
    def state_dict(self) -> dict:
        return {"online": None if self.online is None else self.online[:, :self.online_size].cpu(),
                "online_pos": self.online_pos, "online_size": self.online_size,
                "online_added": self.online_added, "generator": self.generator.get_state(),
                "episode_start": torch.from_numpy(self.episode_start.copy()),
                "online_episodes": torch.from_numpy(self.online_episodes.copy()),
                "sources": {k: s.state_dict() for k, s in self.sources.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["online"] is not None:
            if state["online"].shape[-1] != self.width:
                raise OffrlError(f"the checkpoint's online rows have {state['online'].shape[-1]} columns, this run's "
                                 f"{self.width}: it was written with other declared columns")
            self.online[:, :state["online_size"]] = state["online"].to(self.device)
        self.online_pos, self.online_size = state["online_pos"], state["online_size"]
        self.online_added = state["online_added"]
        self.generator.set_state(state["generator"])
        self.episode_start = state["episode_start"].numpy().copy()
        self.online_episodes = state["online_episodes"].numpy().copy()
        missing = set(self.sources) ^ set(state["sources"])
        if missing:
            raise OffrlError(f"the checkpoint's buffer sources {sorted(state['sources'])} differ from this run's "
                             f"{sorted(self.sources)}")
        for k, s in self.sources.items():
            s.load_state_dict(state["sources"][k])

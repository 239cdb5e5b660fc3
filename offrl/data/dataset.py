"""The one in-memory form of offline data: episodes, flattened into transitions.

Every source (Minari, D4RL hdf5, generated data) ends here. An episode of T steps has T+1
observations; its transitions are (o[t], a[t], r[t], o[t+1]) for t < T. Bootstrapping stops at
terminations only: a time-limit truncation is an episode end, not a terminal state.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from offrl import OffrlError


class DatasetError(OffrlError):
    """A dataset that cannot be used as it is; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class Episode:
    """One episode in Minari's layout.

    observations: [T+1, O]   (reset observation first, final observation last)
    actions:      [T, A]
    rewards, terminations, truncations: [T]
    """
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray

    def cut(self, T: int) -> "Episode":
        """The first T steps; a cut that ends on a non-terminal step is marked truncated there."""
        if T >= len(self.actions):
            return self
        trunc = np.zeros(T, bool)
        trunc[-1] = not self.terminations[T - 1]
        return Episode(self.observations[:T + 1], self.actions[:T], self.rewards[:T], self.terminations[:T], trunc)


def _validate_episode(ep: Episode, where: str, index: int) -> None:
    name = f"{where}: episode {index}"
    for fld in ("observations", "actions", "rewards", "terminations", "truncations"):
        arr = getattr(ep, fld)
        if not isinstance(arr, np.ndarray):
            raise DatasetError(f"{name}: field '{fld}' is a {type(arr).__name__}, not an array; "
                               "store it as a numeric array")
        if arr.dtype.kind not in "biuf":
            raise DatasetError(f"{name}: field '{fld}' has dtype {arr.dtype}, which is not numeric; "
                               "store numbers (float for observations/actions/rewards, bool for flags)")
    o, a = ep.observations, ep.actions
    if o.ndim != 2 or a.ndim != 2:
        raise DatasetError(f"{name}: 'observations' must be [T+1, obs_dim] and 'actions' [T, act_dim], "
                           f"got {o.shape} and {a.shape}; flatten Dict/image observations first")
    T = a.shape[0]
    if T == 0:
        raise DatasetError(f"{name}: has no steps (0 actions); drop empty episodes")
    if o.shape[0] != T + 1:
        raise DatasetError(f"{name}: 'observations' has {o.shape[0]} rows for {T} actions; an episode of T "
                           "steps needs T+1 observations (reset observation + one per step). If your file "
                           "stores T observations plus 'next_observations', load it as a D4RL file")
    for fld in ("rewards", "terminations", "truncations"):
        arr = getattr(ep, fld)
        if arr.shape != (T,):
            raise DatasetError(f"{name}: '{fld}' has shape {arr.shape}, expected ({T},) to match 'actions'")
    for fld in ("observations", "actions", "rewards"):
        arr = getattr(ep, fld)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise DatasetError(f"{name}: '{fld}' holds a non-finite value (first at index {tuple(bad)}); "
                               "remove or repair the episode")
    ends = np.asarray(ep.terminations, bool) | np.asarray(ep.truncations, bool)
    if ends[:-1].any():
        t = int(np.argmax(ends[:-1]))
        raise DatasetError(f"{name}: an episode end (termination/truncation) at step {t} of {T}, before its "
                           "last step; episodes are misaligned: split them at every end flag")


@dataclass
class Dataset:
    """Flat transitions of a set of episodes, ready for a `Buffer`.

    observations, next_observations: [N, O] float32
    actions: [N, A] float32;  rewards: [N] float32
    terminals: [N] bool  (true termination: do not bootstrap)
    timeouts:  [N] bool  (the episode ended here without termination: bootstrap)
    episode:   [N] int64 (episode index of each transition)
    """
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode: np.ndarray
    name: str = "dataset"
    env_id: str | None = None
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    ref_source: str = "none"          # where the reference scores came from (metadata, D4RL table, ...)
    source: str = ""                  # path or id it was loaded from
    metadata: dict[str, Any] = field(default_factory=dict)
    actions_normalized: bool = False  # actions already mapped from the env's bounds to [-1, 1]

    @classmethod
    def from_episodes(cls, episodes: Sequence[Episode], *, where: str = "dataset", **info: Any) -> "Dataset":
        """Validate episodes and flatten them; `where` names the file or id in error messages."""
        if len(episodes) == 0:
            raise DatasetError(f"{where}: holds no episodes; generate or download a non-empty dataset")
        for i, ep in enumerate(episodes):
            _validate_episode(ep, where, i)
        obs_dims = {ep.observations.shape[1] for ep in episodes}
        act_dims = {ep.actions.shape[1] for ep in episodes}
        if len(obs_dims) > 1 or len(act_dims) > 1:
            raise DatasetError(f"{where}: episodes disagree on shapes (obs dims {sorted(obs_dims)}, action dims "
                               f"{sorted(act_dims)}); a dataset must come from one environment")
        lengths = np.array([len(ep.actions) for ep in episodes])
        term = np.concatenate([ep.terminations for ep in episodes]).astype(bool)
        trunc = np.concatenate([ep.truncations for ep in episodes]).astype(bool)
        last = np.cumsum(lengths) - 1
        timeouts = trunc & ~term
        # An episode that stops without any end flag (cut by the file) ended by truncation.
        timeouts[last] |= ~term[last]
        return cls(
            observations=np.concatenate([ep.observations[:-1] for ep in episodes]).astype(np.float32),
            actions=np.concatenate([ep.actions for ep in episodes]).astype(np.float32),
            rewards=np.concatenate([ep.rewards for ep in episodes]).astype(np.float32),
            next_observations=np.concatenate([ep.observations[1:] for ep in episodes]).astype(np.float32),
            terminals=term,
            timeouts=timeouts,
            episode=np.repeat(np.arange(len(episodes)), lengths),
            source=info.pop("source", where),
            **info,
        )

    def __len__(self) -> int:
        return len(self.rewards)

    def to_episodes(self) -> list[Episode]:
        """Back to Minari's per-episode layout (T+1 observations each)."""
        ends = np.flatnonzero(np.diff(self.episode, append=self.episode[-1] + 1)) + 1
        episodes, start = [], 0
        for stop in ends:
            episodes.append(Episode(
                np.concatenate([self.observations[start:stop], self.next_observations[stop - 1:stop]]),
                self.actions[start:stop], self.rewards[start:stop], self.terminals[start:stop].copy(),
                self.timeouts[start:stop].copy()))
            start = stop
        return episodes

    def content_hash(self) -> str:
        """sha256 of the transition arrays, in order: equal hashes mean identical data."""
        import hashlib

        h = hashlib.sha256()
        for a in (self.observations, self.actions, self.rewards, self.next_observations, self.terminals,
                  self.timeouts, self.episode):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def num_episodes(self) -> int:
        return int(self.episode[-1]) + 1

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, [num_episodes] float64."""
        return np.bincount(self.episode, weights=self.rewards.astype(np.float64), minlength=self.num_episodes)

    def observation_stats(self, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and std + eps over the dataset's observations (TD3+BC's normalisation)."""
        obs = self.observations.astype(np.float64)
        return obs.mean(0).astype(np.float32), (obs.std(0) + eps).astype(np.float32)

    def normalized_score(self, returns: np.ndarray | float) -> np.ndarray:
        """100 · (return − ref_min) / (ref_max − ref_min); raises when the dataset has no references."""
        if self.ref_min_score is None or self.ref_max_score is None:
            raise DatasetError(f"{self.source or self.name}: has no reference scores (ref_min_score/ref_max_score); "
                               "add them to the dataset metadata or to offrl.envs' table")
        return 100.0 * (np.asarray(returns, np.float64) - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)

    def steps_in_episode(self) -> np.ndarray:
        """t of every transition: its index within its episode, [N] int64."""
        starts = np.flatnonzero(np.diff(self.episode, prepend=-1))
        return np.arange(len(self)) - np.repeat(starts, np.diff(np.append(starts, len(self))))

    def with_time_feature(self, time_limit: int) -> "Dataset":
        """Observations with t/T appended (next observations (t+1)/T), T = the env's time limit.

        With time in the state, reaching the time limit is a true terminal state (Pardo et al., 2018):
        those transitions become terminals, so γ = 1 episodic returns are well defined."""
        if time_limit < 1:
            raise DatasetError(f"time_feature needs the env's time limit (max_episode_steps), got {time_limit}")
        t = self.steps_in_episode()
        if t.max() + 1 > time_limit:
            raise DatasetError(f"{self.source}: an episode runs {t.max() + 1} steps, longer than the env's time "
                               f"limit {time_limit}; pass the env the data came from with --env")
        at_limit = (t + 1 == time_limit) & ~self.terminals
        col = lambda x: (x / time_limit).astype(np.float32)[:, None]
        return dataclasses.replace(
            self, observations=np.concatenate([self.observations, col(t)], 1),
            next_observations=np.concatenate([self.next_observations, col(t + 1)], 1),
            terminals=self.terminals | at_limit, timeouts=self.timeouts & ~at_limit)

    def fit_to_env(self, observation_space: Any, action_space: Any) -> "Dataset":
        """Check the dataset against an env's (unwrapped) spaces; return it with actions in [-1, 1].

        Datasets store actions in the env's own units (as D4RL and Minari do); offrl's actors act in
        [-1, 1] and `make_env` rescales env actions to match, so dataset actions get the same map.
        """
        obs_shape, act_shape = tuple(observation_space.shape), tuple(action_space.shape)
        if obs_shape != (self.obs_dim,) or act_shape != (self.act_dim,):
            raise DatasetError(
                f"{self.source}: observations {self.obs_dim}-d and actions {self.act_dim}-d, but env "
                f"{self.env_id} has observation shape {obs_shape} and action shape {act_shape}; the data "
                "comes from another environment version (e.g. D4RL Ant is 111-d, Gymnasium Ant-v5 105-d): "
                "pass the matching --env")
        if self.actions_normalized:
            return self
        low, high = np.asarray(action_space.low, np.float64), np.asarray(action_space.high, np.float64)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise DatasetError(f"env {self.env_id} has an unbounded action space; offrl needs bounded Box actions")
        a = self.actions
        tol = 1e-4 * (high - low)
        if (a < low - tol).any() or (a > high + tol).any():
            raise DatasetError(f"{self.source}: dataset actions range over [{a.min():.3g}, {a.max():.3g}], outside "
                               f"env {self.env_id}'s action space [{low.min():.3g}, {high.max():.3g}]; clip them "
                               "or pass the env they came from with --env")
        scaled = (2.0 * (a - low) / (high - low) - 1.0) if not (np.allclose(low, -1) and np.allclose(high, 1)) else a
        return dataclasses.replace(self, actions=np.clip(scaled, -1.0, 1.0).astype(np.float32),
                                   actions_normalized=True)


def flat_episodes(observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                  terminals: np.ndarray, timeouts: np.ndarray,
                  next_observations: np.ndarray | None = None) -> list[Episode]:
    """Cut D4RL-style flat arrays (one row per step) into episodes at every terminal or timeout.

    With `next_observations`, every step is a transition. Without it (old D4RL files), the next
    observation is the following row, so the last step of a timed-out or file-cut episode has no
    next observation and is dropped (as D4RL's `qlearning_dataset` does); a terminal step keeps its
    own observation as next_obs, which never enters a target because bootstrapping stops there.
    """
    N = len(actions)
    ends = np.flatnonzero(terminals.astype(bool) | timeouts.astype(bool))
    bounds = list(ends + 1)
    if not bounds or bounds[-1] != N:
        bounds.append(N)                    # a last episode cut by the end of the file
    episodes, start = [], 0
    for stop in bounds:
        term = bool(terminals[stop - 1])
        if next_observations is not None:
            obs = np.concatenate([observations[start:stop], next_observations[stop - 1:stop]])
            n = stop - start
        elif term:
            obs = np.concatenate([observations[start:stop], observations[stop - 1:stop]])
            n = stop - start
        else:
            obs = observations[start:stop]   # last row is the final observation; its step is dropped
            n = stop - start - 1
        if n > 0:
            episodes.append(Episode(
                observations=obs,
                actions=actions[start:start + n],
                rewards=rewards[start:start + n],
                terminations=np.eye(1, n, n - 1, dtype=bool)[0] if term else np.zeros(n, bool),
                truncations=np.eye(1, n, n - 1, dtype=bool)[0] if not term else np.zeros(n, bool),
            ))
        start = stop
    return episodes


REWARD_TRANSFORMS = ("none", "iql_locomotion", "antmaze", "cql_antmaze")


def reward_transform(name: str, return_range: tuple[float, float] | None) -> tuple[float, float]:
    """(scale, shift) of an affine reward transform r' = scale·r + shift, as the papers define them.

    none:           r
    iql_locomotion: r · 1000 / (max episode return − min episode return)   (IQL, Kostrikov et al. 2021)
    `return_range` is (min, max) of the dataset's episode returns (`Dataset.episode_returns`).
    antmaze:        r − 1                                                   (IQL, AWAC AntMaze)
    cql_antmaze:    10 · r − 5                                              (CQL, Cal-QL AntMaze)
    """
    if name == "none":
        return 1.0, 0.0
    if name == "antmaze":
        return 1.0, -1.0
    if name == "cql_antmaze":
        return 10.0, -5.0
    if name == "iql_locomotion":
        if return_range is None:
            raise DatasetError("reward_transform=iql_locomotion needs an offline dataset to take the return "
                               "range from; use reward_transform=none for online-only runs")
        spread = float(return_range[1] - return_range[0])
        if spread <= 0:
            raise DatasetError("all dataset episodes have the same return, so the IQL reward scale "
                               "1000/(max−min return) is undefined; use reward_transform=none")
        return 1000.0 / spread, 0.0
    raise DatasetError(f"unknown reward transform {name!r}; choose one of {', '.join(REWARD_TRANSFORMS)}")

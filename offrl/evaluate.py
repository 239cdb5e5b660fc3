"""Vectorised policy evaluation: S seeds × E episodes stepped together, one batched policy call per step.

On 2 CPU cores a process-based vector env is slower than stepping MuJoCo in-process (see the CPU
facts), so `EnvBatch` steps its envs in one process and batches only the policy, which is where a
vector env pays off.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import gymnasium as gym
import numpy as np
import torch

from offrl import OffrlError
from offrl.utils import gym_make

from offrl.data.dataset import DatasetError

if TYPE_CHECKING:
    from offrl.data.dataset import Dataset


class TimeFeature(gym.Wrapper):
    """Appends t/T to observations (t: steps since reset, T: the time limit) and makes reaching T a
    termination: with time in the state the episode's end is part of the MDP (Pardo et al., 2018),
    which γ = 1 episodic objectives need. Matches `Dataset.with_time_feature`."""

    def __init__(self, env: gym.Env, time_limit: int):
        super().__init__(env)
        self.time_limit, self.t = time_limit, 0
        low = np.append(env.observation_space.low, 0.0).astype(np.float32)
        high = np.append(env.observation_space.high, 1.0).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        return np.append(obs, self.t / self.time_limit).astype(np.float32)

    def reset(self, **kw: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kw)
        self.t = 0
        return self._obs(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, r, term, trunc, info = self.env.step(action)
        self.t += 1
        return self._obs(obs), r, bool(term or self.t >= self.time_limit), bool(trunc), info


def time_limit_of(env_id: str) -> int:
    """The env's max_episode_steps (what `time_feature` divides by)."""
    env = _gym_make(env_id)
    limit = _time_limit(env)
    env.close()
    if limit is None:
        raise OffrlError(f"env {env_id!r} has no time limit (max_episode_steps); time_feature needs one")
    return int(limit._max_episode_steps)


def _gym_make(env_id: str) -> gym.Env:
    """`gym_make` with offrl's own ids registered; `make_env` and `time_limit_of` make their envs here."""
    from offrl.data import local_metadata
    from offrl.envs.robotics import resolve_dataset_env   # (importing offrl.envs registers offrl's own ids)

    resolve_dataset_env(env_id, local_metadata)   # Gymnasium-Robotics ids; ids carrying a dataset's env settings
    return gym_make(env_id)


def fit_to_env(dataset: Dataset, env_id: str) -> Dataset:
    """The dataset in the units agents see: actions mapped from the env's own bounds to [-1, 1] (and its
    observations checked against the env's), as every run and every model trained for one uses it."""
    import dataclasses

    from offrl.envs import ENV_NOTES, find_task

    probe = make_env(env_id)
    try:
        raw = probe.unwrapped              # the env's own action units, before offrl's rescaling
        # observations as make_env gives them (Dict ones flattened), actions in the env's own units
        return dataclasses.replace(dataset.fit_to_env(probe.observation_space, raw.action_space),
                                   env_id=dataset.env_id or env_id)
    except DatasetError as e:
        task = find_task(dataset.name or "")
        note = ENV_NOTES.get(task.name) if task is not None else None
        raise DatasetError(f"{e}. {note}" if note else str(e)) from None
    finally:
        probe.close()


def make_env(env_id: str, time_feature: bool = False) -> gym.Env:
    """A Gymnasium env acting in [-1, 1] (rescaled to the env's own bounds), observing a flat Box (Dict
    observations flattened as `offrl.envs.robotics` documents, the order datasets use), with a clear
    error for unknown ids; `time_feature` appends t/T to observations (see `TimeFeature`)."""
    try:
        env = _gym_make(env_id)
    except gym.error.Error as e:
        raise OffrlError(f"cannot make env {env_id!r}: {e}; pass a Gymnasium id such as Hopper-v5 with --env") from None
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = gym.wrappers.FlattenObservation(env)
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        raise OffrlError(f"env {env_id!r} has {type(space).__name__} actions; offrl agents need continuous Box actions")
    if not (np.allclose(space.low, -1) and np.allclose(space.high, 1)):
        env = gym.wrappers.RescaleAction(env, np.full(space.shape, -1, np.float32), np.full(space.shape, 1, np.float32))
    if time_feature:
        env = TimeFeature(env, time_limit_of(env_id))
    return env


def _wrapper(env: gym.Env, cls: type) -> Any:
    """The first wrapper of type `cls` in env's wrapper chain, or None."""
    e = env
    while hasattr(e, "env"):
        if isinstance(e, cls):
            return e
        e = e.env
    return None


def _time_limit(env: gym.Env) -> Any:
    return _wrapper(env, gym.wrappers.TimeLimit)


def env_state(env: gym.Env) -> dict[str, Any] | None:
    """A snapshot of a MuJoCo env mid-episode (physics incl. the solver warm start, time-limit counter,
    the env's RNG), enough to continue bit-exactly after a restart; None for other envs."""
    import mujoco

    u = env.unwrapped
    if not (hasattr(u, "model") and hasattr(u, "data") and isinstance(u.model, mujoco.MjModel)):
        return None
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    physics = np.empty(mujoco.mj_stateSize(u.model, spec))
    mujoco.mj_getState(u.model, u.data, physics, spec)
    limit = _time_limit(env)
    return {"physics": torch.from_numpy(physics), "elapsed": None if limit is None else limit._elapsed_steps,
            "np_random": u.np_random.bit_generator.state,
            "task": {k: _saveable(getattr(u, k)) for k in TASK_STATE if hasattr(u, k)}}


# State of Gymnasium-Robotics envs that lives outside the physics: a maze's goal, the kitchen's goals and
# task progress.
TASK_STATE = ("goal", "tasks_to_complete", "episode_task_completions")


def _saveable(x: Any) -> Any:
    """x with arrays as tensors and sets as sorted lists (what a weights-only checkpoint may hold)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x.copy())
    if isinstance(x, dict):
        return {k: _saveable(v) for k, v in x.items()}
    if isinstance(x, (set, list, tuple)):
        return sorted(x) if isinstance(x, set) else list(x)
    return x


def _restored(saved: Any, current: Any) -> Any:
    """`saved` back in the types of the attribute it replaces."""
    if isinstance(current, np.ndarray):
        return saved.numpy().astype(current.dtype)
    if isinstance(current, dict):
        return {k: _restored(v, current.get(k)) for k, v in saved.items()}
    if isinstance(current, (set, list, tuple)):
        return type(current)(saved)
    return saved


def restore_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Put a (reset) env back into the state `env_state` took."""
    import mujoco

    u = env.unwrapped
    mujoco.mj_setState(u.model, u.data, state["physics"].numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(u.model, u.data)
    limit = _time_limit(env)
    if limit is not None:
        limit._elapsed_steps = state["elapsed"]
    feature = _wrapper(env, TimeFeature)
    if feature is not None:
        feature.t = state["elapsed"]
    u.np_random.bit_generator.state = state["np_random"]
    for k, v in state.get("task", {}).items():
        setattr(u, k, _restored(v, getattr(u, k)))


class EnvBatch:
    """n envs of one id stepped together; each is reset with its own seed."""

    def __init__(self, env_id: str, n: int, time_feature: bool = False):
        self.env_id = env_id
        self.envs = [make_env(env_id, time_feature) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.envs)

    def close(self) -> None:
        for e in self.envs:
            e.close()


def rollout_episodes(envs: EnvBatch, policy: Callable[[np.ndarray], np.ndarray], seeds: list[int],
                     observe: Callable[[np.ndarray], None] | None = None,
                     begin: Callable[[np.ndarray], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run one episode in each env (reset with `seeds[i]`) with a batched policy.

    policy: obs [n, O] float32 → actions [n, A] in [-1, 1]; begin (optional): called once with the
    first observations [n]; observe (optional): called with the step's rewards [n] (0 for finished
    envs) after every step. Returns (returns [n], lengths [n]).
    """
    n = len(envs)
    obs = np.stack([e.reset(seed=s)[0] for e, s in zip(envs.envs, seeds)]).astype(np.float32)
    if begin is not None:
        begin(obs)
    returns, lengths = np.zeros(n), np.zeros(n, np.int64)
    active = np.ones(n, bool)
    while active.any():
        actions = policy(obs)
        rewards = np.zeros(n, np.float32)
        for i in np.flatnonzero(active):
            o, r, term, trunc, _ = envs.envs[i].step(actions[i])
            obs[i] = o
            returns[i] += r
            rewards[i] = r
            lengths[i] += 1
            if term or trunc:
                active[i] = False
        if observe is not None:
            observe(rewards)
    return returns, lengths


def evaluate(agent: Any, envs: EnvBatch, episodes: int, seed: int) -> np.ndarray:
    """Deterministic returns [S, E]: env j of seed s is reset with seed + s·E + j."""
    S, E = agent.seeds, episodes
    if len(envs) != S * E:
        raise OffrlError(f"evaluation needs {S * E} envs, got {len(envs)}")
    device = agent.device

    def policy(obs: np.ndarray) -> np.ndarray:
        o = torch.as_tensor(obs, device=device).view(S, E, -1)
        return agent.act(o, deterministic=True).reshape(S * E, -1).cpu().numpy()

    def begin(obs: np.ndarray) -> None:
        agent.begin_episodes(torch.as_tensor(obs, device=device).view(S, E, -1),
                             torch.ones(S, E, dtype=torch.bool, device=device))

    def observe(rewards: np.ndarray) -> None:
        agent.observe(torch.as_tensor(rewards, device=device).view(S, E))

    was_training, saved = agent.training, agent.episode_state
    agent.eval()
    agent.episode_state = {}             # evaluation episodes must not disturb online episodes in flight
    try:
        returns, _ = rollout_episodes(envs, policy, [seed + i for i in range(S * E)], observe, begin)
    finally:
        agent.train(was_training)
        agent.episode_state = saved
    return returns.reshape(S, E)

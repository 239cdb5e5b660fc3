"""Vectorised policy evaluation: S seeds × E episodes stepped together, one batched policy call per step.

On 2 CPU cores a process-based vector env is slower than stepping MuJoCo in-process (see the CPU
facts), so `EnvBatch` steps its envs in one process and batches only the policy, which is where a
vector env pays off.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

from offrl import OffrlError


def make_env(env_id: str) -> gym.Env:
    """A Gymnasium env acting in [-1, 1] (rescaled to the env's own bounds), with a clear error for
    unknown ids."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*settotalmass.*")
            env = gym.make(env_id)
    except gym.error.Error as e:
        raise OffrlError(f"cannot make env {env_id!r}: {e}; pass a Gymnasium id such as Hopper-v5 with --env") from None
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        raise OffrlError(f"env {env_id!r} has {type(space).__name__} actions; offrl agents need continuous Box actions")
    if not (np.allclose(space.low, -1) and np.allclose(space.high, 1)):
        env = gym.wrappers.RescaleAction(env, np.full(space.shape, -1, np.float32), np.full(space.shape, 1, np.float32))
    return env


def _time_limit(env: gym.Env) -> Any:
    e = env
    while hasattr(e, "env"):
        if isinstance(e, gym.wrappers.TimeLimit):
            return e
        e = e.env
    return None


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
            "np_random": u.np_random.bit_generator.state}


def restore_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Put a (reset) env back into the state `env_state` took."""
    import mujoco

    u = env.unwrapped
    mujoco.mj_setState(u.model, u.data, state["physics"].numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(u.model, u.data)
    limit = _time_limit(env)
    if limit is not None:
        limit._elapsed_steps = state["elapsed"]
    u.np_random.bit_generator.state = state["np_random"]


class EnvBatch:
    """n envs of one id stepped together; each is reset with its own seed."""

    def __init__(self, env_id: str, n: int):
        self.env_id = env_id
        self.envs = [make_env(env_id) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.envs)

    def close(self) -> None:
        for e in self.envs:
            e.close()


def rollout_episodes(envs: EnvBatch, policy: Callable[[np.ndarray], np.ndarray], seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Run one episode in each env (reset with `seeds[i]`) with a batched policy.

    policy: obs [n, O] float32 → actions [n, A] in [-1, 1]. Returns (returns [n], lengths [n]).
    """
    n = len(envs)
    obs = np.stack([e.reset(seed=s)[0] for e, s in zip(envs.envs, seeds)]).astype(np.float32)
    returns, lengths = np.zeros(n), np.zeros(n, np.int64)
    active = np.ones(n, bool)
    while active.any():
        actions = policy(obs)
        for i in np.flatnonzero(active):
            o, r, term, trunc, _ = envs.envs[i].step(actions[i])
            obs[i] = o
            returns[i] += r
            lengths[i] += 1
            if term or trunc:
                active[i] = False
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

    was_training = agent.training
    agent.eval()
    try:
        returns, _ = rollout_episodes(envs, policy, [seed + i for i in range(S * E)])
    finally:
        agent.train(was_training)
    return returns.reshape(S, E)

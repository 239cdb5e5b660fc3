"""Dynamics error of generated experience (reference §3.8): reset the MuJoCo simulator to a generated state
and compare what the real dynamics do with what the generator claimed, one step at a time and open-loop.

A locomotion observation is [qpos[1:], qvel] (the x position is not observed; the dynamics do not depend on
it), so a state is restored as qpos = [0, obs[:nq−1]], qvel = obs[nq−1:]. Hopper and Walker2d clip the
observed qvel to ±10: a state with a saturated velocity cannot be restored, so such steps are excluded and
counted. Observations [n, ...] are in the env's units; actions in [-1, 1] (offrl's units)."""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from offrl import OffrlError
from offrl.utils import gym_make

VELOCITY_CLIP = {"Hopper": 10.0, "Walker2d": 10.0}     # envs whose observation clips qvel


@dataclass
class DynamicsError:
    """Per horizon step h (0-based: the prediction of s_{h+1}): mean squared error over the trajectories that
    are valid there [H], how many were [H], and how many steps were excluded for saturated velocities."""
    mse: np.ndarray
    counts: np.ndarray
    excluded: int

    def to_json(self) -> dict:
        return {"mse": [None if np.isnan(x) else float(x) for x in self.mse], "counts": self.counts.tolist(),
                "excluded": self.excluded}


class Simulator:
    """The raw MuJoCo env of `env_id`, settable to any observation."""

    def __init__(self, env_id: str):
        try:
            self.env = gym_make(env_id).unwrapped
        except gym.error.Error as e:
            raise OffrlError(f"cannot make env {env_id!r} for the dynamics error: {e}") from None
        model = getattr(self.env, "model", None)
        if model is None:
            raise OffrlError(f"{env_id} is not a MuJoCo env; the dynamics error resets a MuJoCo simulator")
        self.nq, self.nv = model.nq, model.nv
        self.obs_dim = self.env.observation_space.shape[0]
        if self.obs_dim != self.nq - 1 + self.nv:
            raise OffrlError(f"{env_id}'s observation ({self.obs_dim} numbers) is not [qpos[1:], qvel] ({self.nq - 1} + "
                             f"{self.nv}); the dynamics error supports Hopper, Walker2d and HalfCheetah")
        self.clip = next((v for k, v in VELOCITY_CLIP.items() if env_id.startswith(k)), None)
        low, high = self.env.action_space.low, self.env.action_space.high
        self.scale, self.shift = (high - low) / 2, (high + low) / 2
        self.env.reset(seed=0)

    def saturated(self, obs: np.ndarray) -> np.ndarray:
        """[...] bool: the observation's velocities hit the env's clip (the state is not restorable)."""
        if self.clip is None:
            return np.zeros(obs.shape[:-1], bool)
        return (np.abs(obs[..., self.nq - 1:]) >= self.clip - 1e-6).any(-1)

    def set(self, obs: np.ndarray) -> None:
        self.env.set_state(np.concatenate([[0.0], obs[:self.nq - 1]]), obs[self.nq - 1:])

    def step(self, action: np.ndarray) -> np.ndarray:
        """The next observation after `action` in [-1, 1]."""
        return self.env.step(np.clip(action, -1, 1) * self.scale + self.shift)[0]

    def close(self) -> None:
        self.env.close()


def _check(sim: Simulator, obs: np.ndarray) -> None:
    if obs.shape[-1] != sim.obs_dim:
        raise OffrlError(f"observations have {obs.shape[-1]} numbers, the env's {sim.obs_dim}: "
                         "give the dataset's env (and no time feature)")


def one_step_error(env_id: str, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> DynamicsError:
    """Reset to s_t, apply a_t, compare with the claimed s_{t+1}: obs/next_obs [n, H, O], action [n, H, A]."""
    sim = Simulator(env_id)
    try:
        _check(sim, obs)
        n, H = obs.shape[:2]
        err = np.full((n, H), np.nan)
        bad = sim.saturated(obs) | sim.saturated(next_obs)
        for i in range(n):
            for h in range(H):
                if not bad[i, h]:
                    sim.set(obs[i, h])
                    err[i, h] = np.mean((sim.step(action[i, h]) - next_obs[i, h]) ** 2)
    finally:
        sim.close()
    return DynamicsError(np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in err.T]),
                         np.isfinite(err).sum(0), int(bad.sum()))


def open_loop_error(env_id: str, obs: np.ndarray, action: np.ndarray) -> DynamicsError:
    """Reset to s_0 of each trajectory, replay its actions, compare with its states: obs [n, H + 1, O],
    action [n, H, A]. A trajectory whose s_0 is saturated is excluded; one that saturates later is cut there."""
    sim = Simulator(env_id)
    try:
        _check(sim, obs)
        n, H = action.shape[:2]
        err = np.full((n, H), np.nan)
        bad = sim.saturated(obs)
        excluded = 0
        for i in range(n):
            if bad[i, 0]:
                excluded += H
                continue
            sim.set(obs[i, 0])
            for h in range(H):
                real = sim.step(action[i, h])
                if bad[i, h + 1] or sim.saturated(real):
                    excluded += H - h
                    break
                err[i, h] = np.mean((real - obs[i, h + 1]) ** 2)
    finally:
        sim.close()
    return DynamicsError(np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in err.T]),
                         np.isfinite(err).sum(0), excluded)

"""A scripted controller for InvertedPendulum-v5: tiny datasets for tests and the embedded quick suite, and
the two-strategy data of the risky InvertedPendulum (both a safe and a risky competent behaviour)."""
from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np

from offrl.data.dataset import Episode
from offrl.utils import gym_make

PD_GAINS = np.array([1.0, 20.0, 1.0, 3.0])   # balances InvertedPendulum-v5 from every reset state tried


def pendulum_episodes(n: int, seed: int = 0, noise_levels=(1.5, 2.5, 3.5), max_steps: int = 1000) -> list[Episode]:
    """Episodes of the PD controller plus Gaussian action noise (σ cycles over `noise_levels`): low noise
    survives to the time limit (truncation), high noise lets the pole fall (termination). Actions are
    in the env's units, [-3, 3]."""
    env = gym_make("InvertedPendulum-v5", max_episode_steps=max_steps)
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        sigma = noise_levels[i % len(noise_levels)]
        episodes.append(noisy_pd_episode(env, rng, seed * 1000 + i, sigma, lambda t: 0.0))
    env.close()
    return episodes


def pd_action(obs: np.ndarray, cart_target: float) -> float:
    """The PD controller balancing the pole with the cart held near x = cart_target (env units)."""
    return float(PD_GAINS @ (obs - np.array([cart_target, 0.0, 0.0, 0.0])))


def noisy_pd_episode(env: gym.Env, rng: np.random.Generator, reset_seed: int, sigma: float,
                     cart_target: Callable[[int], float]) -> Episode:
    """One episode of the PD controller holding the cart near cart_target(t) at step t, plus N(0, σ²)
    action noise (one rng.normal per step), clipped to the env's [-3, 3]."""
    o, _ = env.reset(seed=reset_seed)
    obs, acts, rews, terms, truncs = [o], [], [], [], []
    while True:
        a = np.clip(pd_action(o, cart_target(len(acts))) + sigma * rng.normal(), -3, 3).astype(np.float32)[None]
        o, r, term, trunc, _ = env.step(a)
        obs.append(o); acts.append(a); rews.append(r); terms.append(term); truncs.append(trunc)
        if term or trunc:
            return Episode(np.array(obs), np.array(acts), np.array(rews), np.array(terms), np.array(truncs))


# Set points of the risky pendulum's two strategies: left of the risk region (x > 0.1) with a margin
# that the noisiest balancing episodes rarely cross, and well inside it.
SAFE_TARGET, RISKY_TARGET = -0.2, 0.4


def two_strategy_episodes(n: int, seed: int = 0, noise_levels=(0.5, 1.0, 2.0),
                          env_id: str = "offrl/RiskyInvertedPendulum-v5") -> list[Episode]:
    """Episodes of the PD controller on the risky pendulum, each one of: balance safely (cart near
    SAFE_TARGET), balance in the risk region (RISKY_TARGET), or switch from one to the other at a random
    step in [20, 180) (35 / 35 / 15 / 15 %), plus Gaussian action noise σ drawn from `noise_levels`. Both
    strategies are competent, so what an offline agent prefers shows its objective: the region pays
    more on average and less in the worst episodes. Actions in the env's units, [-3, 3]."""
    import offrl.envs  # noqa: F401  (registers the risky ids)

    env = gym_make(env_id)
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        kind = rng.choice(4, p=[0.35, 0.35, 0.15, 0.15])
        first, second = [(SAFE_TARGET,) * 2, (RISKY_TARGET,) * 2, (SAFE_TARGET, RISKY_TARGET),
                         (RISKY_TARGET, SAFE_TARGET)][kind]
        switch, sigma = int(rng.integers(20, 180)), float(rng.choice(noise_levels))
        episodes.append(noisy_pd_episode(env, rng, seed * 100_003 + i, sigma,
                                         lambda t, a=first, b=second, k=switch: a if t < k else b))
    env.close()
    return episodes


def random_policy_return(episodes: int = 100, env_id: str = "InvertedPendulum-v5") -> float:
    """Mean return of a uniform random policy (InvertedPendulum-v5: 1000-step limit)."""
    import offrl.envs  # noqa: F401  (registers the risky ids)

    env = gym_make(env_id)
    env.action_space.seed(0)
    total = 0.0
    for i in range(episodes):
        env.reset(seed=10_000 + i)
        while True:
            _, r, term, trunc, _ = env.step(env.action_space.sample())
            total += r
            if term or trunc:
                break
    return total / episodes

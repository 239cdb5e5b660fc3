"""A scripted controller for InvertedPendulum-v5: tiny datasets for tests and the embedded quick suite."""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from offrl.data.dataset import Episode

PD_GAINS = np.array([1.0, 20.0, 1.0, 3.0])   # balances InvertedPendulum-v5 from every reset state tried


def pendulum_episodes(n: int, seed: int = 0, noise_levels=(1.5, 2.5, 3.5), max_steps: int = 1000) -> list[Episode]:
    """Episodes of the PD controller plus Gaussian action noise (σ cycles over `noise_levels`): low noise
    survives to the time limit (truncation), high noise lets the pole fall (termination). Actions are
    in the env's units, [-3, 3]."""
    env = gym.make("InvertedPendulum-v5", max_episode_steps=max_steps)
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        sigma = noise_levels[i % len(noise_levels)]
        o, _ = env.reset(seed=seed * 1000 + i)
        obs, acts, rews, terms, truncs = [o], [], [], [], []
        while True:
            a = np.clip(PD_GAINS @ o + sigma * rng.normal(), -3, 3).astype(np.float32)[None]
            o, r, term, trunc, _ = env.step(a)
            obs.append(o); acts.append(a); rews.append(r); terms.append(term); truncs.append(trunc)
            if term or trunc:
                break
        episodes.append(Episode(np.array(obs), np.array(acts), np.array(rews), np.array(terms), np.array(truncs)))
    env.close()
    return episodes


def random_policy_return(episodes: int = 100) -> float:
    """Mean return of a uniform random policy on InvertedPendulum-v5 (1000-step limit)."""
    env = gym.make("InvertedPendulum-v5")
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

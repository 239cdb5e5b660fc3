"""Reward wrappers that make MuJoCo tasks genuinely risky, registered as Gymnasium ids.

Standard MuJoCo rewards are nearly deterministic, so CVaR of the return barely differs from its mean
and risk-aware agents cannot be told apart from risk-neutral ones. `RiskyReward` pays a bonus in a
region of the state space and there, at every step, a large penalty with a small probability: the
region has the higher mean and the fatter lower tail. The penalty's randomness comes from the env's
own `np_random`, so `reset(seed=…)` makes it reproducible and offrl's checkpoints restore it. The
same id serves `offrl datasets make` (data collection) and evaluation, so both see the same rewards.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym


class RiskyReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """r' = r + 1{obs[index] > threshold}·(bonus − penalty·B), B ~ Bernoulli(prob), on the new state.

    info["risk_region"] says whether the step ended in the region, info["risk_penalty"] whether the
    penalty was drawn. With `mean_reward=True` nothing is drawn and the region pays bonus − penalty·prob,
    the reward's conditional expectation: the same expected return for every policy, no variance."""

    def __init__(self, env: gym.Env, index: int, threshold: float, bonus: float, penalty: float, prob: float,
                 mean_reward: bool = False):
        gym.utils.RecordConstructorArgs.__init__(self, index=index, threshold=threshold, bonus=bonus,
                                                 penalty=penalty, prob=prob, mean_reward=mean_reward)
        gym.Wrapper.__init__(self, env)
        self.index, self.threshold = index, threshold
        self.bonus, self.penalty, self.prob, self.mean_reward = bonus, penalty, prob, mean_reward

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, term, trunc, info = self.env.step(action)
        inside = bool(obs[self.index] > self.threshold)
        if self.mean_reward:
            hit, extra = False, self.bonus - self.penalty * self.prob
        else:
            hit = inside and bool(self.env.unwrapped.np_random.random() < self.prob)
            extra = self.bonus - self.penalty * hit
        reward = float(reward) + (extra if inside else 0.0)
        return obs, reward, term, trunc, {**info, "risk_region": inside, "risk_penalty": hit}


# InvertedPendulum with 200-step episodes: the cart right of x = 0.1 earns +1 per step (2 instead
# of 1) but risks −60 with probability 0.01 per step: +0.4 per step in expectation. A whole episode
# there (K ~ Binomial(200, 0.01) penalties) returns 280 on average but only 116 in its worst 10 %
# (exact CVaR_0.1), against 200 for balancing outside: risk-neutral and CVaR-optimal behaviour differ,
# and the mean gain is large enough for SAC (the zoo's behaviour learner) to go there. 200 steps (not
# 1000) keep γ = 1 value propagation and 100-episode evaluations cheap on a CPU.
RISKY_INVERTED_PENDULUM = {"index": 0, "threshold": 0.1, "bonus": 1.0, "penalty": 60.0, "prob": 0.01}
RISKY_INVERTED_PENDULUM_STEPS = 200


def make_risky_inverted_pendulum(mean_reward: bool = False, **kwargs: Any) -> gym.Env:
    kwargs.setdefault("max_episode_steps", RISKY_INVERTED_PENDULUM_STEPS)
    return RiskyReward(gym.make("InvertedPendulum-v5", **kwargs), **RISKY_INVERTED_PENDULUM, mean_reward=mean_reward)


# The mean-reward twin is what the zoo's SAC learns on (`Task.behaviour_env_id`): risk-neutral SAC has
# the same optimum there, but its TD targets no longer carry the rare −60 draws, which kept it from ever
# learning to balance inside the region on the risky id itself (results/distributional/README.md §4).
RISKY_IDS = {"offrl/RiskyInvertedPendulum-v5": {}, "offrl/RiskyInvertedPendulumMeanReward-v5": {"mean_reward": True}}


def register() -> None:
    for env_id, kwargs in RISKY_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="offrl.envs.risky:make_risky_inverted_pendulum", kwargs=kwargs,
                         disable_env_checker=True)

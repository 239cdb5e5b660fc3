"""Regenerate tests/data/invertedpendulum-scripted-v0: `python tests/data/make_pendulum.py`.

24 episodes of a noisy PD controller on InvertedPendulum-v5 (time limit 600): noise σ ∈ {1.5, 2.5, 3.5}
cycles, so episodes both terminate (pole falls) and truncate (time limit). Reference scores, on the
evaluation env (InvertedPendulum-v5, 1000-step limit): ref_min = mean return of a uniform random policy
over 100 episodes, ref_max = 1000, the return of the noiseless controller, which never drops the pole.
"""
import shutil
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from conftest import pendulum_episodes  # noqa: E402

from offrl.data import write_minari  # noqa: E402


def random_return(episodes: int = 100) -> float:
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


if __name__ == "__main__":
    target = HERE / "invertedpendulum-scripted-v0"
    staging = HERE / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    folder = write_minari("scripted/invertedpendulum/mixed-v0", pendulum_episodes(24, max_steps=600),
                          env_id="InvertedPendulum-v5", ref_min_score=random_return(), ref_max_score=1000.0,
                          algorithm_name="scripted PD controller + Gaussian noise", root=staging,
                          description="tests/data/make_pendulum.py")
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(str(folder), str(target))
    shutil.rmtree(staging, ignore_errors=True)
    print(target)

"""How far a trained run's policy strays from its data, and how long its episodes last.

Usage: python results/a2pr/checks/policy-vs-data/diagnose.py RUN_DIR [RUN_DIR ...]
(each RUN_DIR needs its checkpoint.pt, which is gitignored: the command in the run's config remakes it).

Per seed: the policy's actions π(s) against the data's actions a on the states of every 20th episode of
the run's dataset (mean |π|, mean squared error per action dimension, share of saturated actions), then
five episodes of the run's env from reset seeds 100–104 (lengths and returns). Last, the data's own
episode lengths and returns, for comparison.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from offrl.data import load_dataset
from offrl.evaluate import EnvBatch, rollout_episodes
from offrl.trainer import load_run_agent

torch.set_num_threads(1)
for run_dir in sys.argv[1:]:
    config = json.loads((Path(run_dir) / "config.json").read_text())
    agent, _ = load_run_agent(run_dir)
    seeds = config["run"]["seeds"]
    data = load_dataset(config["dataset"]["name"])
    keep = (data.episode % 20) == 0
    obs, act = data.observations[keep], data.actions[keep]
    with torch.no_grad():
        pi = agent.act(torch.as_tensor(obs, dtype=torch.float32)[None].expand(seeds, -1, -1),
                       deterministic=True).numpy()
    print(f"{run_dir}: {len(obs)} data states, data mean |a| {np.abs(act).mean():.3f}")
    for s in range(seeds):
        print(f"  seed {s}: mean |pi| {np.abs(pi[s]).mean():.3f}  mse(pi, a)/dim {np.mean((pi[s] - act) ** 2):.4f}"
              f"  share |pi| > 0.99 {np.mean(np.abs(pi[s]) > 0.99):.3f}")
    episodes = 5
    envs = EnvBatch(config["env"], seeds * episodes)

    def policy(o: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(o).view(seeds, episodes, -1)
            return agent.act(x, deterministic=True).reshape(seeds * episodes, -1).numpy()

    returns, lengths = rollout_episodes(envs, policy, [100 + k for k in range(episodes)] * seeds)
    for s in range(seeds):
        part = slice(s * episodes, (s + 1) * episodes)
        print(f"  seed {s}: rollout lengths {lengths[part].tolist()} returns {np.round(returns[part]).astype(int).tolist()}")
    envs.close()
    lengths = np.bincount(data.episode)
    returns = np.bincount(data.episode, weights=data.rewards)
    print(f"  data episodes: length median {np.median(lengths):.0f} mean {lengths.mean():.1f} max {lengths.max()},"
          f" return mean {returns.mean():.1f} max {returns.max():.1f}")

"""Where A2PR's regulariser pulls and where it lets go, on a trained a2pr run's own data.

Usage: python results/a2pr/checks/policy-vs-data/gating.py RUN_DIR [RUN_DIR ...]
(a2pr runs only; each RUN_DIR needs its checkpoint.pt, which is gitignored: the command in the run's config
remakes it).

On the states of every 20th episode of the run's dataset, per seed, with the final critic, V and VAE: the
shares of states whose regulariser weight m·(1{A(ã_π) ≥ 0} + 1{A(a) > 0}) is 0 (no pull towards any action:
the actor follows Q alone there), m and 2m; the share where the target is the VAE's ã_π; and the mean
weight over m, which the training metric `reg_weight` logs times m. TD3+BC's weight is 1 on every state.
"""
import json
import sys
from pathlib import Path

import torch

from offrl.algorithms.a2pr import regularisation_target
from offrl.data import load_dataset
from offrl.trainer import load_run_agent

torch.set_num_threads(1)
torch.manual_seed(0)                                        # the VAE's posterior sample
for run_dir in sys.argv[1:]:
    config = json.loads((Path(run_dir) / "config.json").read_text())
    agent, _ = load_run_agent(run_dir)
    cfg, seeds = agent.cfg, config["run"]["seeds"]
    data = load_dataset(config["dataset"]["name"])
    keep = (data.episode % 20) == 0
    obs = agent.normalize(torch.as_tensor(data.observations[keep], dtype=torch.float32))[None].expand(seeds, -1, -1)
    action = torch.as_tensor(data.actions[keep], dtype=torch.float32)[None].expand(seeds, -1, -1)
    with torch.no_grad():
        pi = agent.actor(obs)
        a_vae = agent.vae(obs, pi)[0]
        v = agent.value(obs)
        adv_vae = agent.critic(obs, a_vae, ensemble=slice(0, 1))[:, 0] - v
        adv_data = agent.critic(obs, action, ensemble=slice(0, 1))[:, 0] - v
        _, weight, use_vae = regularisation_target(adv_vae, adv_data, a_vae, action, 1.0, cfg.weight_sum)
    print(f"{run_dir}: m {cfg.mask}, {obs.shape[1]} data states")
    for s in range(seeds):
        w = weight[s]
        print(f"  seed {s}: weight 0 {(w == 0).float().mean():.3f}  m {(w == 1).float().mean():.3f}"
              f"  2m {(w == 2).float().mean():.3f}  mean/m {w.mean():.3f}  target ã_π {use_vae[s].float().mean():.3f}"
              f"  A(a) > 0 {(adv_data[s] > 0).float().mean():.3f}  A(ã_π) ≥ 0 {(adv_vae[s] >= 0).float().mean():.3f}")

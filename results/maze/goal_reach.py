"""Share of final-evaluation episodes that reach the goal on the sparse mazes (return > 0: the sparse reward
pays 1 per step near the goal), and the mean number of steps spent there by those that do; each seed's
episodes pooled, per run. Usage: python results/maze/goal_reach.py results/maze/runs"""
import sys
from pathlib import Path

import numpy as np

from offrl.record import RunRecord

for final in sorted(Path(sys.argv[1]).glob("*/*/final.json")):
    run = RunRecord.load(final.parent)
    if run.name.endswith("dense-v0"):
        continue
    returns = np.asarray(run.final_episode_returns).ravel()      # [S·episodes]
    reached = returns[returns > 0]
    mean_stay = reached.mean() if reached.size else 0.0
    print(f"{run.label:8s} {final.parent.name:28s} step {run.evaluations[-1].step}: "
          f"{100 * reached.size / returns.size:5.1f}% of {returns.size} episodes reach the goal; "
          f"steps at the goal when reached {mean_stay:6.1f}")

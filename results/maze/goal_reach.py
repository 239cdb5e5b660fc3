"""Share of final-evaluation episodes that reach the goal on the sparse mazes (return > 0), and the mean
number of steps spent at the goal by those that do. Usage: python results/maze/goal_reach.py results/maze/runs"""
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
for run in sorted(root.glob("*/*/metrics.jsonl")):
    agent, ds = run.parts[-3], run.parts[-2]
    if "dense" in ds:
        continue
    evals = [json.loads(l) for l in run.open() if '"eval"' in l]
    if not evals:
        continue
    last = evals[-1]["episode_returns"]
    eps = [r for seed in last for r in seed]
    hit = [r for r in eps if r > 0]
    print(f"{agent:8s} {ds:28s} step {evals[-1]['step']}: {100*len(hit)/len(eps):5.1f}% of {len(eps)} episodes reach the goal; steps at the goal when reached {sum(hit)/max(len(hit),1):6.1f}")

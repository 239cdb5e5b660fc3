"""The maze zoo: PointMaze datasets made the way D4RL made maze2d, on Gymnasium-Robotics' PointMaze v3.

Recipe (D4RL maze2d's, on the Gymnasium-Robotics env):
- The env is `PointMaze_<Maze>[Dense]-v3` with D4RL's single goal cell marked 'g' in its map (umaze (1, 1),
  medium (6, 6), large (7, 9)): every episode starts at a random free cell (uniform ±0.25 noise) and the
  goal is that cell (same noise); `continuing_task=True`, `reset_target=False` (reaching the goal does not
  end the episode: the sparse reward pays 1 for every step within 0.45 of it), 300 / 600 / 800 steps. The
  dataset records this env, and agents are evaluated on it.
- The behaviour is a waypoint controller that ignores the goal: it picks a random free cell, follows the
  shortest path there through the maze's cells (breadth-first distances, 4-neighbours) with a PD law on
  the next cell's centre, a = clip(Kp·(waypoint − xy) − Kd·velocity + N(0, σ²)), and on reaching the
  cell picks another. Its trajectories wander between random cells, so no single episode need pass
  the goal: a learner must stitch pieces of different episodes into a path, which imitation cannot.
  Rewards are the env's, relative to its goal (sparse, or dense exp(−distance) for the Dense envs).
  Differences from D4RL: Gymnasium-Robotics' point mass and maps (same layouts), episodes of the
  evaluation length instead of one long stream, and our gains and noise (stated below).
- Reference scores: ref_min = mean return of a uniform random policy, ref_max = mean return of the
  noise-free controller steering to the goal (D4RL: "a hand-designed expert planner"), each over
  `REF_EPISODES` episodes.
The same seed gives the sparse and the dense set identical transitions (the controller never reads the
reward); only the rewards differ.
"""
from __future__ import annotations

import dataclasses
import re
from collections import deque
from typing import Callable

import numpy as np

from offrl import OffrlError

KP, KD = 10.0, 1.0           # PD gains on the waypoint (D4RL's waypoint controller: p_gain 10, d_gain −1)
NOISE = 0.5                  # σ of the Gaussian action noise (the action range is [-1, 1])
REACHED = 0.5                # a random target cell counts as reached within this distance of its centre
REF_EPISODES = 100           # per reference score (10 at the test budget)
GOAL_CELLS = {"UMaze": (1, 1), "Medium": (6, 6), "Large": (7, 9)}     # D4RL maze2d's 'G' cells
TRANSITIONS = {   # per budget: "standard" = Minari's D4RL/pointmaze sizes (1M each), "full" = D4RL maze2d's
    "test": {"UMaze": 2_000, "Medium": 2_000, "Large": 2_000},
    "quick": {"UMaze": 100_000, "Medium": 100_000, "Large": 100_000},
    "standard": {"UMaze": 1_000_000, "Medium": 1_000_000, "Large": 1_000_000},
    "full": {"UMaze": 1_000_000, "Medium": 2_000_000, "Large": 4_000_000},
}
ENV_RE = re.compile(r"^PointMaze_(UMaze|Medium|Large)(Dense)?-v3$")


def parse_maze_env(env_id: str) -> tuple[str, bool] | None:
    """'PointMaze_MediumDense-v3' → ('Medium', True); None for any other id."""
    m = ENV_RE.match(env_id)
    return (m.group(1), m.group(2) is not None) if m else None


def dataset_id_of(maze: str, dense: bool) -> str:
    return f"offrl/pointmaze/{maze.lower()}{'-dense' if dense else ''}-v0"


def env_of_dataset(dataset_id: str) -> str | None:
    """'offrl/pointmaze/medium-dense-v0' → 'PointMaze_MediumDense-v3' (the id that makes it); None otherwise."""
    m = re.match(r"^offrl/pointmaze/(umaze|medium|large)(-dense)?-v0$", dataset_id)
    if m is None:
        return None
    maze = {"umaze": "UMaze", "medium": "Medium", "large": "Large"}[m.group(1)]
    return f"PointMaze_{maze}{'Dense' if m.group(2) else ''}-v3"


def goal_spec(env_id: str):
    """The registered PointMaze spec with D4RL's goal cell marked 'g' in its map (a gymnasium EnvSpec)."""
    import gymnasium as gym

    from offrl.envs.robotics import require_robotics

    require_robotics(f"the maze zoo ({env_id})")
    maze, _ = parse_maze_env(env_id)
    spec = gym.spec(env_id)
    grid = [list(row) for row in spec.kwargs["maze_map"]]
    r, c = GOAL_CELLS[maze]
    grid[r][c] = "g"
    return dataclasses.replace(spec, kwargs={**spec.kwargs, "maze_map": grid, "continuing_task": True,
                                             "reset_target": False})


class WaypointController:
    """A PD controller following breadth-first shortest paths between the maze's cells.

    Acts on flattened PointMaze observations [n, 8] = [achieved_goal (2), desired_goal (2), x, y, vx, vy]
    (the order `offrl.envs.robotics` documents) and returns actions [n, 2] in [-1, 1]. `targets` [n, 2]
    are (x, y) points; a row steers to the next cell centre on the shortest path to its target's cell,
    and to the target point itself once in that cell.
    """

    def __init__(self, maze_map: list[list], scaling: float = 1.0):
        self.free = {(i, j) for i, row in enumerate(maze_map) for j, v in enumerate(row) if v != 1}
        self.rows, self.cols, self.scaling = len(maze_map), len(maze_map[0]), scaling
        self._next: dict[tuple[int, int], dict[tuple[int, int], tuple[int, int]]] = {}

    def centre(self, cell: tuple[int, int]) -> np.ndarray:
        """Cell (row, col) → its centre (x, y), Gymnasium-Robotics' convention (maze centred on 0)."""
        i, j = cell
        return np.array([(j + 0.5 - self.cols / 2) * self.scaling, (self.rows / 2 - i - 0.5) * self.scaling])

    def cell(self, xy: np.ndarray) -> tuple[int, int]:
        """(x, y) → the free cell holding it (the nearest free cell centre if rounding lands on a wall)."""
        i = int(np.floor(self.rows / 2 - xy[1] / self.scaling))
        j = int(np.floor(xy[0] / self.scaling + self.cols / 2))
        if (i, j) in self.free:
            return i, j
        return min(self.free, key=lambda c: float(np.sum((self.centre(c) - xy) ** 2)))

    def next_cell(self, here: tuple[int, int], goal: tuple[int, int]) -> tuple[int, int]:
        """The neighbour of `here` one step closer to `goal` (breadth-first tree rooted at goal, cached)."""
        if goal not in self._next:
            parent: dict[tuple[int, int], tuple[int, int]] = {goal: goal}
            queue = deque([goal])
            while queue:
                c = queue.popleft()
                for d in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    n = (c[0] + d[0], c[1] + d[1])
                    if n in self.free and n not in parent:
                        parent[n] = c
                        queue.append(n)
            self._next[goal] = parent
        return self._next[goal][here]

    def __call__(self, obs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        xy, vel = obs[:, 4:6], obs[:, 6:8]
        waypoints = np.empty_like(xy)
        for k in range(len(obs)):
            goal = self.cell(targets[k])
            here = self.cell(xy[k])
            waypoints[k] = targets[k] if here == goal else self.centre(self.next_cell(here, goal))
        return np.clip(KP * (waypoints - xy) - KD * vel, -1.0, 1.0)


def wandering_policy(ctrl: WaypointController, seed: int, noise: float = NOISE) -> Callable[[np.ndarray], np.ndarray]:
    """The data-collecting behaviour: each row chases a random free cell, a new one when reached, plus
    N(0, noise²) on the actions. Rows keep their target across episode ends (it is random anyway)."""
    rng = np.random.default_rng(seed)
    cells = sorted(ctrl.free)
    state: dict[str, np.ndarray] = {}

    def pick(n: int) -> np.ndarray:
        return np.stack([ctrl.centre(cells[i]) for i in rng.integers(len(cells), size=n)])

    def policy(obs: np.ndarray) -> np.ndarray:
        if "targets" not in state:
            state["targets"] = pick(len(obs))
        t = state["targets"]
        reached = np.linalg.norm(obs[:, 4:6] - t, axis=1) < REACHED
        if reached.any():
            t[reached] = pick(int(reached.sum()))
        a = ctrl(obs, t) + noise * rng.standard_normal((len(obs), 2))
        return np.clip(a, -1.0, 1.0).astype(np.float32)
    return policy


def expert_policy(ctrl: WaypointController) -> Callable[[np.ndarray], np.ndarray]:
    """The noise-free controller steering to the env's goal (desired_goal, observation columns 2:4)."""
    return lambda obs: ctrl(obs, obs[:, 2:4]).astype(np.float32)


def check_budget(budget: str) -> None:
    if budget not in TRANSITIONS:
        raise OffrlError(f"unknown budget {budget!r} for the maze zoo; choose {', '.join(TRANSITIONS)}")


def make_maze_dataset(env_id: str, budget: str = "quick", root=None, seed: int = 0, force: bool = False,
                      log: Callable[[str], None] = print, command: str | None = None):
    """Build `offrl/pointmaze/<maze>[-dense]-v0` for a PointMaze v3 id; returns its folder (kept when it
    exists, unless `force`)."""
    from pathlib import Path

    from offrl.data.dataset import Dataset
    from offrl.data.minari_io import datasets_root, write_minari
    from offrl.envs.robotics import dataset_env_id, register_dataset_env
    from offrl.zoo import _versions, mean_return, rollout, uniform_policy

    parsed = parse_maze_env(env_id)
    if parsed is None:
        raise OffrlError(f"{env_id!r} is not a maze of the maze zoo; it makes PointMaze_{{UMaze,Medium,Large}}[Dense]-v3")
    check_budget(budget)
    maze, dense = parsed
    dataset_id = dataset_id_of(maze, dense)
    root = Path(root) if root is not None else datasets_root()
    if (root / dataset_id / "data" / "metadata.json").exists() and not force:
        log(f"{dataset_id} already exists under {root} (pass --force to rebuild)")
        return root / dataset_id
    spec = goal_spec(env_id)
    spec_json = spec.to_json()
    eval_id = dataset_env_id(dataset_id, spec_json)          # the id loading the dataset will give its env
    register_dataset_env(eval_id, spec_json)
    ctrl = WaypointController(spec.kwargs["maze_map"], spec.kwargs.get("maze_size_scaling", 1.0))
    n = TRANSITIONS[budget][maze]
    ref_episodes = 10 if budget == "test" else REF_EPISODES
    log(f"[1/2] reference scores over {ref_episodes} episodes each on {env_id} with goal cell {GOAL_CELLS[maze]}")
    ref_min = mean_return(eval_id, uniform_policy(2, seed + 11), ref_episodes, 50_000 + seed * 1000)
    ref_max = mean_return(eval_id, expert_policy(ctrl), ref_episodes, 60_000 + seed * 1000)
    log(f"      ref_min_score {ref_min:.2f} (uniform random), ref_max_score {ref_max:.2f} (controller to the goal)")
    log(f"[2/2] {n:,} transitions of the wandering waypoint controller (σ = {NOISE}) → {root / dataset_id}")
    episodes = rollout(eval_id, wandering_policy(ctrl, seed), n, seed)
    ds = Dataset.from_episodes(episodes, where=dataset_id)
    meta = {"offrl_budget": budget, "offrl_seed": seed, "offrl_versions": _versions(),
            "offrl_command": command or f"offrl datasets make {env_id} --budget {budget} --seed {seed}",
            "offrl_behaviour": f"waypoint controller to random cells, Kp {KP}, Kd {KD}, action noise σ {NOISE}",
            "offrl_goal_cell": list(GOAL_CELLS[maze]), "offrl_content_hash": ds.content_hash(),
            "offrl_ref_scores": f"ref_min: uniform random policy, ref_max: noise-free waypoint controller to the "
                                f"goal; {ref_episodes} episodes each"}
    folder = write_minari(dataset_id, episodes, spec, ref_min_score=ref_min, ref_max_score=ref_max,
                          algorithm_name="waypoint controller (offrl)", root=root, overwrite=True, extra_metadata=meta,
                          description=f"offrl maze zoo: {env_id} with D4RL's goal cell, budget {budget}; see offrl.maze")
    returns = ds.episode_returns()
    touch = "" if dense else f"; {100 * np.mean(returns > 0):.0f}% of episodes reach the goal"
    log(f"      {dataset_id}: {len(ds):,} transitions, {ds.num_episodes:,} episodes, mean return {returns.mean():.1f} "
        f"(normalised {100 * (returns.mean() - ref_min) / (ref_max - ref_min):.1f}){touch}")
    return folder

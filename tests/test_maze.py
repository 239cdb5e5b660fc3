"""The maze zoo (offrl.maze): the waypoint controller's geometry and paths, the datasets it makes
(Dict observations on disk, D4RL's goal cell, sparse/dense twins), and the suite and CLI around them."""
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

from offrl.data import load_dataset                                       # noqa: E402
from offrl.maze import (GOAL_CELLS, WaypointController, env_of_dataset, expert_policy, goal_spec,  # noqa: E402
                        make_maze_dataset, parse_maze_env)


def test_controller_cells_match_gymnasium_robotics_and_paths_are_shortest():
    from gymnasium_robotics.envs.maze.maze_v4 import Maze
    from gymnasium_robotics.envs.maze.maps import LARGE_MAZE, U_MAZE

    for grid in (U_MAZE, LARGE_MAZE):
        ctrl = WaypointController(grid)
        maze = Maze(grid, 1.0, 0.5)
        for cell in sorted(ctrl.free):
            np.testing.assert_allclose(ctrl.centre(cell), maze.cell_rowcol_to_xy(np.array(cell)))
            assert ctrl.cell(ctrl.centre(cell) + 0.3) == cell == tuple(maze.cell_xy_to_rowcol(ctrl.centre(cell)))
    # U maze, by hand: from the bottom-left cell the only way to the top-left goal runs right, up, left
    ctrl = WaypointController(U_MAZE)
    path, here = [(3, 1)], (3, 1)
    while here != (1, 1):
        here = ctrl.next_cell(here, (1, 1))
        path.append(here)
    assert path == [(3, 1), (3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (1, 1)]
    # large maze: the path length equals the breadth-first distance, every step to a free 4-neighbour
    ctrl = WaypointController(LARGE_MAZE)
    here, steps = (1, 1), 0
    while here != GOAL_CELLS["Large"]:
        nxt = ctrl.next_cell(here, GOAL_CELLS["Large"])
        assert nxt in ctrl.free and abs(nxt[0] - here[0]) + abs(nxt[1] - here[1]) == 1
        here, steps = nxt, steps + 1
    assert steps == 14        # counted on the map: (1,1) → (3,1) 2, → (3,6) 7, → (5,6) 9, → (5,8) 11, → (7,8) 13, → (7,9)


def test_expert_controller_reaches_the_goal_and_parses_ids():
    import gymnasium as gym

    from offrl.evaluate import make_env

    assert parse_maze_env("PointMaze_MediumDense-v3") == ("Medium", True)
    assert parse_maze_env("PointMaze_Medium-v4") is None and parse_maze_env("AntMaze_UMaze-v4") is None
    assert env_of_dataset("offrl/pointmaze/large-dense-v0") == "PointMaze_LargeDense-v3"
    assert env_of_dataset("offrl/hopper/medium-v0") is None
    spec = goal_spec("PointMaze_Medium-v3")
    gym.register("test__maze/PointMaze_Medium-v3", entry_point=spec.entry_point, kwargs=spec.kwargs,
                 max_episode_steps=spec.max_episode_steps)
    env = make_env("test__maze/PointMaze_Medium-v3")
    ctrl = WaypointController(spec.kwargs["maze_map"])
    policy = expert_policy(ctrl)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        goal = WaypointController(spec.kwargs["maze_map"]).centre(GOAL_CELLS["Medium"])
        assert np.all(np.abs(obs[2:4] - goal) <= 0.25 + 1e-9)       # D4RL's goal cell, with the env's noise
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(policy(obs[None])[0])
            total, done = total + r, term or trunc
        assert total > 100, f"seed {seed}: the noise-free controller spent only {total} steps at the goal"
    env.close()


def test_sparse_and_dense_sets_share_transitions_and_store_dict_observations(tmp_path, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    make_maze_dataset("PointMaze_UMaze-v3", "test", log=lambda m: None)
    make_maze_dataset("PointMaze_UMazeDense-v3", "test", log=lambda m: None)
    sparse, dense = load_dataset("offrl/pointmaze/umaze-v0"), load_dataset("offrl/pointmaze/umaze-dense-v0")
    assert len(sparse) == len(dense) == 2000
    np.testing.assert_array_equal(sparse.observations, dense.observations)
    np.testing.assert_array_equal(sparse.actions, dense.actions)
    assert set(np.unique(sparse.rewards)) <= {0.0, 1.0} and not np.array_equal(sparse.rewards, dense.rewards)
    assert sparse.env_id == "offrl__pointmaze__umaze-v0/PointMaze_UMaze-v3"
    assert sparse.ref_min_score < sparse.ref_max_score and dense.ref_min_score < dense.ref_max_score
    # on disk in Minari's PointMaze layout: Dict observations; loading flattened them alphabetically
    raw = next(iter(minari.load_dataset("offrl/pointmaze/umaze-v0").iterate_episodes()))
    assert sorted(raw.observations) == ["achieved_goal", "desired_goal", "observation"]
    flat = np.concatenate([raw.observations[k] for k in ("achieved_goal", "desired_goal", "observation")], axis=1)
    np.testing.assert_array_equal(flat[:-1].astype(sparse.observations.dtype), sparse.observations[:len(flat) - 1])
    # the goal never moves within an episode, and the sparse reward is 1 exactly within 0.45 of it
    assert np.all(raw.observations["desired_goal"] == raw.observations["desired_goal"][0])
    dist = np.linalg.norm(raw.observations["achieved_goal"][1:] - raw.observations["desired_goal"][1:], axis=1)
    np.testing.assert_array_equal(raw.rewards, (dist <= 0.45).astype(float))
    # the recorded env is remade by id alone in a fresh process (a resumed run, an evaluation worker)
    code = ("from offrl.evaluate import make_env; e = make_env('offrl__pointmaze__umaze-v0/PointMaze_UMaze-v3'); "
            "print(e.unwrapped.maze.maze_map[1][1], e.unwrapped.reset_target, e.spec.max_episode_steps)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["g", "False", "300"]


def test_maze_cli_and_suite(tmp_path, monkeypatch, capsys):
    from offrl.bench.suite import load_suite, make_command
    from offrl.cli import main

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert main(["datasets", "make", "PointMaze_UMaze-v3", "--levels", "medium"]) != 0
    assert "--levels does not apply to PointMaze_UMaze-v3" in capsys.readouterr().err
    assert main(["datasets", "make", "PointMaze_UMaze-v3", "--budget", "huge"]) != 0
    assert "unknown budget 'huge' for the maze zoo" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())                        # refused before anything was written
    suite = load_suite("maze", build_missing=True)           # nothing on disk: all four are to be built
    assert sorted(suite.missing) == ["PointMaze_Large-v3", "PointMaze_LargeDense-v3", "PointMaze_Medium-v3",
                                     "PointMaze_UMaze-v3"]
    assert make_command("PointMaze_Large-v3", [""], True) == "offrl datasets make PointMaze_Large-v3 --budget standard"
    assert main(["datasets", "make", "PointMaze_UMaze-v3", "--budget", "test"]) == 0
    meta = json.loads((tmp_path / "offrl/pointmaze/umaze-v0/data/metadata.json").read_text())
    assert meta["offrl_command"] == "offrl datasets make PointMaze_UMaze-v3 --budget test --seed 0"
    suite = load_suite("maze", build_missing=True)
    assert "PointMaze_UMaze-v3" not in suite.missing
    # trained briefly and evaluated on the recorded env, with the maze domain's defaults
    run = tmp_path / "run"
    assert main(["train", "--agent", "iql", "--dataset", "offrl/pointmaze/umaze-v0", "--steps", "200",
                 "--eval-every", "200", "--eval-episodes", "2", "--seeds", "1", "--set", "hidden=[32,32]",
                 "--out", str(run), "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["domain"] == "maze" and config["agent"]["reward_transform"] == "none"
    assert config["env"] == "offrl__pointmaze__umaze-v0/PointMaze_UMaze-v3"
    final = json.loads((run / "final.json").read_text())
    ds = load_dataset("offrl/pointmaze/umaze-v0")
    returns, normalized = np.array(final["final"]["return"]), np.array(final["final"]["normalized"])
    np.testing.assert_allclose(normalized, 100 * (returns - ds.ref_min_score) / (ds.ref_max_score - ds.ref_min_score),
                               rtol=1e-5)

"""The rest of D4RL through Minari and Gymnasium-Robotics: datasets recorded with minari's own
`DataCollector` on AntMaze, PointMaze, Adroit and FrankaKitchen are loaded with transitions equal to the
recorded ones (Dict observations flattened in the documented order), trained on, and evaluated on the env
the dataset records, with normalised scores. No network: everything is recorded here."""
from __future__ import annotations

import json
import sys

import gymnasium as gym
import numpy as np
import pytest

from conftest import run_cli
from offrl import OffrlError
from offrl.data import load_dataset
from offrl.envs import find_task
from offrl.envs.robotics import flatten_observations, require_robotics
from offrl.evaluate import make_env
from offrl.utils import remove_maze_xml

pytest.importorskip("gymnasium_robotics")
pytest.importorskip("jax")          # minari's DataCollector needs it (minari[create], in the test extras)

# (dataset id, env id, env kwargs, eval max steps, agent, domain): tiny sets in D4RL's Minari namespace
CASES = [
    ("D4RL/antmaze/tiny-v1", "AntMaze_UMaze-v4", {"continuing_task": True, "reset_target": False}, 40, "iql", "antmaze"),
    ("D4RL/pointmaze/tiny-v2", "PointMaze_UMaze-v3", {"continuing_task": True, "reward_type": "dense"}, 60, "td3_bc", "maze"),
    ("D4RL/pen/tiny-v2", "AdroitHandPen-v1", {}, 30, "td3_bc", "adroit"),
    ("D4RL/kitchen/tiny-v2", "FrankaKitchen-v1", {"tasks_to_complete": ["microwave", "kettle"]}, 30, "iql", "kitchen"),
]


def record(dataset_id: str, env_id: str, kwargs: dict, eval_steps: int, episodes: int = 3, steps: int = 40):
    """Record `episodes` random-action episodes of ≤`steps` steps with minari's DataCollector; returns what
    was stepped, flattened by Gymnasium's own `spaces.flatten`: (observations [T+1, O], actions, rewards) per
    episode."""
    from minari import DataCollector

    require_robotics("the test")
    raw = gym.make(env_id, max_episode_steps=steps, **kwargs)
    remove_maze_xml(raw)
    env = DataCollector(raw, record_infos=False)
    space = env.observation_space
    rng = np.random.default_rng(0)
    recorded = []
    for e in range(episodes):
        obs, _ = env.reset(seed=e)
        obs_list, acts, rews = [gym.spaces.flatten(space, obs)], [], []
        while True:
            a = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
            obs, r, term, trunc, _ = env.step(a)
            obs_list.append(gym.spaces.flatten(space, obs))
            acts.append(a)
            rews.append(r)
            if term or trunc:
                break
        recorded.append((np.array(obs_list), np.array(acts), np.array(rews)))
    eval_env = gym.make(env_id, max_episode_steps=eval_steps, **kwargs)
    remove_maze_xml(eval_env)
    env.create_dataset(dataset_id, eval_env=eval_env, algorithm_name="uniform random", author="offrl tests",
                       author_email="-", code_permalink="-", description="tiny test set",
                       ref_min_score=0.0, ref_max_score=10.0)
    env.close()
    return recorded


@pytest.mark.parametrize("dataset_id,env_id,kwargs,eval_steps,agent,domain", CASES, ids=[c[0].split("/")[1] for c in CASES])
def test_a_recorded_minari_dataset_loads_trains_and_evaluates(minari_root, tmp_path, dataset_id, env_id, kwargs,
                                                              eval_steps, agent, domain):
    recorded = record(dataset_id, env_id, kwargs, eval_steps)
    ds = load_dataset(dataset_id)
    # transitions equal to the recorded ones, observations flattened in Gymnasium's `spaces.flatten` order
    obs = np.concatenate([o[:-1] for o, _, _ in recorded])
    next_obs = np.concatenate([o[1:] for o, _, _ in recorded])
    np.testing.assert_allclose(ds.observations, obs.astype(ds.observations.dtype), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ds.next_observations, next_obs.astype(ds.observations.dtype), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ds.actions, np.concatenate([a for _, a, _ in recorded]), rtol=1e-6)
    np.testing.assert_allclose(ds.rewards, np.concatenate([r for _, _, r in recorded]), rtol=1e-6)
    # the env is the one the dataset records for evaluation, settings included, under its own id
    assert ds.env_id == f"{dataset_id.replace('/', '__')}/{env_id}"
    assert find_task(dataset_id).domain == domain
    assert (ds.ref_min_score, ds.ref_max_score, ds.ref_source) == (0.0, 10.0, "dataset metadata")
    out = tmp_path / "run"
    p = run_cli("train", "--agent", agent, "--dataset", dataset_id, "--seeds", 2, "--steps", 200, "--out", out,
                "--eval-every", 100, "--eval-episodes", 2, "--log-every", 100,
                "--set", "hidden=[32,32]", "--no-progress")
    assert p.returncode == 0, p.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["domain"] == domain and config["env"] == ds.env_id
    if domain == "antmaze":                     # the per-domain settings came with the domain
        assert config["agent"]["reward_transform"] == "antmaze" and config["agent"]["expectile"] == 0.9
    final = json.loads((out / "final.json").read_text())
    returns, normalized = np.array(final["final"]["return"]), np.array(final["final"]["normalized"])
    assert returns.shape == (2,) and np.isfinite(normalized).all()
    np.testing.assert_allclose(normalized, 100 * returns / 10.0, rtol=1e-5)     # 100·(R − 0) / (10 − 0)


def test_the_dataset_env_id_is_remade_in_a_fresh_process_from_the_metadata(minari_root):
    record("D4RL/pointmaze/tiny-v2", "PointMaze_UMaze-v3", {"continuing_task": False}, 25, episodes=1, steps=10)
    import subprocess

    code = ("from offrl.evaluate import make_env; e = make_env('D4RL__pointmaze__tiny-v2/PointMaze_UMaze-v3'); "
            "print(e.spec.max_episode_steps, e.spec.kwargs['continuing_task'], e.observation_space.shape)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["25", "False", "(8,)"]
    p = run_cli("datasets", "list")
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if x.startswith("D4RL/pointmaze/tiny-v2"))
    assert line.split()[1:3] == ["local", "maze"] and line.endswith("0, 10")


@pytest.mark.parametrize("env_id", ["PointMaze_UMaze-v3", "AntMaze_UMaze-v4"])
def test_maze_envs_leave_no_xml_in_the_temp_directory(env_id, tmp_path, monkeypatch):
    """Gymnasium-Robotics writes `<tmp>/ant_maze<time>.xml` for every maze env it builds and never removes
    it; offrl's envs delete it once MuJoCo has compiled it, and the env still works."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    raw = gym.make(env_id)                   # the upstream behaviour this guards against
    assert [p.name.startswith("ant_maze") for p in tmp_path.glob("*.xml")] == [True]
    raw.close()
    (xml,) = tmp_path.glob("*.xml")
    xml.unlink()
    env = make_env(env_id)
    assert list(tmp_path.glob("*.xml")) == []
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.action_space.sample())
    env.close()


def test_flattening_is_gymnasiums_at_every_level():
    """Nested Dicts (FrankaKitchen's goals per task) flatten like `gym.spaces.flatten`, per step and per episode."""
    space = gym.spaces.Dict({"observation": gym.spaces.Box(-1, 1, (3,)),
                             "desired_goal": gym.spaces.Dict({"kettle": gym.spaces.Box(-1, 1, (2,)),
                                                              "bottom burner": gym.spaces.Box(-1, 1, (1,))})})
    space.seed(0)
    samples = [space.sample() for _ in range(4)]
    for s in samples:
        np.testing.assert_array_equal(flatten_observations(s), gym.spaces.flatten(space, s))
    stacked = {"observation": np.stack([s["observation"] for s in samples]),
               "desired_goal": {k: np.stack([s["desired_goal"][k] for s in samples]) for k in ("kettle", "bottom burner")}}
    np.testing.assert_array_equal(flatten_observations(stacked, leading=1),
                                  np.stack([gym.spaces.flatten(space, s) for s in samples]))


def test_missing_pieces_give_clear_errors(minari_root, tmp_path, monkeypatch):
    record("D4RL/pointmaze/tiny-v2", "PointMaze_UMaze-v3", {}, 25, episodes=1, steps=10)
    # another version of the recorded env
    with pytest.raises(OffrlError, match="another version of that env"):
        load_dataset("D4RL/pointmaze/tiny-v2", env_id="PointMaze_UMaze-v2")
    # a D4RL name offrl has no reference for, and a known one whose file is not in the cache folder
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    p = run_cli("train", "--agent", "bc", "--dataset", "hopper-mediocre-v2")
    assert p.returncode == 2 and "not a D4RL dataset name offrl knows" in p.stderr
    p = run_cli("train", "--agent", "bc", "--dataset", "antmaze-umaze-v2")
    assert p.returncode == 2 and "Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse_fixed.hdf5" in p.stderr
    assert str(tmp_path / "d4rl") in p.stderr and "--download" in p.stderr
    # gymnasium-robotics missing: the env of a maze dataset cannot be made, and the error says how to install it
    import subprocess

    code = ("import sys; sys.modules['gymnasium_robotics'] = None\n"
            "from offrl.evaluate import make_env\n"
            "try:\n    make_env('D4RL__pointmaze__tiny-v2/PointMaze_UMaze-v3')\n"
            "except Exception as e:\n    print(type(e).__name__, e)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "OffrlError" in p.stdout and "pip install 'offrl[robotics]'" in p.stdout, p.stdout + p.stderr

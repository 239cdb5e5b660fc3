"""Datasets: exact transitions from Minari and D4RL layouts, reference scores, and every bad input."""
from __future__ import annotations

import h5py
import minari
import numpy as np
import pytest

from offrl.data import Dataset, DatasetError, Episode, load_dataset, reward_transform, write_minari
from offrl.envs import d4rl_reference_scores, find_task

O = np.arange  # shorthand for readable observation rows


def _ep(obs_rows, actions, rewards, term_last, trunc_last):
    T = len(actions)
    end = np.zeros(T, bool)
    end[-1] = True
    return Episode(np.array(obs_rows, np.float64), np.array(actions, np.float32)[:, None],
                   np.array(rewards, np.float64), end & term_last, end & trunc_last)


# Three episodes, observations 4-d: row t of episode e is [10e+t]*4.
EPISODES = [
    _ep([[0] * 4, [1] * 4, [2] * 4], [0.1, 0.2], [1.0, 2.0], True, False),            # terminates
    _ep([[10] * 4, [11] * 4, [12] * 4, [13] * 4], [0.3, 0.4, 0.5], [3.0, 4.0, 5.0], False, True),  # truncated
    _ep([[20] * 4, [21] * 4], [0.6], [6.0], True, False),                              # terminates
]
# (obs, action, reward, next_obs, terminal, timeout, episode) by hand:
EXPECTED = [
    (0, 0.1, 1.0, 1, True and False, False, 0),
    (1, 0.2, 2.0, 2, True, False, 0),
    (10, 0.3, 3.0, 11, False, False, 1),
    (11, 0.4, 4.0, 12, False, False, 1),
    (12, 0.5, 5.0, 13, False, True, 1),
    (20, 0.6, 6.0, 21, True, False, 2),
]


def _check_expected(ds: Dataset) -> None:
    assert len(ds) == len(EXPECTED)
    for i, (o, a, r, o2, term, tout, ep) in enumerate(EXPECTED):
        assert ds.observations[i].tolist() == [o] * 4, i
        assert ds.actions[i, 0] == pytest.approx(a), i
        assert ds.rewards[i] == r, i
        assert ds.next_observations[i].tolist() == [o2] * 4, i
        assert bool(ds.terminals[i]) == term, i
        assert bool(ds.timeouts[i]) == tout, i
        assert ds.episode[i] == ep, i


def test_minari_roundtrip_yields_hand_listed_transitions(minari_root):
    write_minari("test/pendulum/hand-v0", EPISODES, observation_space=_box(4), action_space=_box(1),
                 ref_min_score=0.0, ref_max_score=10.0)
    plain = minari.load_dataset("test/pendulum/hand-v0")           # plain Minari can read it
    assert plain.total_episodes == 3 and plain.total_steps == 6
    ds = load_dataset("test/pendulum/hand-v0")
    _check_expected(ds)
    assert ds.episode_returns().tolist() == [3.0, 12.0, 6.0]
    assert (ds.ref_min_score, ds.ref_max_score, ds.ref_source) == (0.0, 10.0, "dataset metadata")
    assert ds.normalized_score(5.0) == pytest.approx(50.0)
    # the same dataset loads from its folder path too
    _check_expected(load_dataset(str(minari_root / "test/pendulum/hand-v0")))


def _box(n):
    import gymnasium as gym
    return gym.spaces.Box(-np.inf, np.inf, (n,), np.float64) if n == 4 else gym.spaces.Box(-1, 1, (n,), np.float32)


def _write_d4rl(path, next_obs: bool, **override):
    rows = {  # flat D4RL layout of EPISODES: one row per step
        "observations": np.array([[0] * 4, [1] * 4, [10] * 4, [11] * 4, [12] * 4, [20] * 4], np.float32),
        "actions": np.array([[0.1], [0.2], [0.3], [0.4], [0.5], [0.6]], np.float32),
        "rewards": np.array([1, 2, 3, 4, 5, 6], np.float32),
        "terminals": np.array([0, 1, 0, 0, 0, 1], bool),
        "timeouts": np.array([0, 0, 0, 0, 1, 0], bool),
    }
    if next_obs:
        rows["next_observations"] = np.array([[1] * 4, [2] * 4, [11] * 4, [12] * 4, [13] * 4, [21] * 4], np.float32)
    rows.update(override)
    with h5py.File(path, "w") as f:
        for k, v in rows.items():
            if v is not None:
                f[k] = v
        f["infos/qpos"] = np.zeros((len(rows["actions"]), 2))
    return path


@pytest.mark.parametrize("name", ["hopper-medium-v2.hdf5", "hopper_medium_replay-v2.hdf5"])   # D4RL's own file names
def test_d4rl_with_next_observations_yields_hand_listed_transitions(tmp_path, name):
    ds = load_dataset(str(_write_d4rl(tmp_path / name, next_obs=True)))
    _check_expected(ds)
    assert (ds.ref_min_score, ds.ref_max_score) == (-20.272305, 3234.3)
    assert ds.env_id == "Hopper-v5"


def test_d4rl_without_next_observations_drops_timeout_steps(tmp_path):
    ds = load_dataset(str(_write_d4rl(tmp_path / "walker2d-medium-replay-v2.hdf5", next_obs=False)))
    # Without next_observations, the timed-out step (row 4) has no successor and is dropped, and the
    # step before it becomes the episode's truncated end; terminal steps are kept.
    got = [(int(ds.observations[i, 0]), int(ds.next_observations[i, 0]), bool(ds.terminals[i]), bool(ds.timeouts[i]))
           for i in range(len(ds))]
    assert got == [(0, 1, False, False), (1, 1, True, False), (10, 11, False, False), (11, 12, False, True),
                   (20, 20, True, False)]
    assert d4rl_reference_scores("walker2d-medium-replay-v2") == (1.629008, 4592.3)


@pytest.mark.parametrize("field,value,message", [
    ("rewards", np.array([1, 2, 3, np.nan, 5, 6], np.float32), "non-finite"),
    ("actions", np.zeros((5, 1), np.float32), "has 6 rows but 'actions' has 5"),
    ("observations", np.array([["a"] * 4] * 6, dtype="S1"), "non-numeric dtype"),
    ("terminals", None, "missing field"),
])
def test_d4rl_bad_fields_raise_clear_errors(tmp_path, field, value, message):
    path = _write_d4rl(tmp_path / "hopper-bad-v2.hdf5", next_obs=True, **{field: value})
    with pytest.raises(DatasetError, match=message) as e:
        load_dataset(str(path))
    assert "hopper-bad-v2.hdf5" in str(e.value)


def test_empty_and_truncated_files_raise_clear_errors(tmp_path):
    empty = tmp_path / "empty.hdf5"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(str(empty))
    good = _write_d4rl(tmp_path / "hopper-cut-v2.hdf5", next_obs=True)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated|corrupted"):
        load_dataset(str(good))
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("nobody/nothing/none-v0")


def test_misaligned_and_nonfinite_episodes_raise(minari_root):
    bad_len = Episode(np.zeros((3, 4)), np.zeros((3, 1)), np.zeros(3), np.zeros(3, bool), np.zeros(3, bool))
    with pytest.raises(DatasetError, match="T\\+1 observations"):
        Dataset.from_episodes([bad_len], where="x")
    mid_end = Episode(np.zeros((4, 4)), np.zeros((3, 1)), np.zeros(3), np.array([0, 1, 0], bool), np.zeros(3, bool))
    with pytest.raises(DatasetError, match="before its last step"):
        Dataset.from_episodes([mid_end], where="x")
    nan_obs = Episode(np.full((2, 4), np.nan), np.zeros((1, 1)), np.zeros(1), np.ones(1, bool), np.zeros(1, bool))
    with pytest.raises(DatasetError, match="non-finite"):
        Dataset.from_episodes([nan_obs], where="x")
    with pytest.raises(DatasetError, match="no episodes"):
        Dataset.from_episodes([], where="x")
    mixed = [EPISODES[0], Episode(np.zeros((2, 5)), np.zeros((1, 1)), np.zeros(1), np.ones(1, bool), np.zeros(1, bool))]
    with pytest.raises(DatasetError, match="disagree on shapes"):
        Dataset.from_episodes(mixed, where="x")
    # writing a bad dataset fails before anything is written
    with pytest.raises(DatasetError):
        write_minari("test/bad/x-v0", [bad_len], observation_space=_box(4), action_space=_box(1))
    assert not (minari_root / "test/bad/x-v0").exists()


def test_dataset_env_mismatch_and_action_rescaling(pendulum_dataset):
    import gymnasium as gym
    hopper = gym.make("Hopper-v5")
    with pytest.raises(DatasetError, match="observation shape"):
        pendulum_dataset.fit_to_env(hopper.observation_space, hopper.action_space)
    pend = gym.make("InvertedPendulum-v5")               # actions in [-3, 3]
    fitted = pendulum_dataset.fit_to_env(pend.observation_space, pend.action_space)
    np.testing.assert_allclose(fitted.actions, pendulum_dataset.actions / 3.0, atol=1e-6)
    assert fitted.fit_to_env(pend.observation_space, pend.action_space) is fitted   # idempotent
    narrow = gym.spaces.Box(-0.5, 0.5, (1,), np.float32)
    with pytest.raises(DatasetError, match="outside"):
        pendulum_dataset.fit_to_env(pend.observation_space, narrow)


def test_reward_transforms_follow_the_papers():
    assert reward_transform("none", None) == (1.0, 0.0)
    assert reward_transform("antmaze", None) == (1.0, -1.0)
    assert reward_transform("cql_antmaze", None) == (10.0, -5.0)
    scale, shift = reward_transform("iql_locomotion", (-20.0, 380.0))
    assert scale == pytest.approx(1000.0 / 400.0) and shift == 0.0
    with pytest.raises(DatasetError, match="same return"):
        reward_transform("iql_locomotion", (5.0, 5.0))
    with pytest.raises(DatasetError, match="unknown reward transform"):
        reward_transform("bogus", None)


def test_task_catalogue():
    assert find_task("hopper-medium-v2").env_id == "Hopper-v5"
    assert find_task("offrl/halfcheetah/medium-replay-v0").env_id == "HalfCheetah-v5"
    assert find_task("mujoco/walker2d/expert-v0").domain == "locomotion"
    assert find_task("D4RL/antmaze/umaze-v1").domain == "antmaze"
    assert find_task("InvertedPendulum-v5").domain == "classic"
    assert find_task("nothing-v0") is None
    assert d4rl_reference_scores("halfcheetah-medium-expert-v2") == (-280.178953, 12135.0)


def test_minari_mujoco_ids_without_references_fall_back_to_offrl_v5_table(minari_root, pendulum_dataset):
    eps = pendulum_dataset.to_episodes()[:3]
    write_minari("mujoco/invertedpendulum/medium-v0", eps, "InvertedPendulum-v5")     # no reference scores
    ds = load_dataset("mujoco/invertedpendulum/medium-v0")
    assert (ds.ref_min_score, ds.ref_max_score) == (4.20, 1000.0)
    assert ds.ref_source.startswith("offrl v5 reference table")
    write_minari("mujoco/hopper/medium-v0", [_ep([[0] * 11, [1] * 11], [0.1], [1.0], True, False)],
                 observation_space=_box_n(11), action_space=_box(1))
    assert load_dataset("mujoco/hopper/medium-v0").ref_source == "none"   # no measured hopper reference yet


def _box_n(n):
    import gymnasium as gym
    return gym.spaces.Box(-np.inf, np.inf, (n,), np.float64)


def test_to_episodes_round_trips(pendulum_dataset):
    again = Dataset.from_episodes(pendulum_dataset.to_episodes(), where="x")
    assert again.content_hash() == pendulum_dataset.content_hash()


def test_make_env_silences_a_deprecated_xml_attribute_but_not_instability(capfd):
    """MuJoCo prints C-level warnings straight to stdout; `make_env` and the dataset writers route them
    into Python warnings, hide the `settotalmass` deprecation of Gymnasium's HalfCheetah XML and keep
    the rest."""
    import ctypes
    import warnings

    import mujoco
    from offrl.data.minari_io import _env_spaces
    from offrl.evaluate import make_env
    from offrl.utils import MujocoWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_env("HalfCheetah-v5").close()
        _env_spaces("HalfCheetah-v5", None)             # the dataset writers' probe (`datasets make`)
    ctypes.CDLL(None).fflush(None)                      # C stdio is buffered: flush before reading fd 1/2
    out, err = capfd.readouterr()
    assert "settotalmass" not in out + err + " ".join(str(w.message) for w in caught)
    env = make_env("InvertedPendulum-v5")
    env.reset(seed=0)
    sim = env.unwrapped
    sim.data.qvel[:] = np.inf
    with pytest.warns(MujocoWarning, match="simulation is unstable"):
        mujoco.mj_step(sim.model, sim.data)
    env.close()
    # Under -W error the warning cannot become an exception (one crossing MuJoCo's C frames aborts
    # the process): it is printed instead.
    import subprocess
    import sys
    code = ("import numpy as np, mujoco; from offrl.evaluate import make_env; e = make_env('InvertedPendulum-v5'); "
            "e.reset(seed=0); s = e.unwrapped; s.data.qvel[:] = np.inf; mujoco.mj_step(s.model, s.data)")
    p = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "simulation is unstable" in p.stderr, p.stderr

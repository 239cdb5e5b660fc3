"""Per-dataset hyper-parameters: the dataset's 'task-level' key, the order of the default layers, and the
run that picks them up from its dataset name."""
from __future__ import annotations

import numpy as np
import pytest

from offrl.agent import get_agent, resolve_config, resolve_loop
from offrl.data.dataset import Dataset
from offrl.envs import dataset_level
from offrl.trainer import RunConfig, assemble


@pytest.mark.parametrize("name,level", [
    ("hopper-medium-v2", "hopper-medium"),
    ("hopper_medium_replay-v2", "hopper-medium-replay"),
    ("/data/walker2d_medium_expert-v2.hdf5", "walker2d-medium-expert"),
    ("offrl/halfcheetah/medium-replay-v0", "halfcheetah-medium-replay"),
    ("mujoco/hopper/expert-v0", "hopper-expert"),
    ("D4RL/antmaze/umaze-diverse-v1", "antmaze-umaze-diverse"),
    ("Walker2d-v5", "walker2d"),
    ("no-such-task-v0", None),
])
def test_dataset_level_names_task_and_level(name, level):
    assert dataset_level(name) == level


def test_sac_n_and_edac_take_corl_ensemble_sizes_per_dataset():
    sac_n, edac = get_agent("sac_n"), get_agent("edac")
    n = lambda cls, level: resolve_config(cls, "locomotion", False, None, level).num_critics
    assert [n(sac_n, f"hopper-{lv}") for lv in ("medium", "medium-replay", "medium-expert")] == [500, 200, 200]
    assert [n(sac_n, f"walker2d-{lv}") for lv in ("medium", "medium-replay", "medium-expert")] == [20, 20, 20]
    assert n(sac_n, "halfcheetah-medium") == 10 and n(sac_n, "hopper-random") == 10 and n(sac_n, None) == 10
    cfg = lambda level: resolve_config(edac, "locomotion", False, None, level)
    assert (cfg("hopper-medium-replay").num_critics, cfg("hopper-medium-replay").eta) == (50, 1.0)
    assert (cfg("walker2d-medium-expert").num_critics, cfg("walker2d-medium-expert").eta) == (10, 5.0)
    assert (cfg("halfcheetah-medium-expert").eta, cfg("halfcheetah-medium").eta) == (5.0, 1.0)


def test_layers_apply_domain_then_dataset_then_o2o_then_the_run():
    rebrac = get_agent("rebrac")
    cfg = resolve_config(rebrac, "locomotion", False, None, "hopper-medium-replay")
    assert (cfg.actor_bc_coef, cfg.critic_bc_coef, cfg.exploration_noise) == (0.05, 0.5, 0.1)
    o2o = resolve_config(rebrac, "locomotion", True, None, "hopper-medium-replay")
    assert (o2o.actor_bc_coef, o2o.exploration_noise) == (0.05, 0.03)
    assert resolve_config(rebrac, "locomotion", True, {"actor_bc_coef": "0.2"}, "hopper-medium-replay").actor_bc_coef == 0.2
    assert resolve_config(rebrac, "locomotion", False).actor_bc_coef == 0.01
    assert resolve_loop(rebrac, "locomotion", True, None, "walker2d-medium").buffer_mixing == "fixed"


def test_a_run_takes_its_dataset_presets(tmp_path):
    """assemble() keys the presets on the run's dataset name: a hopper medium-replay set gives ReBRAC that
    level's β's, and config.json would record them."""
    rng = np.random.default_rng(0)
    n = 200
    timeouts = np.zeros(n, bool)
    timeouts[99::100] = True
    data = Dataset(rng.normal(size=(n, 11)).astype(np.float32), rng.uniform(-1, 1, (n, 3)).astype(np.float32),
                   rng.normal(size=n).astype(np.float32), rng.normal(size=(n, 11)).astype(np.float32),
                   np.zeros(n, bool), timeouts, np.arange(n) // 100, name="hopper-medium-replay-v2")
    run = RunConfig(agent="rebrac", dataset="hopper-medium-replay-v2", env="Hopper-v5", seeds=1, steps=1,
                    eval_episodes=0)
    a = assemble(run, get_agent("rebrac"), dataset=data)
    assert (a.cfg.actor_bc_coef, a.cfg.critic_bc_coef) == (0.05, 0.5)

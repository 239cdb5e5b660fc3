"""The tabular hybrid actor-critic: the combination-lock table (reference T10), the softmax-after-k-steps
identity of the exponential-weights actor (T9), logarithmic switching, and optimism on stochastic MDPs."""
import math

import numpy as np
import pytest

from offrl import OffrlError
from offrl.tabular.hybrid_ac import (HybridACConfig, TabularHybridAC, combination_lock, lock_data,
                                     softmax_after)
from offrl.tabular.mdp import random_tree_mdp

# reference §2.3 T10: (episode of the first reward, episode after which the greedy policy is optimal)
T10 = {(None, "horizon"): {3: (5, 4), 4: (6, 5), 6: (8, 7)},
       (None, 1): {3: (6, 5), 4: (8, 7), 6: (12, 11)},
       ("A", "horizon"): {3: (4, 3), 4: (5, 4), 6: (7, 6)},
       ("A", 1): {3: (5, 4), 4: (7, 6), 6: (11, 10)},
       ("B", "horizon"): {3: (1, 1), 4: (1, 1), 6: (1, 1)},
       ("B", 1): {3: (1, 1), 4: (1, 1), 6: (1, 1)}}


def lock_run(H, data, episodes, **cfg):
    return TabularHybridAC(combination_lock(H), HybridACConfig(H, **cfg), lock_data(H, data) if data else []).run(episodes)


@pytest.mark.parametrize("data,unvisited", list(T10))
@pytest.mark.parametrize("H", [3, 4, 6])
def test_combination_lock_table(H, data, unvisited):
    run = lock_run(H, data, 30, unvisited=unvisited)
    assert (run.first_episode_reaching(1), run.solved_after) == T10[data, unvisited][H]


@pytest.mark.parametrize("data", ["A", "B"])
@pytest.mark.parametrize("H", [3, 4, 6])
def test_offline_initialised_critic_without_optimism_never_finds_the_reward(H, data):
    run = lock_run(H, data, 200, optimistic=False)
    assert run.first_episode_reaching(1) is None and run.solved_after is None


def test_offline_coverage_plus_optimism_finds_the_reward_in_the_first_episode_whatever_the_horizon():
    for H in (2, 5, 9):
        assert lock_run(H, "B", 1).returns == [1.0]


@pytest.mark.parametrize("T", [8, 64, 512])
def test_switches_grow_logarithmically_with_episodes(T):
    # with data B the greedy path is fixed from episode 1; its pairs' counts double at episodes 1, 2, 4, ...
    run = lock_run(4, "B", T)
    assert run.switches[-1] == 1 + int(math.log2(T))
    assert lock_run(4, "B", T, switching="every").switches[-1] == T       # the ablation: no rare switching


def test_switches_are_logarithmic_online_too():
    run = lock_run(6, None, 1024)
    per_doubling = [run.switches[2 ** k - 1] for k in range(5, 11)]
    steps = np.diff(per_doubling)
    assert run.solved_after == 7 and steps.max() <= 2 and steps.min() >= 1      # O(1) switches per doubling


def test_exponential_weights_actor_is_softmax_of_k_steps_on_the_critic_in_force():
    # T9: from the last reset (a switch), k actor steps on a fixed critic f give softmax(η·k·f)
    H, eta = 4, 0.7
    agent = TabularHybridAC(combination_lock(H), HybridACConfig(H, eta=eta), lock_data(H, "A"))
    rng, k, last = np.random.default_rng(3), 1, agent.switches
    for _ in range(40):
        np.testing.assert_allclose(agent.policy(), softmax_after(agent.critic, eta, k), atol=1e-12)
        agent.episode(rng)
        k = 1 if agent.switches != last else k + 1
        last = agent.switches
    assert 3 <= agent.switches < 40                    # both branches were exercised


def test_without_reset_the_actor_keeps_its_weights_across_switches():
    H, eta = 4, 0.7
    agent = TabularHybridAC(combination_lock(H), HybridACConfig(H, eta=eta, reset_actor=False), lock_data(H, "A"))
    rng, log_pi = np.random.default_rng(0), agent.log_pi.copy()
    while agent.switches == 0:
        log_pi = agent.log_pi.copy()
        agent.episode(rng)
    z = log_pi + eta * np.where(agent.valid, agent.critic, 0.0)
    np.testing.assert_allclose(agent.log_pi, z - np.logaddexp.reduce(z, axis=2, keepdims=True), atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_count_bonus_solves_stochastic_tree_mdps(seed):
    mdp = random_tree_mdp(seed, depth=3)
    run = TabularHybridAC(mdp, HybridACConfig(3, bonus=3.0)).run(400, seed=seed)
    assert run.solved_after is not None and all(run.actor_optimal[-50:])


def test_bad_configs_and_data_are_refused_with_the_fix():
    with pytest.raises(OffrlError, match="switching must be"):
        HybridACConfig(3, switching="sometimes")
    with pytest.raises(OffrlError, match="eta"):
        HybridACConfig(3, eta=0)
    with pytest.raises(OffrlError, match="horizon must be"):
        HybridACConfig(0)
    with pytest.raises(OffrlError, match="outside the MDP"):
        TabularHybridAC(combination_lock(3), HybridACConfig(3), [(3, 0, 1, 0.0, None)])

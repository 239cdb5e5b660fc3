"""Exact stock-augmented DP on cyclic MDPs (offrl.tabular.stock_exact), against answers derived by hand,
and the grid solvers' old defaults failing the same instances (now detected and reported)."""
import random
from fractions import Fraction as Fr

import numpy as np
import pytest

from offrl import OffrlError
from offrl.risk import make_utility
from offrl.tabular import (StockDP, TabularMDP, random_tree_mdp, stock_exact, stock_policy_iteration,
                           stock_value_iteration)

HALF = Fr(1, 2)
IND, LOWER = make_utility("indicator"), make_utility("lower")


def loop_or_gamble(u, gamble, gamma):
    """State 0: action 0 loops forever paying u (G = u/(1 − γ) exactly); action 1 ends the episode paying
    x with probability p for (p, x) in `gamble`."""
    return TabularMDP([[[(1, u, 0)], [(p, x, None) for p, x in gamble]]], gamma=gamma)


def loop_or_gamble_answer(u, gamble, gamma, theta):
    """max P(G ≥ θ). Looping k times then gambling gives G = L(1 − γ^k) + γ^k X with L = u/(1 − γ), i.e.
    X ≥ θ_k = L + (θ − L)/γ^k. If θ ≤ L, looping forever reaches exactly L ≥ θ: 1. Otherwise θ_k grows
    with k, so gambling at once is best: P(X ≥ θ)."""
    big_l = Fr(u) / (1 - gamma)
    return Fr(1) if theta <= big_l else sum((p for p, x in gamble if x >= theta), Fr(0))


def bank_or_double(p, u, v, gamma):
    """State 0: action 0 'bank' ends paying v; action 1 'double' pays u and returns to 0 with probability
    p, else ends paying 0."""
    return TabularMDP([[[(1, v, None)], [(p, u, 0), (1 - p, 0, None)]]], gamma=gamma)


def bank_or_double_answer(p, u, v, gamma, theta):
    """max P(G ≥ θ) for 0 ≤ v < u/(1 − γ). Banking after j successes gives B_j = u(1 − γ^j)/(1 − γ) + γ^j v,
    increasing in j towards L = u/(1 − γ) and never reaching it; failing after j successes gives less.
    A run with exactly j successes has G ≤ B_j, so G ≥ θ needs j* = min{j : B_j ≥ θ} successes, which
    happens with probability p^{j*} (double until then, then bank); no j* exists for θ ≥ L: 0."""
    big_l = Fr(u) / (1 - gamma)
    if theta >= big_l:
        return Fr(0)
    j = 0
    while Fr(u) * (1 - gamma ** j) / (1 - gamma) + gamma ** j * v < theta:
        j += 1
    return Fr(p) ** j


def test_a_loop_that_reaches_the_threshold_in_the_limit():
    mdp = loop_or_gamble(1, [(HALF, 2), (HALF, 0)], HALF)       # looping: G = 2 exactly; gambling: 2 w.p. ½
    sol = stock_exact(mdp, IND, [-2, -1, Fr(-5, 2)])
    assert sol.value(0, -2) == 1 and sol.policy[(0, -2)] == 0    # P(G ≥ 2) = 1, by looping
    assert sol.value(0, Fr(-5, 2)) == 0                          # nothing reaches 5/2
    assert sol.value(0, -1) == 1
    # The old default: value iteration's G_k = 2 − 2^-k never reaches 2; it returns the gamble's 25/51.
    with pytest.warns(UserWarning, match="just below the jump"):
        grid = stock_value_iteration(mdp, IND, np.array([-2.0, -1.0, 0.0]))
    assert grid.converged and grid.value(0, -2.0, IND) == pytest.approx(25 / 51)
    assert (0, -2.0) in grid.near_jump
    with pytest.warns(UserWarning, match="just below the jump"):
        assert stock_policy_iteration(mdp, IND, np.array([-2.0, -1.0, 0.0])).value(0, -2.0, IND) < 0.5


def test_a_finitely_supported_law_of_a_cyclic_mdp():
    # From 0: to state 1 (pays 1 forever: G = 2) or state 2 (pays 0 forever) with probability ½ each.
    mdp = TabularMDP([[[(HALF, 0, 1), (HALF, 0, 2)]], [[(1, 1, 1)]], [[(1, 0, 2)]]], gamma=HALF)
    assert stock_exact(mdp, IND, [-1], states=[0]).value(0, -1) == HALF      # G = 1 or 0: P(G ≥ 1) = ½
    assert stock_exact(mdp, LOWER, [-1], states=[0]).value(0, -1) == -HALF   # E min(G − 1, 0) = ½·(−1)
    with pytest.warns(UserWarning, match="just below the jump"):
        assert stock_value_iteration(mdp, IND, np.array([-1.0])).value(0, -1.0, IND) == 0    # the default tol
    # Iterated far past the default, 51 equal quantile atoms still cannot hold ½: 25/51.
    tight = stock_value_iteration(mdp, IND, np.array([-1.0]), tol=1e-30, max_iters=3000)
    assert tight.value(0, -1.0, IND) == pytest.approx(25 / 51)


def test_bank_or_double_by_hand():
    mdp = bank_or_double(HALF, 1, 1, HALF)                       # B_j = 2 − 2^-j, reached w.p. 2^-j
    for theta, want in ((1, 1), (Fr(3, 2), HALF), (Fr(7, 4), Fr(1, 4)), (Fr(15, 8), Fr(1, 8)), (2, 0), (0, 1)):
        assert stock_exact(mdp, IND, [-theta]).value(0, -theta) == want, theta
    # E min(G − 3/2, 0): bank gives −½; double-then-bank gives ½·(−3/2) + ½·0 = −¾; so −½ (a = γ: contracts).
    sol = stock_exact(mdp, LOWER, [Fr(-3, 2)])
    assert sol.value(0, Fr(-3, 2)) == -HALF and sol.policy[(0, Fr(-3, 2))] == 0


@pytest.mark.parametrize("seed", range(40))
def test_property_cyclic_families_with_closed_forms(seed):
    rng = random.Random(seed)
    gamma = Fr(1, rng.choice([2, 3]))
    # loop or gamble
    u = rng.randint(-2, 3)
    weights = [rng.randint(1, 5) for _ in range(3)]
    gamble = [(Fr(w, sum(weights)), rng.randint(-4, 8)) for w in weights]
    big_l = Fr(u) / (1 - gamma)
    thetas = {big_l, big_l + Fr(1, 3), big_l - 1, *(x for _, x in gamble)}
    mdp = loop_or_gamble(u, gamble, gamma)
    sol = stock_exact(mdp, IND, [-t for t in thetas])
    for t in thetas:
        assert sol.value(0, -t) == loop_or_gamble_answer(u, gamble, gamma, t), (seed, t)
    # bank or double
    p, u = Fr(rng.randint(1, 5), 6), rng.randint(1, 3)
    big_l = Fr(u) / (1 - gamma)
    v = rng.randint(0, int(big_l) - 1)
    mdp = bank_or_double(p, u, v, gamma)
    thetas = {big_l, Fr(v), *(Fr(u) * (1 - gamma ** j) / (1 - gamma) + gamma ** j * v + d
                              for j in range(4) for d in (0, Fr(1, 7)))}
    sol = stock_exact(mdp, IND, [-t for t in thetas])
    for t in thetas:
        assert sol.value(0, -t) == bank_or_double_answer(p, u, v, gamma, t), (seed, t)


@pytest.mark.parametrize("gamma", [1, HALF])
def test_exact_solver_equals_backward_induction_on_trees(gamma):
    for seed in range(15):
        mdp = random_tree_mdp(seed, depth=3, gamma=gamma)
        for name in ("indicator", "lower", "abs", "piecewise"):
            f = make_utility(name, alpha=2, beta=3)
            cs = [-3, -1, 0, Fr(1, 2), 2]
            sol = stock_exact(mdp, f, cs, states=[0])
            for c in cs:
                assert sol.value(0, c) == StockDP(mdp, f).value(c), (seed, name, c)


def random_cyclic_mdp(seed, states=3):
    rng = random.Random(seed)
    trans = []
    for _ in range(states):
        acts = []
        for _ in range(2):
            w = [rng.randint(1, 3) for _ in range(2)]
            acts.append([(Fr(wi, sum(w)), rng.randint(-2, 2), rng.choice([None, *range(states)])) for wi in w])
        trans.append(acts)
    return TabularMDP(trans, gamma=HALF)


@pytest.mark.parametrize("seed", range(8))
def test_exact_value_is_the_limit_of_finite_horizons(seed):
    """E min(c + G, 0) is 1-Lipschitz in G and |G − G_H| ≤ γ^H·max|r|/(1 − γ): the H-step optimum is within
    that of the infinite-horizon one."""
    mdp, horizon = random_cyclic_mdp(seed), 8
    bound = HALF ** horizon * 2 / (1 - HALF)
    for c in (-2, -1, 0):
        exact = stock_exact(mdp, LOWER, [c], states=[0]).value(0, c)
        finite = StockDP(mdp, LOWER, horizon=horizon).value(c)
        assert abs(exact - finite) <= bound, (seed, c)


def test_risk_neutral_exact_values_are_classic_values():
    mdp = random_cyclic_mdp(3, states=4)
    mean = make_utility("mean")
    v = np.zeros(4)
    for _ in range(200):
        v = np.array([max(sum(float(p) * (r + 0.5 * (0 if n is None else v[n])) for p, r, n in outs)
                          for outs in acts) for acts in mdp.transitions])
    sol = stock_exact(mdp, mean, [-1, 0, Fr(3, 2)])
    for s in range(4):
        for c in (-1, 0, Fr(3, 2)):
            assert float(sol.value(s, c)) == pytest.approx(float(c) + v[s], abs=1e-12)


def test_exact_solving_says_when_it_cannot_be_exact():
    coin = TabularMDP([[[(HALF, 0, 0), (HALF, 2, 0)]]], gamma=Fr(2, 3))        # pays 0 or 2 forever
    with pytest.raises(OffrlError, match="do not close into a finite set"):      # c' = 3(c + r)/2: denominators double
        stock_exact(coin, IND, [-3], max_states=500)
    with pytest.raises(OffrlError, match="not affine on each side of 0"):        # no cut-off without piecewise f
        stock_exact(bank_or_double(HALF, 1, 1, HALF), make_utility("square"), [Fr(-1, 3)], max_states=200)
    with pytest.raises(OffrlError, match="γ = 1 on an MDP with a cycle"):
        stock_exact(loop_or_gamble(1, [(1, 0)], 1), IND, [0])
    with pytest.raises(OffrlError, match="exact numbers.*Fraction"):
        stock_exact(loop_or_gamble(1, [(0.5, 2), (0.5, 0)], HALF), IND, [0])
    with pytest.raises(OffrlError, match="not γ-homogeneous"):
        stock_exact(loop_or_gamble(1, [(1, 0)], HALF), make_utility("exp"), [0])
    with pytest.raises(OffrlError, match="not among the solved"):
        stock_exact(loop_or_gamble(1, [(1, 0)], HALF), IND, [-1]).value(0, Fr(-1, 3))

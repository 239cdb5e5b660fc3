"""Exact tests of the stock-augmented distributional DP core (reference §1.10: T1–T5, T7, T8, property test)."""
from fractions import Fraction as Fr

import numpy as np
import pytest

from offrl import OffrlError
from offrl.risk import dist_cvar, empirical_cvar, empirical_var, make_utility, objective, risk_metrics, stock_trajectory
from offrl.tabular import (StockDP, TabularMDP, brute_force, naive_cvar_greedy, optimize, random_tree_mdp,
                           stock_policy_iteration, stock_value_iteration)
from offrl.tabular.dist import Categorical, Quantile, expect, quantile_atoms

HALF = Fr(1, 2)


def m2() -> TabularMDP:
    """s0: one action, R1 ∈ {0, 2}; s1: safe pays 1, risky pays {0, 3}; γ = 1."""
    return TabularMDP([[[(HALF, 0, 1), (HALF, 2, 1)]],
                       [[(1, 1, None)], [(HALF, 0, None), (HALF, 3, None)]]], gamma=1)


def m2_stage2_only() -> TabularMDP:
    return TabularMDP([[[(1, 1, None)], [(HALF, 0, None), (HALF, 3, None)]]], gamma=1)


def t5() -> TabularMDP:
    return TabularMDP([[[(HALF, 0, 1), (HALF, 1, 1)]],
                       [[(1, 2, None)], [(HALF, 0, None), (HALF, 3, None)]]], gamma=HALF)


def test_t1_stock_identity():
    gamma, rewards = HALF, [1, 2, 4]
    stocks = stock_trajectory(-1, rewards, gamma)
    assert stocks == [-1, 0, 4, 16]
    rtg = [sum(gamma ** k * r for k, r in enumerate(rewards[t:])) for t in range(4)]
    assert rtg == [3, 4, 4, 0]
    assert [c + g for c, g in zip(stocks, rtg)] == [2 ** t * (stocks[0] + rtg[0]) for t in range(4)]


def test_t2_cvar_on_m2():
    mdp, lower = m2(), make_utility("lower")
    v_table = {-5: Fr(-5, 2), -3: Fr(-3, 4), -2: HALF * -1, -1: 0, 0: 0}
    j_table = {-5: 0, -3: Fr(3, 2), -2: 1, -1: 1, 0: 0}
    for c0, v in v_table.items():
        dp = StockDP(mdp, lower)
        assert dp.value(c0) == v
        assert -c0 + 2 * dp.value(c0) == j_table[c0]
    dp = StockDP(mdp, lower)
    dp.solve(None, -3)
    assert dp.policy[(1, -3, 1)] == 1 and dp.policy[(1, -1, 1)] == 0      # risky after 0, safe after 2
    assert dp.action_scores[(1, -3, 1)] == [-2, Fr(-3, 2)] and dp.action_scores[(1, -1, 1)] == [0, -HALF]
    sol = optimize(mdp, objective("cvar", tau=HALF))
    assert sol.value == Fr(3, 2) and sol.c0 == -3
    assert sol.dist == ((0, Fr(1, 4)), (3, Fr(3, 4)))
    best, laws = brute_force(mdp, objective("cvar", tau=HALF))
    assert best == Fr(3, 2) and laws == [((0, Fr(1, 4)), (3, Fr(3, 4)))]        # only (risky, safe)
    naive = naive_cvar_greedy(mdp, HALF)                                       # picks safe everywhere
    assert naive == ((1, HALF), (3, HALF)) and dist_cvar(naive, HALF) == 1


def test_t3_probability_of_threshold():
    sol = optimize(m2(), objective("prob", theta=3))
    assert sol.value == Fr(3, 4) and sol.dist == ((0, Fr(1, 4)), (3, Fr(3, 4)))
    assert brute_force(m2(), objective("prob", theta=3))[0] == Fr(3, 4)


def test_t4_homeostatic_target():
    sol = optimize(m2(), objective("target", theta=3))
    assert sol.value == Fr(-3, 4) and sol.dist == ((0, Fr(1, 4)), (3, Fr(3, 4)))
    sq = optimize(m2(), objective("target_sq", theta=3))
    assert sq.value == -2 and sq.dist == ((1, HALF), (3, HALF))                 # Markov (safe, safe)
    assert brute_force(m2(), objective("target_sq", theta=3))[0] == -2


def test_t5_discounting_needs_the_exact_stock_update():
    mdp, ind, c0 = t5(), make_utility("indicator"), Fr(-3, 2)
    dp = StockDP(mdp, ind)
    assert dp.value(c0) == Fr(3, 4)
    assert dp.policy[(1, -3, 1)] == 1 and dp.policy[(1, -1, 1)] == 0
    assert brute_force(mdp, objective("prob", theta=Fr(3, 2)))[0] == Fr(3, 4)
    wrong = StockDP(mdp, ind, next_stock=lambda c, r, g: c + r)               # forgets the 1/γ
    law = wrong.solve(None, c0)
    assert expect(law, lambda g: ind(c0 + g)) == HALF


def test_t7_clipping_is_policy_preserving_for_piecewise_affine_utilities():
    mdp = m2_stage2_only()                          # G ∈ [0, 3]: clip stocks to [−3, 0]
    lower = make_utility("lower")
    dp = StockDP(mdp, lower)
    assert dp.action_scores.get((0, -5, 1)) is None
    dp.solve(None, -5)
    assert dp.action_scores[(0, -5, 1)] == [-4, Fr(-7, 2)]
    for c in range(-12, 6):
        dp.solve(None, c)
        if c <= -3:
            assert dp.policy[(0, c, 1)] == 1                                   # the mean-greedy choice
        if c >= 0:
            assert dp.action_scores[(0, c, 1)] == [0, 0]                       # indifferent
    for name in ("piecewise", "abs", "indicator", "upper"):
        f = make_utility(name, alpha=2, beta=3)
        d = StockDP(mdp, f)
        d.solve(None, -3), d.solve(None, 0)
        for c in range(-12, 6):                     # the choice at the clipped stock is optimal at c
            d.solve(None, c)
            clipped = d.policy[(0, min(max(c, -3), 0), 1)]
            assert d.action_scores[(0, c, 1)][clipped] == max(d.action_scores[(0, c, 1)]), (name, c)
    sq = StockDP(mdp, make_utility("square"))
    sq.solve(None, -3), sq.solve(None, -4)
    assert sq.policy[(0, -3, 1)] == 0 and sq.action_scores[(0, -4, 1)][0] < max(sq.action_scores[(0, -4, 1)])
    # At c = −G_max the indicator's value is P(G = G_max).
    assert StockDP(mdp, make_utility("indicator")).value(-3) == HALF


def test_t8_representations_and_empirical_metrics():
    d = ((0, Fr(1, 4)), (3, Fr(3, 4)))
    assert quantile_atoms(d, 4) == [0, 3, 3, 3]
    assert dist_cvar(Quantile(4).project(d), HALF) == Fr(3, 2) == dist_cvar(d, HALF)
    for tau, want in ((Fr(1, 4), 1), (Fr(3, 10), Fr(7, 6)), (HALF, Fr(3, 2)), (1, Fr(5, 2))):
        assert empirical_cvar([1, 2, 3, 4], tau) == want
    assert empirical_var([1, 2, 3, 4], 0.3) == 2
    m = risk_metrics(np.array([4.0, 1.0, 3.0, 2.0]), levels=(0.3,), thresholds=(2.5,))
    assert m["cvar_0.3"] == pytest.approx(7 / 6) and m["worst"] == 1 and m["p_ge_2.5"] == 0.5
    cat = Categorical.uniform(0, 4, 5).project(((Fr(1, 2), 1),))              # C51: split between 0 and 1
    assert cat == ((0, HALF), (1, HALF))


def test_greedy_dp_refuses_a_gamma_where_it_is_wrong():
    mdp, f = t5(), make_utility("exp", lam=1.0)
    with pytest.raises(OffrlError, match="not γ-homogeneous.*allow_invalid_gamma"):
        StockDP(mdp, f)
    with pytest.raises(OffrlError, match="not γ-homogeneous"):
        stock_value_iteration(mdp, f, [-1.0, 0.0])
    with pytest.warns(UserWarning, match="running anyway"):
        StockDP(mdp, f, allow_invalid_gamma=True).value(0)
    StockDP(m2(), f).value(0)                       # γ = 1: valid
    with pytest.raises(OffrlError, match="cycle"):
        StockDP(TabularMDP([[[(1, 1, 0)]]], gamma=HALF), make_utility("mean"))


@pytest.mark.parametrize("gamma", [1, HALF])
def test_property_stock_dp_equals_brute_force_on_random_trees(gamma):
    naive_lost = 0
    for seed in range(30):
        mdp = random_tree_mdp(seed, depth=3, gamma=gamma)
        returns = sorted({x for law in [optimize(mdp, objective("mean")).dist] for x, _ in law})
        theta = returns[len(returns) // 2]
        for obj in (objective("cvar", tau=Fr(1, 4)), objective("cvar", tau=HALF),
                    objective("prob", theta=theta), objective("target", theta=theta)):
            dp_value = optimize(mdp, obj).value
            assert dp_value == brute_force(mdp, obj)[0], (seed, obj.name)
        tau = HALF
        naive_lost += dist_cvar(naive_cvar_greedy(mdp, tau), tau) < optimize(mdp, objective("cvar", tau=tau)).value
    assert naive_lost >= 1


def test_value_iteration_on_a_stock_grid_matches_exact_dp():
    lower = make_utility("lower")
    sol = stock_value_iteration(m2(), lower, np.arange(-5, 1), n_atoms=4)
    assert sol.converged
    for c0, v in {-5: -2.5, -3: -0.75, -2: -0.5, -1: 0.0, 0: 0.0}.items():
        assert sol.value(0, c0, lower) == pytest.approx(v)
    assert sol.policy[1, 2] == 1 and sol.policy[1, 4] == 0                     # stock −3 risky, −1 safe
    pi = stock_policy_iteration(m2(), lower, np.arange(-5, 1), n_atoms=4)
    assert (pi.policy == sol.policy).all()
    # T5 on a grid that contains the reachable stocks: γ = ½ and the indicator.
    ind = make_utility("indicator")
    g5 = stock_value_iteration(t5(), ind, np.arange(-6, 1) / 2, n_atoms=4)
    assert g5.value(0, -1.5, ind) == pytest.approx(0.75)


def test_risk_neutral_value_iteration_is_classic_value_iteration():
    """With f = x, V(s, c) = c + V*(s) on a cyclic discounted MDP (categorical keeps means exactly)."""
    rng = np.random.default_rng(0)
    S, A, gamma = 4, 2, 0.8
    trans = []
    for s in range(S):
        acts = []
        for a in range(A):
            nxt = rng.choice(S, 2, replace=False)
            acts.append([(0.3, float(rng.integers(0, 3)), int(nxt[0])), (0.7, float(rng.integers(0, 3)), int(nxt[1]))])
        trans.append(acts)
    mdp = TabularMDP(trans, gamma=gamma)
    v = np.zeros(S)
    for _ in range(500):
        v = np.array([max(sum(p * (r + gamma * v[n]) for p, r, n in trans[s][a]) for a in range(A)) for s in range(S)])
    mean = make_utility("mean")
    stocks = np.linspace(-10, 0, 5)
    for solver in (stock_value_iteration, stock_policy_iteration):
        sol = solver(mdp, mean, stocks, representation="categorical", support=np.linspace(0, 10, 41), tol=1e-10)
        assert sol.converged
        for s in range(S):
            for c in stocks:
                assert sol.value(s, c, mean) == pytest.approx(c + v[s], abs=1e-6)

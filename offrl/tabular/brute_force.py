"""The test oracle: every deterministic history-dependent policy, enumerated.

Randomised policies are mixtures of deterministic ones and cannot beat the best of them, for an
expected utility (linearity) and for CVaR (a max over c of expected utilities), so the maximum
over this set is the true optimum.
"""
from __future__ import annotations

import itertools
from typing import Any

from offrl.risk import Objective
from offrl.tabular.dist import Dist, affine, expect, mixture, point
from offrl.tabular.mdp import TabularMDP
from offrl.tabular.stock_dp import _steps


def achievable_distributions(mdp: TabularMDP, horizon: int | None = None) -> set[Dist]:
    """The laws of G of all deterministic history-dependent policies from the start state.

    A history's continuation may be chosen independently for every (reward, next state) outcome,
    so the set at a node is the union over actions of the Cartesian product over outcomes.
    Outcomes with equal (reward, next state) are one history and are merged first."""
    g = mdp.gamma
    memo: dict[tuple[int, int], set[Dist]] = {}

    def rec(s: int, k: int) -> set[Dist]:
        if (s, k) in memo:
            return memo[(s, k)]
        out: set[Dist] = set()
        for outs in mdp.transitions[s]:
            merged: dict[tuple[Any, Any], Any] = {}
            for p, r, nxt in outs:
                key = (r, None if k == 1 else nxt)
                merged[key] = merged.get(key, 0) + p
            branches = []
            for (r, nxt), p in merged.items():
                options = [point(r)] if nxt is None else [affine(d, r, g) for d in rec(nxt, k - 1)]
                branches.append([(p, d) for d in options])
            for combo in itertools.product(*branches):
                out.add(mixture(combo))
        memo[(s, k)] = out
        return out

    return rec(mdp.start, _steps(mdp, horizon))


def objective_value(obj: Objective, d: Dist) -> Any:
    """The objective of a fixed return law: E f(c_0 + G), or max over c of E f(c + G) − c (the
    maximising c is one of the negated support points, where the piecewise-linear function kinks)."""
    if obj.search_c0:
        return max(obj.outer(-x, expect(d, lambda g: obj.utility(g - x))) for x, _ in d)
    return expect(d, lambda g: obj.utility(obj.c0 + g))


def brute_force(mdp: TabularMDP, obj: Objective, horizon: int | None = None) -> tuple[Any, list[Dist]]:
    """(optimal value, every return law that attains it)."""
    laws = achievable_distributions(mdp, horizon)
    values = {d: objective_value(obj, d) for d in laws}
    best = max(values.values())
    return best, sorted(d for d, v in values.items() if v == best)

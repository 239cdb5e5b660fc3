"""Finite-horizon stock-augmented distributional DP (backward induction), exact or projected.

From augmented state (s, c) with k steps left, action a has return-to-go law
    Z(s, c, a) = Σ_{(p, r, s')} p · law(r + γ·G(s', (c + r)/γ, k − 1))      (terminal s': δ_r)
and the greedy choice is argmax_a E f(c + Z(s, c, a)) (ties: lowest action index). Because
c + Z = γ·(C' + G') is a mixture of γ-scaled child quantities, this is optimal whenever f is an
expected utility with f(γx) = a f(x) + b (see offrl.risk); other γ are refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from offrl import OffrlError
from offrl.risk import Objective, Utility, dist_cvar
from offrl.tabular.dist import Dist, Exact, affine, expect, mixture, point
from offrl.tabular.mdp import TabularMDP

Key = tuple[int, Any, int]        # (state, stock, steps left)


def _steps(mdp: TabularMDP, horizon: int | None) -> int:
    """Steps to plan for: the horizon, or the depth of an acyclic MDP (cycles need a horizon)."""
    if horizon is not None:
        if horizon < 1:
            raise OffrlError(f"horizon must be ≥ 1, got {horizon}")
        return horizon
    depth: dict[int, int] = {}
    visiting: set[int] = set()

    def d(s: int) -> int:
        if s in depth:
            return depth[s]
        if s in visiting:
            raise OffrlError("the MDP has a cycle; pass a finite horizon, or use stock_exact (exact, γ = 1/k) or "
                             "stock_value_iteration (a stock grid)")
        visiting.add(s)
        depth[s] = 1 + max((d(n) for outs in mdp.transitions[s] for _, _, n in outs if n is not None), default=0)
        visiting.discard(s)
        return depth[s]

    return d(mdp.start)


@dataclass
class StockDP:
    """Backward induction on (state, stock, steps left), memoised; `solve(s, c)` gives the law of G
    under the greedy policy. `score(c, Z)` is the greedy criterion (default E f(c + Z)); pass another
    functional only to build counter-examples (the naive per-state CVaR baseline)."""
    mdp: TabularMDP
    utility: Utility | None = None
    representation: Any = field(default_factory=Exact)
    horizon: int | None = None
    score: Callable[[Any, Dist], Any] | None = None
    next_stock: Callable[[Any, Any, Any], Any] | None = None   # (c, r, γ) → c'; default (c + r)/γ
    allow_invalid_gamma: bool = False
    policy: dict[Key, int] = field(default_factory=dict, init=False)
    action_scores: dict[Key, list[Any]] = field(default_factory=dict, init=False)
    _memo: dict[Key, Dist] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if (self.utility is None) == (self.score is None):
            raise OffrlError("give exactly one of utility (E f(c + Z)) or score (a custom greedy criterion)")
        if self.utility is not None:
            self.utility.check_gamma(self.mdp.gamma, self.allow_invalid_gamma)
            f = self.utility
            self.score = lambda c, z: expect(z, lambda x: f(c + x))
        self.steps = _steps(self.mdp, self.horizon)
        self._next = self.next_stock or (lambda c, r, gamma: (c + r) / gamma if gamma != 1 else c + r)

    def action_dist(self, s: int, c: Any, k: int, a: int) -> Dist:
        """Z(s, c, a) with k steps left, children following the greedy policy."""
        g = self.mdp.gamma
        parts = []
        for p, r, nxt in self.mdp.transitions[s][a]:
            if nxt is None or k == 1:
                parts.append((p, point(r)))
            else:
                parts.append((p, affine(self.solve(nxt, self._next(c, r, g), k - 1), r, g)))
        return self.representation.project(mixture(parts))

    def solve(self, s: int | None = None, c: Any = 0, k: int | None = None) -> Dist:
        s = self.mdp.start if s is None else s
        k = self.steps if k is None else k
        key = (s, c, k)
        if key not in self._memo:
            best, best_score, scores = None, None, []
            for a in range(self.mdp.num_actions(s)):
                z = self.action_dist(s, c, k, a)
                sc = self.score(c, z)
                scores.append(sc)
                if best is None or sc > best_score:
                    best, best_score = (a, z), sc
            self.policy[key], self._memo[key] = best[0], best[1]
            self.action_scores[key] = scores
        return self._memo[key]

    def value(self, c: Any = 0, s: int | None = None) -> Any:
        """V(s, c) = E f(c + G) under the greedy policy."""
        return self.score(c, self.solve(s, c))


@dataclass
class Solution:
    value: Any              # the objective's value J
    c0: Any                 # the initial stock that attains it
    dist: Dist              # law of G under the optimal stock-augmented policy from c0
    dp: StockDP             # the solved DP (policy, per-action scores)


def reachable_returns(mdp: TabularMDP, horizon: int | None = None) -> set[Any]:
    """Every value G can take under some policy (the candidate set for −c_0 in a CVaR scan)."""
    steps, g = _steps(mdp, horizon), mdp.gamma
    memo: dict[tuple[int, int], set[Any]] = {}

    def rec(s: int, k: int) -> set[Any]:
        if (s, k) not in memo:
            out = set()
            for outs in mdp.transitions[s]:
                for _, r, nxt in outs:
                    out |= {r} if nxt is None or k == 1 else {r + g * x for x in rec(nxt, k - 1)}
            memo[(s, k)] = out
        return memo[(s, k)]

    return rec(mdp.start, steps)


def optimize(mdp: TabularMDP, obj: Objective, representation: Any = None, horizon: int | None = None,
             c0_candidates: Any = None, allow_invalid_gamma: bool = False) -> Solution:
    """Optimal stock-augmented policy for an objective. CVaR-type objectives scan c_0 over the
    negated reachable returns (the optimum is −VaR_τ of the optimal return, which is one of them)."""
    rep = representation or Exact()
    if obj.search_c0:
        cands = sorted(c0_candidates if c0_candidates is not None else {-x for x in reachable_returns(mdp, horizon)})
    else:
        cands = [obj.c0]
    best: Solution | None = None
    for c0 in cands:
        dp = StockDP(mdp, obj.utility, rep, horizon, allow_invalid_gamma=allow_invalid_gamma)
        j = obj.outer(c0, dp.value(c0))
        if best is None or j > best.value:
            best = Solution(j, c0, dp.solve(None, c0), dp)
    assert best is not None
    return best


def naive_cvar_greedy(mdp: TabularMDP, tau: Any, horizon: int | None = None) -> Dist:
    """The time-inconsistent baseline: at every state pick argmax_a CVaR_τ(Z(s, a)) with no stock
    (CVaR is shift-equivariant, so adding a stock would change nothing). Returns the law of G."""
    dp = StockDP(mdp, score=lambda c, z: dist_cvar(z, tau), horizon=horizon, next_stock=lambda c, r, g: 0)
    return dp.solve(None, 0)

"""Infinite-horizon stock-augmented distributional value and policy iteration on a stock grid.

η(s, c) is kept for every state and every grid stock c_1 < … < c_M as K weighted atoms (quantile:
equal weights; categorical: a fixed support). The next stock (c + r)/γ is clipped to [c_1, c_M]
and linearly interpolated between its two grid neighbours (a mixture of their laws). Clipping to
[−G_max, −G_min] of the return-to-go keeps every greedy choice for utilities affine on each side of
0 (reference T7): below −G_max the choice is the mean-greedy one, above −G_min all actions tie.

These solvers approximate. For a utility with a jump at 0 (the indicator of P(G ≥ θ)), iterates of a
return that reaches θ only in the limit (a loop's geometric sum) creep up to θ from below and never
count, so the value there can be off by the whole mass; the result lists such (state, stock) pairs in
`near_jump` and warns. Quantile values of such objectives are multiples of 1/n_atoms (no 1/2 with the
default 51). `offrl.tabular.stock_exact` solves cyclic MDPs exactly (γ = 1/k, rational data).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import warnings

import numpy as np
import torch

from offrl import OffrlError
from offrl.risk import Utility
from offrl.tabular.mdp import TabularMDP


@dataclass
class GridSolution:
    stocks: np.ndarray       # [M] grid stocks
    atoms: np.ndarray        # [S, M, K] return-to-go atoms of η(s, c_m) under `policy`
    probs: np.ndarray        # [S, M, K] their probabilities
    policy: np.ndarray       # [S, M] greedy action (lowest index among ties)
    scores: np.ndarray       # [S, M, A] E f(c + Z(s, c, a)); −inf where a state has fewer actions
    iterations: int          # sweeps (value iteration) or improvement rounds (policy iteration)
    converged: bool
    near_jump: list[tuple[int, float]] = field(default_factory=list)  # (state, stock) whose c + G has mass just
                                                                      # below the utility's jump at 0: value unreliable

    def value(self, s: int, c: float, f: Utility) -> float:
        """E f(c + G(s, c)) at a grid stock (interpolated between grid laws otherwise)."""
        (j0, j1), w = _neighbours(self.stocks, np.array([c]))
        v = [float((self.probs[s, j] * _np_utility(f, c + self.atoms[s, j])).sum()) for j in (j0[0], j1[0])]
        return (1 - w[0]) * v[0] + w[0] * v[1]


def _np_utility(f: Utility, x: np.ndarray) -> np.ndarray:
    return f.tensor(torch.from_numpy(np.asarray(x, np.float64))).numpy()


def _neighbours(stocks: np.ndarray, c: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Grid indices below/above each (clipped) stock and the weight of the upper one."""
    c = np.clip(c, stocks[0], stocks[-1])
    hi = np.clip(np.searchsorted(stocks, c, side="left"), 0, len(stocks) - 1)
    lo = np.clip(hi - 1, 0, len(stocks) - 1)
    exact = stocks[hi] == c
    lo = np.where(exact, hi, lo)
    span = np.where(exact, 1.0, stocks[hi] - stocks[lo])
    w = np.where(exact, 0.0, (c - stocks[lo]) / span)
    return (lo, hi), w


class _Projector:
    def __init__(self, representation: str, n_atoms: int, support: np.ndarray | None):
        self.kind, self.n = representation, n_atoms
        if representation == "quantile":
            self.levels = (2 * np.arange(n_atoms) + 1) / (2 * n_atoms)
        elif representation == "categorical":
            if support is None or len(support) < 2:
                raise OffrlError("categorical value iteration needs a support of ≥ 2 atoms (support=...)")
            self.support = np.asarray(support, np.float64)
            self.n = len(self.support)
        else:
            raise OffrlError(f"unknown representation {representation!r}; use quantile or categorical")

    def __call__(self, x: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "quantile":
            order = np.argsort(x, kind="stable")
            cum = np.cumsum(p[order])
            idx = np.minimum(np.searchsorted(cum, self.levels - 1e-12, side="left"), len(x) - 1)
            return x[order][idx], np.full(self.n, 1.0 / self.n)
        z = self.support
        (lo, hi), w = _neighbours(z, x)
        out = np.zeros(self.n)
        np.add.at(out, lo, p * (1 - w))
        np.add.at(out, hi, p * w)
        return z.copy(), out


def _solve(mdp: TabularMDP, f: Utility, stocks: Any, representation: str, n_atoms: int,
           support: Any, max_iters: int, tol: float, policy_iteration: bool,
           allow_invalid_gamma: bool) -> GridSolution:
    f.check_gamma(mdp.gamma, allow_invalid_gamma)
    stocks = np.sort(np.asarray(stocks, np.float64))
    support = None if support is None else np.asarray(support, np.float64)
    if len(stocks) < 1:
        raise OffrlError("the stock grid is empty; give at least one stock")
    g = float(mdp.gamma)
    S, M = mdp.num_states, len(stocks)
    A = max(mdp.num_actions(s) for s in range(S))
    project = _Projector(representation, n_atoms, support)
    K = project.n
    atoms = np.zeros((S, M, K)) if representation == "quantile" else np.broadcast_to(project.support, (S, M, K)).copy()
    probs = np.full((S, M, K), 1.0 / K)
    if representation == "categorical":        # start from δ_0 projected onto the support
        a0, p0 = project(np.zeros(1), np.ones(1))
        probs[:] = p0
    # Per (state, action): outcome probabilities, rewards, next states and next-stock neighbours.
    table = []
    for s in range(S):
        row = []
        for a in range(mdp.num_actions(s)):
            outs = [(float(p), float(r), nxt) for p, r, nxt in mdp.transitions[s][a]]
            nb = [_neighbours(stocks, (stocks + r) / g) for _, r, _ in outs]
            row.append((outs, nb))
        table.append(row)

    def backup(policy: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        new_atoms, new_probs = np.empty_like(atoms), np.empty_like(probs)
        scores = np.full((S, M, A), -np.inf)
        pol = np.zeros((S, M), np.int64)
        for s in range(S):
            for m in range(M):
                cands = []
                actions = range(mdp.num_actions(s)) if policy is None else [int(policy[s, m])]
                for a in actions:
                    outs, nb = table[s][a]
                    xs, ps = [], []
                    for (p, r, nxt), ((lo, hi), w) in zip(outs, nb):
                        if nxt is None:
                            xs.append(np.array([r]))
                            ps.append(np.array([p]))
                            continue
                        for j, wj in ((lo[m], 1 - w[m]), (hi[m], w[m])):
                            if wj > 0:
                                xs.append(r + g * atoms[nxt, j])
                                ps.append(p * wj * probs[nxt, j])
                    x, pr = project(np.concatenate(xs), np.concatenate(ps))
                    scores[s, m, a] = float((pr * _np_utility(f, stocks[m] + x)).sum())
                    cands.append((a, x, pr))
                best = max(scores[s, m, a] for a, _, _ in cands)
                a, x, pr = next(c for c in cands if scores[s, m, c[0]] >= best - 1e-9 * (1 + abs(best)))
                pol[s, m], new_atoms[s, m], new_probs[s, m] = a, x, pr
        return new_atoms, new_probs, pol, scores

    def delta(a1: np.ndarray, p1: np.ndarray) -> float:
        return float(max(np.abs(a1 - atoms).max(), np.abs(p1 - probs).max()))

    policy = np.zeros((S, M), np.int64)
    converged = False
    it = 0
    if not policy_iteration:
        for it in range(1, max_iters + 1):
            new_atoms, new_probs, new_policy, scores = backup(None)
            change = delta(new_atoms, new_probs)
            atoms, probs = new_atoms, new_probs
            stable = it > 1 and (new_policy == policy).all()
            policy = new_policy
            if stable and change <= tol:
                converged = True
                break
    else:
        for it in range(1, max_iters + 1):
            for _ in range(max_iters):                       # evaluate the current policy: T^π to a fixed point
                new_atoms, new_probs, _, _ = backup(policy)
                change = delta(new_atoms, new_probs)
                atoms, probs = new_atoms, new_probs
                if change <= tol:
                    break
            _, _, new_policy, scores = backup(None)          # improve greedily
            if (new_policy == policy).all():
                converged = True
                break
            policy = new_policy
    _, _, policy, scores = backup(None)
    return GridSolution(stocks, atoms, probs, policy, scores, it, converged, _near_jump(f, stocks, atoms, probs, tol))


def _near_jump(f: Utility, stocks: np.ndarray, atoms: np.ndarray, probs: np.ndarray, tol: float
               ) -> list[tuple[int, float]]:
    """(state, stock) pairs whose law of c + G has mass within a window below a jump of f at 0, with a
    warning: iteration approaches such returns from below, so f counts them on the wrong side."""
    if float(f(0.0)) == float(f(-1e-300)):
        return []
    c = stocks[None, :, None] + atoms                                   # [S, M, K]
    window = max(1e3 * tol, 1e-9) * (1 + np.abs(stocks))[None, :, None]
    mass = np.where((c < 0) & (c >= -window), probs, 0.0).sum(-1)      # [S, M]
    hits = [(int(s), float(stocks[m])) for s, m in zip(*np.nonzero(mass > 0))]
    if hits:
        s, m = np.unravel_index(mass.argmax(), mass.shape)
        warnings.warn(f"{len(hits)} (state, stock) pairs, e.g. state {s} at stock {stocks[m]:g}, have return mass "
                      f"just below the jump of {f.name} at c + G = 0 ({mass[s, m]:.3g} within {window[0, m, 0]:.2g}): "
                      "iterates approach a limit from below and never reach it, so values there can be wrong by that "
                      "mass (listed in near_jump). offrl.tabular.stock_exact solves cyclic MDPs exactly", stacklevel=4)
    return hits


def stock_value_iteration(mdp: TabularMDP, utility: Utility, stocks: Any, representation: str = "quantile",
                          n_atoms: int = 51, support: Any = None, max_iters: int = 1000, tol: float = 1e-8,
                          allow_invalid_gamma: bool = False) -> GridSolution:
    """η_{k+1} = T^{π_{η_k}} η_k until the greedy policy is stable and η moves less than `tol`."""
    return _solve(mdp, utility, stocks, representation, n_atoms, support, max_iters, tol, False, allow_invalid_gamma)


def stock_policy_iteration(mdp: TabularMDP, utility: Utility, stocks: Any, representation: str = "quantile",
                           n_atoms: int = 51, support: Any = None, max_iters: int = 200, tol: float = 1e-8,
                           allow_invalid_gamma: bool = False) -> GridSolution:
    """Evaluate π_k to its fixed point η^{π_k}, then π_{k+1} = greedy(η^{π_k}); stop when π is stable."""
    return _solve(mdp, utility, stocks, representation, n_atoms, support, max_iters, tol, True, allow_invalid_gamma)


def stock_bounds(mdp: TabularMDP) -> tuple[float, float]:
    """[−G_max, −G_min] for rewards in [r_min, r_max] and γ < 1: G ∈ [r_min, r_max]/(1 − γ)."""
    if mdp.gamma == 1:
        raise OffrlError("stock bounds from reward bounds need γ < 1; for episodic γ = 1 give the return range")
    r_min, r_max = (float(x) for x in mdp.reward_range())
    g = float(mdp.gamma)
    return -max(r_max, 0.0) / (1 - g), -min(r_min, 0.0) / (1 - g)

"""Exact stock-augmented DP on cyclic MDPs: policy iteration over the reachable augmented states.

For a γ-homogeneous utility (f(γx) = a·f(x) + b, see offrl.risk) the optimal value
V(s, c) = max_π E f(c + G) from augmented state (s, c) solves

    V(s, c) = max_a Σ_{(p, r, s')} p · [ f(c + r)                 if the episode ends,
                                         a·V(s', c') + b          otherwise, c' = (c + r)/γ ].

Three facts make this a finite system of exact (Fraction) equations:

1. Stock cut-offs (reference T7). Every return from s lies in [G_lo(s), G_hi(s)] (solved exactly from
   the rewards). At c ≥ −G_lo(s) every c + G lands on f's piece [0, ∞), at c < −G_hi(s) on (−∞, 0);
   for a utility affine on each piece, E f(c + G) = f(0±) + slope·(c + E G) there, maximised by the
   mean-optimal (or, for a negative slope, mean-minimal) policy, solved exactly. Only stocks between
   the cut-offs are states.
2. Finiteness. With γ = 1/k and rational rewards and stocks, the stocks reachable between the
   cut-offs lie on a bounded lattice, so the augmented MDP is finite. Otherwise (γ = 2/3, say, doubles
   denominators every step) the search stops at `max_states` with an error that says so.
3. Runs that never end. A run that stays among finitely many augmented states has bounded C_t and
   G_t, and C_0 + G_0 = γ^t (C_t + G_t) → 0: it scores exactly f(0). For a < 1 the system contracts
   and Howard's policy iteration solves it. For a = 1 (the indicator: f(γx) = f(x)) it does not: value
   iteration creeps towards a threshold from below and never reaches it, and a loop and an exit can
   tie. Maximal end components (sets where some actions keep the run inside forever) are therefore
   collapsed into one node that may leave by any of its states' other actions or stay for f(0)
   (de Alfaro 1997); every policy of the collapsed MDP ends, so policy iteration is exact again.

γ = 1 needs an acyclic MDP (returns of a cycle need not converge): StockDP solves that case.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterable, Sequence

from offrl import OffrlError
from offrl.risk import Utility
from offrl.tabular.mdp import TabularMDP

Node = tuple[int, Fraction]       # (state, stock)


@dataclass
class _Action:
    """V(x) ≥ payoff + Σ coef·V(y): the expected payoff of outcomes that leave the node set, plus the
    continuation coefficients of those that stay in it. `leak` is the probability of leaving."""
    payoff: Fraction
    succ: list[tuple[Fraction, int]]
    leak: Fraction


def _exact(x: Any, what: str) -> Fraction:
    if isinstance(x, bool) or not isinstance(x, (int, Fraction)):
        raise OffrlError(f"exact solving needs exact numbers (int or Fraction), but {what} is {x!r} "
                         f"({type(x).__name__}); write it as a Fraction, e.g. Fraction(3, 10) for 0.3")
    return Fraction(x)


def _sccs(n: int, succ: Callable[[int], Iterable[int]]) -> list[list[int]]:
    """Strongly connected components (iterative Tarjan), successors' components first."""
    index, low, on_stack, stack, out, counter = [-1] * n, [0] * n, [False] * n, [], [], 0
    for root in range(n):
        if index[root] >= 0:
            continue
        work = [(root, iter(succ(root)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        while work:
            x, it = work[-1]
            y = next(it, None)
            if y is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[x])
                if low[x] == index[x]:
                    comp = []
                    while True:
                        z = stack.pop()
                        on_stack[z] = False
                        comp.append(z)
                        if z == x:
                            break
                    out.append(comp)
            elif index[y] < 0:
                index[y] = low[y] = counter
                counter += 1
                stack.append(y)
                on_stack[y] = True
                work.append((y, iter(succ(y))))
            elif on_stack[y]:
                low[x] = min(low[x], index[y])
    return out


def _solve_linear(a: list[list[Fraction]], b: list[Fraction]) -> list[Fraction]:
    """Gaussian elimination in exact arithmetic; `a` must be invertible."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        piv = next(r for r in range(col, n) if m[r][col] != 0)
        m[col], m[piv] = m[piv], m[col]
        for r in range(n):
            if r != col and m[r][col] != 0:
                k = m[r][col] / m[col][col]
                m[r] = [u - k * v for u, v in zip(m[r], m[col])]
    return [m[i][n] / m[i][i] for i in range(n)]


def _evaluate(actions: list[list[_Action]], policy: list[int]) -> list[Fraction]:
    """V = t + Q V for one policy, one strongly connected block at a time (most blocks are single nodes)."""
    chosen = [actions[x][policy[x]] for x in range(len(actions))]
    v: list[Fraction | None] = [None] * len(actions)
    for comp in _sccs(len(actions), lambda x: (y for _, y in chosen[x].succ)):
        where = {x: i for i, x in enumerate(comp)}
        a = [[Fraction(int(i == j)) for j in range(len(comp))] for i in range(len(comp))]
        b = []
        for i, x in enumerate(comp):
            rhs = chosen[x].payoff
            for coef, y in chosen[x].succ:
                if y in where:
                    a[i][where[y]] -= coef
                else:
                    rhs += coef * v[y]
            b.append(rhs)
        for x, val in zip(comp, _solve_linear(a, b)):
            v[x] = val
    return v  # type: ignore[return-value]


def _policy_iteration(actions: list[list[_Action]], policy: list[int]) -> tuple[list[Fraction], list[int]]:
    """Howard's policy iteration, switching only on strict improvement; every policy's (I − Q) must be
    invertible (each run ends with probability 1, or the coefficients contract)."""
    while True:
        v = _evaluate(actions, policy)
        changed = False
        for x, acts in enumerate(actions):
            q = [act.payoff + sum(c * v[y] for c, y in act.succ) for act in acts]
            best = max(q)
            if q[policy[x]] < best:
                policy[x], changed = q.index(best), True
        if not changed:
            return v, policy


def _end_components(actions: list[list[_Action]]) -> tuple[list[list[int]], list[set[int]]]:
    """Maximal end components and, per node, the actions that keep a run inside its component."""
    n = len(actions)
    allowed = [{i for i, act in enumerate(acts) if act.leak == 0} for acts in actions]
    while True:
        comps = _sccs(n, lambda x: {y for i in allowed[x] for _, y in actions[x][i].succ})
        comp_of = {x: k for k, comp in enumerate(comps) for x in comp}
        changed = False
        for x in range(n):
            keep = {i for i in allowed[x] if all(comp_of[y] == comp_of[x] for _, y in actions[x][i].succ)}
            if keep != allowed[x]:
                allowed[x], changed = keep, True
        if not changed:
            return [c for c in comps if all(allowed[x] for x in c)], allowed


def _maximise_with_stays(actions: list[list[_Action]], stay_payoff: Fraction) -> tuple[list[Fraction], list[int]]:
    """Optimal values and policy when coefficients sum to ≤ 1 and a run that never leaves scores
    `stay_payoff`: collapse the maximal end components, solve, and route each component's states
    to the exit it chose (or keep them inside)."""
    mecs, allowed = _end_components(actions)
    n = len(actions)
    q_of = list(range(n))
    members: dict[int, list[int]] = {}
    for comp in mecs:
        for x in comp:
            q_of[x] = comp[0]
        members[comp[0]] = comp
    heads = sorted({q_of[x] for x in range(n)})
    qi = {h: i for i, h in enumerate(heads)}
    q_actions: list[list[_Action]] = []
    origin: list[list[tuple[int, int] | None]] = []          # quotient action → (node, action), None = stay
    for h in heads:
        acts, orig = [], []
        for x in members.get(h, [h]):
            for i, act in enumerate(actions[x]):
                if h in members and i in allowed[x]:
                    continue
                merged: dict[int, Fraction] = {}
                for c, y in act.succ:
                    merged[qi[q_of[y]]] = merged.get(qi[q_of[y]], Fraction(0)) + c
                acts.append(_Action(act.payoff, [(c, y) for y, c in merged.items()], act.leak))
                orig.append((x, i))
        if h in members:
            acts.append(_Action(stay_payoff, [], Fraction(1)))
            orig.append(None)
        q_actions.append(acts)
        origin.append(orig)
    init = [len(acts) - 1 if h in members else 0 for h, acts in zip(heads, q_actions)]
    q_values, q_policy = _policy_iteration(q_actions, init)
    values = [q_values[qi[q_of[x]]] for x in range(n)]
    policy = [0] * n
    for h in heads:
        pick = origin[qi[h]][q_policy[qi[h]]]
        if h not in members:
            policy[h] = pick[1]
        elif pick is None:                                   # stay forever: any action that keeps the run inside
            for x in members[h]:
                policy[x] = min(allowed[x])
        else:                                                # walk to the exit state inside the component
            target, act = pick
            policy[target] = act
            done = {target}
            while len(done) < len(members[h]):
                for x in members[h]:
                    if x in done:
                        continue
                    nearer = [i for i in sorted(allowed[x]) if any(y in done for _, y in actions[x][i].succ)]
                    if nearer:
                        policy[x] = nearer[0]
                        done.add(x)
    return values, policy


def _mdp_values(mdp: TabularMDP, gamma: Fraction, reward: Callable[[Fraction], Fraction],
                per_outcome: bool = False) -> list[Fraction]:
    """Classic optimal values max E Σ γ^t reward(R_{t+1}) (γ < 1); with per_outcome, the best single path
    (every outcome is a choice): the largest return any run can have."""
    actions = []
    for s in range(mdp.num_states):
        acts = []
        for outs in mdp.transitions[s]:
            outs = [(Fraction(p), reward(Fraction(r)), nxt) for p, r, nxt in outs]
            for group in ([[(Fraction(1), r, n)] for _, r, n in outs] if per_outcome else [outs]):
                acts.append(_Action(sum(p * r for p, r, _ in group), [(p * gamma, n) for p, _, n in group if n is not None],
                                    sum((p for p, _, n in group if n is None), Fraction(0))))
        actions.append(acts)
    return _policy_iteration(actions, [0] * mdp.num_states)[0]


@dataclass
class _Piece:
    """f on one side of 0: f(x) = at0 + slope·x, and the optimal E G that maximises it (per state)."""
    at0: Fraction
    slope: Fraction
    mean_g: list[Fraction]

    def value(self, s: int, c: Fraction) -> Fraction:
        return self.at0 + self.slope * (c + self.mean_g[s])


@dataclass
class ExactSolution:
    """V(s, c) = max_π E f(c + G) at every augmented state reachable from the requested ones, exactly."""
    utility: Utility
    values: dict[Node, Fraction]               # states between the cut-offs
    policy: dict[Node, int]                    # an optimal action there (ties: see stock_exact)
    g_lo: list[Fraction]                       # per state, the smallest and largest return any run can have
    g_hi: list[Fraction]
    _pieces: tuple[_Piece, _Piece] | None = field(default=None, repr=False)

    def value(self, s: int, c: Any) -> Fraction:
        """E f(c + G) from (s, c) under an optimal policy."""
        c = Fraction(c)
        if (s, c) in self.values:
            return self.values[(s, c)]
        if self._pieces is not None and c >= -self.g_lo[s]:
            return self._pieces[1].value(s, c)
        if self._pieces is not None and c < -self.g_hi[s]:
            return self._pieces[0].value(s, c)
        raise OffrlError(f"(state {s}, stock {c}) is not among the solved augmented states; pass it to stock_exact")


def stock_exact(mdp: TabularMDP, utility: Utility, stocks: Iterable[Any], states: Sequence[int] | None = None,
                max_states: int = 20_000, allow_invalid_gamma: bool = False) -> ExactSolution:
    """Exact V(s, c) = max_π E f(c + G) on a cyclic (or acyclic) MDP for every s in `states` (default:
    all) and c in `stocks`, with int/Fraction data and, on a cycle, γ < 1 (see the module docstring
    for why it is exact and when it cannot be). Raises, saying why, when the reachable stocks do not
    close into at most `max_states` augmented states."""
    utility.check_gamma(mdp.gamma, allow_invalid_gamma)
    gamma = _exact(mdp.gamma, "γ")
    trans = [[[(_exact(p, f"a probability of (state {s}, action {a})"), _exact(r, f"a reward of (state {s}, action {a})"), n)
               for p, r, n in outs] for a, outs in enumerate(acts)] for s, acts in enumerate(mdp.transitions)]
    f = lambda x: Fraction(utility.scalar(x))
    states = range(mdp.num_states) if states is None else states
    starts = [(s, _exact(c, "a requested stock")) for s in states for c in stocks]
    if gamma == 1:
        cyc = [c for c in _sccs(mdp.num_states, lambda s: {n for outs in trans[s] for _, _, n in outs if n is not None})
               if len(c) > 1 or any(n == c[0] for outs in trans[c[0]] for _, _, n in outs)]
        if cyc:
            raise OffrlError(f"γ = 1 on an MDP with a cycle (states {sorted(cyc[0])}): returns need not converge; "
                             "use γ < 1, or StockDP with a finite horizon")
    # a, b of f(γx) = a·f(x) + b, read off two points of f and checked on a few more.
    x1 = next((x for x in (Fraction(1), Fraction(-1)) if f(x) != f(0)), None)
    a = Fraction(1) if x1 is None else (f(gamma * x1) - f(0)) / (f(x1) - f(0))
    b = f(0) * (1 - a)
    if any(f(gamma * x) != a * f(x) + b for x in (Fraction(-3), Fraction(-1, 2), Fraction(1, 3), Fraction(2))):
        raise OffrlError(f"utility {utility.name} is not of the form f(γx) = a·f(x) + b at γ = {gamma}; "
                         "greedy stock-augmented DP does not apply")
    pieces = None
    if gamma < 1:
        g_hi = _mdp_values(mdp, gamma, lambda r: r, per_outcome=True)
        g_lo = [-v for v in _mdp_values(mdp, gamma, lambda r: -r, per_outcome=True)]
        if utility.piecewise_affine:
            mean_max = _mdp_values(mdp, gamma, lambda r: r)
            mean_min = [-v for v in _mdp_values(mdp, gamma, lambda r: -r)]
            def piece(at0: Fraction, slope: Fraction) -> _Piece:
                return _Piece(at0, slope, mean_max if slope > 0 else mean_min if slope < 0 else [Fraction(0)] * len(trans))
            s_neg = f(Fraction(-1)) - f(Fraction(-2))
            pieces = (piece(f(Fraction(-1)) + s_neg, s_neg), piece(f(Fraction(0)), f(Fraction(1)) - f(Fraction(0))))
    else:
        g_lo = g_hi = [Fraction(0)] * len(trans)             # unused: an acyclic γ = 1 MDP has finitely many stocks

    def cut(s: int, c: Fraction) -> Fraction | None:
        if pieces is None:
            return None
        if c >= -g_lo[s]:
            return pieces[1].value(s, c)
        if c < -g_hi[s]:
            return pieces[0].value(s, c)
        return None

    # The augmented states between the cut-offs, breadth first from the requested ones.
    index: dict[Node, int] = {}
    nodes: list[Node] = []
    for x in starts:
        if cut(*x) is None and x not in index:
            index[x] = len(nodes)
            nodes.append(x)
    actions: list[list[_Action]] = []
    while len(actions) < len(nodes):
        s, c = nodes[len(actions)]
        acts = []
        for outs in trans[s]:
            payoff, succ, leak = Fraction(0), [], Fraction(0)
            for p, r, n in outs:
                if n is None:
                    payoff, leak = payoff + p * f(c + r), leak + p
                    continue
                c2 = (c + r) / gamma
                closed = cut(n, c2)
                if closed is not None:
                    payoff, leak = payoff + p * (a * closed + b), leak + p
                    continue
                if (n, c2) not in index:
                    if len(nodes) >= max_states:
                        far = max(nodes, key=lambda x: (abs(x[1]), x[1].denominator))[1]
                        raise OffrlError(
                            f"more than {max_states} augmented states are reachable (stocks such as {far}): with "
                            f"γ = {gamma} the stocks (c + r)/γ do not close into a finite set"
                            + ("" if utility.piecewise_affine else f", and {utility.name} is not affine on each side "
                               "of 0, so the stock range cannot be cut off")
                            + "; exact solving needs γ = 1/k with rational rewards and stocks (or raise max_states). "
                            "stock_value_iteration gives an approximate answer on a stock grid")
                    index[(n, c2)] = len(nodes)
                    nodes.append((n, c2))
                payoff += p * b
                succ.append((p * a, index[(n, c2)]))
            acts.append(_Action(payoff, succ, leak))
        actions.append(acts)
    if a == 1:
        values, policy = _maximise_with_stays(actions, f(Fraction(0)))
    else:
        values, policy = _policy_iteration(actions, [0] * len(actions))
    return ExactSolution(utility, dict(zip(nodes, values)), dict(zip(nodes, policy)), g_lo, g_hi, pieces)

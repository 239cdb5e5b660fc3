"""Finite MDPs for the exact tabular core, and a seeded generator of random tree MDPs."""
from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

from offrl import OffrlError

Outcome = tuple[Any, Any, "int | None"]       # (probability, reward, next state; None = episode ends)


@dataclass
class TabularMDP:
    """transitions[s][a] = [(p, r, s'), ...] with s' = None for termination; rewards R_{t+1} arrive on
    the transition. Use ints/Fractions for exact answers."""
    transitions: Sequence[Sequence[Sequence[Outcome]]]
    gamma: Any = 1
    start: int = 0

    def __post_init__(self) -> None:
        n = len(self.transitions)
        if not 0 <= self.start < n:
            raise OffrlError(f"start state {self.start} is not one of the {n} states")
        if not 0 < self.gamma <= 1:
            raise OffrlError(f"gamma must be in (0, 1], got {self.gamma}")
        for s, acts in enumerate(self.transitions):
            if not acts:
                raise OffrlError(f"state {s} has no actions; give every state at least one action")
            for a, outs in enumerate(acts):
                total = sum(p for p, _, _ in outs)
                if abs(total - 1) > 1e-9 or any(p < 0 for p, _, _ in outs):
                    raise OffrlError(f"outcome probabilities of (state {s}, action {a}) sum to {total}, not 1")
                bad = [nxt for _, _, nxt in outs if nxt is not None and not 0 <= nxt < n]
                if bad:
                    raise OffrlError(f"(state {s}, action {a}) leads to unknown state {bad[0]}")

    @property
    def num_states(self) -> int:
        return len(self.transitions)

    def num_actions(self, s: int) -> int:
        return len(self.transitions[s])

    def reward_range(self) -> tuple[Any, Any]:
        rs = [r for acts in self.transitions for outs in acts for _, r, _ in outs]
        return min(rs), max(rs)


def random_tree_mdp(seed: int, depth: int = 3, actions: int = 2, outcomes: int = 2, max_reward: int = 3,
                    p_terminate: Fraction = Fraction(1, 5), gamma: Any = 1) -> TabularMDP:
    """A random tree MDP for property tests: every node has `actions` actions, each with `outcomes`
    outcomes of random rational probability and small integer reward; a child is a new node, or the
    end of the episode at the last level or, earlier, with probability `p_terminate`."""
    rng = random.Random(seed)
    transitions: list[list[list[Outcome]]] = []

    def node(level: int) -> int:
        idx = len(transitions)
        transitions.append([])
        for _ in range(actions):
            weights = [rng.randint(1, 4) for _ in range(outcomes)]
            outs = []
            for w in weights:
                r = rng.randint(-max_reward, max_reward)
                end = level == depth - 1 or rng.random() < p_terminate
                outs.append((Fraction(w, sum(weights)), r, None if end else -1))
            transitions[idx].append(outs)
        for a in range(actions):
            transitions[idx][a] = [(p, r, node(level + 1) if nxt == -1 else None) for p, r, nxt in transitions[idx][a]]
        return idx

    node(0)
    return TabularMDP(transitions, gamma)


def sample_transitions(mdp: TabularMDP, states: Any, actions: Any, rng: Any) -> tuple[Any, Any, Any]:
    """One outcome per (state, action) pair: (rewards [n] float32, next states [n] int64 (a terminal
    next state is reported as the state itself), done [n] bool). `rng` is a numpy Generator."""
    import numpy as np

    states, actions = np.asarray(states), np.asarray(actions)
    u = rng.random(len(states))
    rewards = np.empty(len(states), np.float32)
    nxt = np.empty(len(states), np.int64)
    done = np.empty(len(states), bool)
    for i, (s, a) in enumerate(zip(states.tolist(), actions.tolist())):
        acc = 0.0
        outs = mdp.transitions[s][a]
        for k, (p, r, n) in enumerate(outs):
            acc += float(p)
            if u[i] < acc or k == len(outs) - 1:
                rewards[i], nxt[i], done[i] = float(r), s if n is None else n, n is None
                break
    return rewards, nxt, done


def risky_lanes(width: int = 5, rows: int = 3, slip: Fraction = Fraction(1, 5)) -> tuple[TabularMDP, list[int]]:
    """A stochastic gridworld for deep-vs-exact comparisons: the agent moves one column right per step
    and picks up / stay / down among `rows` lanes; with probability `slip` the move is replaced by a
    uniformly random one. Entering a cell pays by lane: the top lane a sure +1, the middle lane 0 or
    +2, the bottom lane +3 or, with probability 1/5, −5 (mean 1.4: best for the mean, worst tail).
    The episode ends on entering the last column; γ = 1, so stocks stay integers.
    Returns (mdp, decision states): state index = col·rows + row, start = (0, middle lane)."""
    def lane_rewards(row: int) -> list[tuple[Fraction, int]]:
        if row == 0:
            return [(Fraction(1), 1)]
        if row == rows - 1:
            return [(Fraction(4, 5), 3), (Fraction(1, 5), -5)]
        return [(Fraction(1, 2), 0), (Fraction(1, 2), 2)]

    transitions: list[list[list[Outcome]]] = []
    for col in range(width):
        for row in range(rows):
            if col == width - 1:                 # never entered as a decision state
                transitions.append([[(Fraction(1), 0, None)]])
                continue
            acts = []
            for move in (-1, 0, 1):
                dist: dict[int, Fraction] = {}
                for m, p in [(move, 1 - slip)] + [(mm, slip / 3) for mm in (-1, 0, 1)]:
                    r2 = min(max(row + m, 0), rows - 1)
                    dist[r2] = dist.get(r2, Fraction(0)) + p
                outs = []
                for r2, p in sorted(dist.items()):
                    nxt = None if col + 1 == width - 1 else (col + 1) * rows + r2
                    outs += [(p * q, rew, nxt) for q, rew in lane_rewards(r2)]
                acts.append(outs)
            transitions.append(acts)
    mdp = TabularMDP(transitions, gamma=1, start=rows // 2)
    return mdp, [c * rows + r for c in range(width - 1) for r in range(rows)]

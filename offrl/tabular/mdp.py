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

"""Tabular hybrid actor-critic after Tan, Fan & Wei, "Actor-Critics Can Achieve Optimal Sample
Efficiency" (ICML 2025), on finite-horizon episodic MDPs: an offline-initialised, optimistic critic that
targets Q* (not the actor's Q^π), an exponential-weights (mirror-descent / NPG) actor, and rare switching
of the critic the actor follows, with an actor reset to uniform at each switch.

Reconstructed, not transcribed: the paper's body and code are not public (reference §2.2). What is
reconstructed and why:
- critic: the GOLF-style optimistic confidence set becomes its tabular closed form, an optimistic model:
  a visited (h, s, a) uses its empirical reward and next-state law plus an optional count bonus c/√n,
  an unvisited one gets the optimistic value U ("horizon": the largest remaining return, or a number);
  values are clipped to the largest remaining return. Backups take max over a' (Q*-targeting).
- non-optimistic mode (the paper's hybrid result without optimism): U = 0 and no bonus, i.e. plain
  fitted Q-iteration on offline + online data.
- rare switching: the critic the actor follows is recomputed only when some (h, s, a) count has
  doubled since the last switch (a first visit counts), which bounds switches by O(H·S·A·log T) like
  the paper's O(d·H·log T); ``switching="every"`` refreshes after every episode (the ablation).
- actor: π_h(a|s) ∝ π_h(a|s)·exp(η·f_h(s, a)) for every (h, s) after every episode, from uniform at
  each switch (so after k updates on one critic π = softmax(η·k·f), reference T9); η = inf is the
  greedy limit (ties to the lowest action index), the setting of the combination-lock table T10.

Arrays are indexed [h, s, a] with h the step in the episode (0..H-1); states with fewer actions than the
widest one are padded and masked."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from offrl import OffrlError
from offrl.tabular.mdp import TabularMDP

Transition = tuple[int, int, int, float, "int | None"]     # (h, s, a, r, s' or None at episode end)


@dataclass
class HybridACConfig:
    horizon: int                           # H: steps per episode (an episode may also end earlier at a terminal)
    optimistic: bool = True                # False: non-optimistic fitted Q-iteration (U = 0, no bonus)
    unvisited: Any = "horizon"             # U for an unvisited pair: "horizon" = largest remaining return, or a number
    bonus: float = 0.0                     # c in the count bonus c/√n on visited pairs (0 for deterministic MDPs)
    eta: float = math.inf                  # exponential-weights step size; inf = greedy actor
    switching: str = "doubling"            # "doubling": rare switching; "every": new critic after every episode
    reset_actor: bool = True               # reset the actor to uniform at a switch (the paper's policy reset)

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise OffrlError(f"horizon must be a positive number of steps, got {self.horizon}")
        if self.switching not in ("doubling", "every"):
            raise OffrlError(f"switching must be 'doubling' or 'every', got {self.switching!r}")
        if not self.eta > 0:
            raise OffrlError(f"eta (the actor's step size) must be > 0 or math.inf for greedy, got {self.eta}")
        if self.bonus < 0:
            raise OffrlError(f"bonus must be >= 0, got {self.bonus}")
        if self.unvisited != "horizon" and not isinstance(self.unvisited, (int, float)):
            raise OffrlError(f"unvisited must be 'horizon' or a number, got {self.unvisited!r}")


@dataclass
class HybridRun:
    """What one run did: per-episode returns, the switch count after each episode, and whether the
    policy the actor would play next was optimal (exact evaluation) after each episode."""
    returns: list[float] = field(default_factory=list)
    switches: list[int] = field(default_factory=list)
    actor_optimal: list[bool] = field(default_factory=list)

    def first_episode_reaching(self, target: float) -> int | None:
        """1-based index of the first episode whose return is ≥ target (None if none)."""
        return next((i + 1 for i, g in enumerate(self.returns) if g >= target - 1e-9), None)

    @property
    def solved_after(self) -> int | None:
        """Smallest k ≥ 1 such that the actor is optimal after episode k and every later one."""
        k = len(self.actor_optimal)
        while k > 0 and self.actor_optimal[k - 1]:
            k -= 1
        return None if k == len(self.actor_optimal) else k + 1


class TabularHybridAC:
    """The hybrid actor-critic on one `TabularMDP` (rewards on transitions, s' = None ends the episode)."""

    def __init__(self, mdp: TabularMDP, cfg: HybridACConfig, offline: Iterable[Transition] = ()) -> None:
        self.mdp, self.cfg = mdp, cfg
        H, S = cfg.horizon, mdp.num_states
        A = max(mdp.num_actions(s) for s in range(S))
        self.valid = np.zeros((S, A), bool)
        for s in range(S):
            self.valid[s, :mdp.num_actions(s)] = True
        self.gamma = float(mdp.gamma)
        r_max = max(float(mdp.reward_range()[1]), 0.0)
        # the largest return still possible from step h: the clip, and U in "horizon" mode
        self.max_return = np.array([r_max * sum(self.gamma ** k for k in range(H - h)) for h in range(H)])
        self.n = np.zeros((H, S, A))                      # visit counts
        self.r_sum = np.zeros((H, S, A))
        self.next_n = np.zeros((H, S, A, S + 1))          # next-state counts; column S = episode end
        for tr in offline:
            self._add(*tr)
        self.n_at_switch = self.n.copy()
        self.switches = 0
        self.critic = self.optimistic_q()                 # f^(0): the offline-initialised critic
        self.log_pi = self._uniform()
        self._actor_step()

    # ---- critic ----
    def _add(self, h: int, s: int, a: int, r: float, s_next: int | None) -> None:
        if not (0 <= h < self.cfg.horizon and 0 <= s < self.mdp.num_states and 0 <= a < self.mdp.num_actions(s)):
            raise OffrlError(f"transition (h={h}, s={s}, a={a}) is outside the MDP (horizon "
                             f"{self.cfg.horizon}, {self.mdp.num_states} states); check the offline data")
        self.n[h, s, a] += 1
        self.r_sum[h, s, a] += r
        self.next_n[h, s, a, self.mdp.num_states if s_next is None else s_next] += 1

    def optimistic_q(self) -> np.ndarray:
        """Q [H, S, A] by backward induction on the empirical model with a max backup (Q*-targeting);
        unvisited pairs get U (0 when not optimistic); invalid actions are -inf."""
        cfg, (H, S, A) = self.cfg, self.n.shape
        q = np.empty((H, S, A))
        v_next = np.zeros(S + 1)                          # V_H = 0, and 0 after the episode ends
        for h in reversed(range(H)):
            n = np.maximum(self.n[h], 1)
            visited = self.n[h] > 0
            q_hat = self.r_sum[h] / n + self.gamma * (self.next_n[h] / n[..., None]) @ v_next
            if cfg.optimistic:
                u = self.max_return[h] if cfg.unvisited == "horizon" else float(cfg.unvisited)
                q_hat = np.minimum(q_hat + cfg.bonus / np.sqrt(n), self.max_return[h])
            else:
                u = 0.0
            q[h] = np.where(self.valid, np.where(visited, q_hat, u), -np.inf)
            v_next = np.append(q[h].max(axis=1), 0.0)
        return q

    def _should_switch(self) -> bool:
        if self.cfg.switching == "every":
            return True
        return bool(np.any((self.n > self.n_at_switch) & (self.n >= np.maximum(2 * self.n_at_switch, 1))))

    # ---- actor ----
    def _uniform(self) -> np.ndarray:
        return np.where(self.valid, 0.0, -np.inf)[None].repeat(self.cfg.horizon, axis=0)

    def _actor_step(self) -> None:
        """One mirror-descent step on every (h, s): log π ← log π + η·f, renormalised (greedy if η = inf)."""
        if math.isinf(self.cfg.eta):
            best = self.critic.argmax(axis=2)             # ties to the lowest index
            self.log_pi = np.where(np.arange(self.n.shape[2]) == best[..., None], 0.0, -np.inf)
        else:
            z = self.log_pi + self.cfg.eta * np.where(self.valid, self.critic, 0.0)
            self.log_pi = z - np.logaddexp.reduce(z, axis=2, keepdims=True)

    def policy(self) -> np.ndarray:
        """π [H, S, A] the actor plays in the next episode."""
        return np.exp(self.log_pi)

    # ---- exact evaluation ----
    def values(self, pi: np.ndarray | None = None) -> np.ndarray:
        """V [H+1, S] of policy π [H, S, A] (of the optimal policy if None), by backward induction."""
        H, S, A = self.n.shape
        v = np.zeros((H + 1, S))
        for h in reversed(range(H)):
            for s in range(S):
                qs = [sum(float(p) * (float(r) + self.gamma * (0.0 if nx is None else v[h + 1, nx]))
                          for p, r, nx in self.mdp.transitions[s][a]) for a in range(self.mdp.num_actions(s))]
                v[h, s] = max(qs) if pi is None else float(np.dot(pi[h, s, :len(qs)], qs))
        return v

    # ---- one episode ----
    def episode(self, rng: np.random.Generator) -> float:
        """Play π^(t) for one episode, add its transitions, switch critic if the test fires (resetting
        the actor), then take one actor step on the critic in force. Returns the episode's return."""
        s, ret, disc = self.mdp.start, 0.0, 1.0
        pi = self.policy()
        for h in range(self.cfg.horizon):
            a = int(rng.choice(pi.shape[2], p=pi[h, s])) if not math.isinf(self.cfg.eta) else int(pi[h, s].argmax())
            outs = self.mdp.transitions[s][a]
            k = int(rng.choice(len(outs), p=[float(p) for p, _, _ in outs])) if len(outs) > 1 else 0
            _, r, s_next = outs[k]
            self._add(h, s, a, float(r), s_next)
            ret, disc = ret + disc * float(r), disc * self.gamma
            if s_next is None:
                break
            s = s_next
        if self._should_switch():
            self.critic, self.n_at_switch = self.optimistic_q(), self.n.copy()
            self.switches += 1
            if self.cfg.reset_actor:
                self.log_pi = self._uniform()
        self._actor_step()
        return ret

    def run(self, episodes: int, seed: int = 0, tol: float = 1e-9) -> HybridRun:
        rng, out = np.random.default_rng(seed), HybridRun()
        v_star = self.values()[0, self.mdp.start]
        for _ in range(episodes):
            out.returns.append(self.episode(rng))
            out.switches.append(self.switches)
            out.actor_optimal.append(bool(self.values(self.policy())[0, self.mdp.start] >= v_star - tol))
        return out


def combination_lock(horizon: int) -> TabularMDP:
    """Reference T10: states (h, g) = 2h and (h, b) = 2h + 1; in g action 1 keeps g and action 0 falls
    to b, which is absorbing; the only reward is 1 for action 1 in g at the last step (V* = 1)."""
    H, trans = horizon, []
    for h in range(H):
        nxt = lambda z: None if h == H - 1 else 2 * (h + 1) + z   # noqa: E731
        trans.append([[(1, 0, nxt(1))], [(1, 1 if h == H - 1 else 0, nxt(0))]])   # g
        trans.append([[(1, 0, nxt(1))], [(1, 0, nxt(1))]])                          # b
    return TabularMDP(trans, gamma=1, start=0)


def lock_data(horizon: int, which: str) -> list[Transition]:
    """Offline data for the lock: "A" one behaviour trajectory (1, ..., 1, 0); "B" every reachable
    (h, s, a) once except the rewarding pair (H-1, g, 1)."""
    H, mdp = horizon, combination_lock(horizon)
    if which == "A":
        return [(h, 2 * h, int(h < H - 1), 0.0, mdp.transitions[2 * h][int(h < H - 1)][0][2]) for h in range(H)]
    if which == "B":
        reachable = [(0, 0)] + [(h, 2 * h + z) for h in range(1, H) for z in (0, 1)]
        return [(h, s, a, float(mdp.transitions[s][a][0][1]), mdp.transitions[s][a][0][2])
                for h, s in reachable for a in (0, 1) if (h, s, a) != (H - 1, 2 * (H - 1), 1)]
    raise OffrlError(f"lock data {which!r} is unknown: use 'A' or 'B'")


def softmax_after(f: Sequence[float] | np.ndarray, eta: float, k: int) -> np.ndarray:
    """softmax(η·k·f): where k exponential-weights steps on a fixed critic f lead from uniform (T9)."""
    z = eta * k * np.asarray(f, float)
    return np.exp(z - np.logaddexp.reduce(z, axis=-1, keepdims=True))

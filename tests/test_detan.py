"""DηN (stock-augmented QR-DQN) against the exact tabular DP on a stochastic gridworld."""
import numpy as np
import torch

from offrl.tabular.detan import DEtaN, DEtaNConfig
from offrl.nets import quantile_huber_loss
from offrl.risk import make_utility
from offrl.tabular import StockDP
from offrl.tabular.mdp import risky_lanes, sample_transitions


def test_target_action_is_f_greedy_at_the_next_stock():
    agent = DEtaN(2, 2, make_utility("lower"), (-3.0, 0.0))
    q = torch.tensor([[[[1.0, 1.0], [0.0, 3.0]]] * 2])                   # [1, 2, A=2, N=2]: safe 1, risky {0, 3}
    c = torch.tensor([[-3.0, -1.0]])
    assert agent.f_greedy(q, c).tolist() == [[1, 0]]                      # risky when far below 0, then safe
    assert q.mean(-1).argmax(-1).tolist() == [[1, 1]]                     # QR-DQN's mean-greedy would not switch


def test_quantile_huber_loss_is_minimised_by_the_quantiles():
    y = torch.tensor([[0.0, 0.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]])          # {0: 1/4, 3: 3/4}
    good = quantile_huber_loss(torch.tensor([[0.0, 3.0, 3.0, 3.0]]), y)
    for bad in ([0.0, 0.0, 3.0, 3.0], [1.5, 1.5, 1.5, 1.5], [0.0, 3.0, 3.0, 2.5]):
        assert quantile_huber_loss(torch.tensor([bad]), y) > good


def test_detan_greedy_actions_agree_with_exact_stock_dp():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mdp, decision_states = risky_lanes()
    lower = make_utility("lower")
    c_lo, c_hi = -12, 20                           # [−G_max, −G_min]: G ∈ [−20, 12] over 4 steps
    s = rng.choice(decision_states, 20_000)
    a = rng.integers(0, 3, len(s))
    r, s2, done = sample_transitions(mdp, s, a, rng)
    agent = DEtaN(mdp.num_states, 3, lower, (c_lo, c_hi), DEtaNConfig())
    agent.fit(s, a, r, s2, done, steps=2000)
    dp = StockDP(mdp, lower)
    stocks = list(range(c_lo, c_hi + 1))
    agree = decisive = decisive_agree = total = 0
    for state in decision_states:
        steps_left = 4 - state // 3
        greedy = agent.greedy(torch.full((1, len(stocks)), state), torch.tensor([stocks], dtype=torch.float32))[0]
        for c, action in zip(stocks, greedy.tolist()):
            dp.solve(state, c, steps_left)
            scores = dp.action_scores[(state, c, steps_left)]
            ok = scores[action] == max(scores)                       # one of the exactly optimal actions
            agree += ok
            total += 1
            if scores.count(max(scores)) == 1:
                decisive += 1
                decisive_agree += ok
    assert decisive > 100                                            # the stock really changes the choice
    assert agree / total >= 0.95, (agree, total, decisive_agree, decisive)


def test_detan_refuses_a_gamma_where_greedy_dp_is_wrong_like_the_exact_solvers():
    """exp utility is valid only at γ = 1: StockDP refuses it, and so does DηN (or warns when allowed)."""
    import pytest

    from offrl import OffrlError

    exp = make_utility("exp", lam=1.0)
    with pytest.raises(OffrlError, match="not γ-homogeneous"):
        DEtaN(2, 2, exp, (-3.0, 0.0), DEtaNConfig(gamma=0.9))
    with pytest.warns(UserWarning, match="running anyway"):
        DEtaN(2, 2, exp, (-3.0, 0.0), DEtaNConfig(gamma=0.9, allow_invalid_gamma=True))
    DEtaN(2, 2, exp, (-3.0, 0.0), DEtaNConfig(gamma=1.0))                 # γ = 1: valid
    DEtaN(2, 2, make_utility("lower"), (-3.0, 0.0), DEtaNConfig(gamma=0.9))  # homogeneous utility: valid

"""CQL and Cal-QL: the conservative term against a row-by-row reference, the Lagrange multiplier's direction, the
online α switch through the phase hook, the per-domain settings; Cal-QL's Monte-Carlo bound."""
import math

import numpy as np
import pytest
import torch

from offrl.agent import Phase, Spec, get_agent, resolve_config, resolve_loop
from offrl.algorithms.cql import repeat_rows
from offrl.buffer import Batch, Rows, batch_type


def _cql(domain="locomotion", seeds=2, **over):
    cls = get_agent("cql")
    spec = Spec(3, 2, domain, np.zeros(3, np.float32), np.ones(3, np.float32), (0.0, 100.0))
    cfg = resolve_config(cls, domain, False, {"hidden": "16,16", "cql_n_actions": "4", **over})
    torch.manual_seed(0)
    return cls(spec, cfg, seeds)


def _batch(S=2, B=5, O=3, A=2):
    g = torch.Generator().manual_seed(1)
    return Batch(obs=torch.randn(S, B, O, generator=g), action=torch.rand(S, B, A, generator=g) * 2 - 1,
                 reward=torch.randn(S, B, generator=g), next_obs=torch.randn(S, B, O, generator=g),
                 not_done=torch.ones(S, B))


@pytest.mark.parametrize("importance_sample", [True, False])
def test_conservative_gap_matches_a_row_by_row_reference(importance_sample):
    """logsumexp over {uniform, π(s), π(s')} actions at s (minus each sampler's log density with importance
    sampling; with Q(s, a_data) added without), minus Q(s, a_data): the agent's batched version equals
    one written per seed, critic and row with the same draws."""
    agent, b = _cql(cql_importance_sample=str(importance_sample).lower()), _batch()
    S, B, A, n = *b.action.shape, agent.cfg.cql_n_actions
    with torch.no_grad():
        q = agent.critic(b.obs, b.action)
        samples = agent.policy_samples(b)
        gap = agent.conservative_gap(b, q, samples)[0]                          # [S, 2, B]
        rand_a, cur_a, cur_logp, next_a, next_logp, _ = samples
        assert rand_a.abs().max() <= 1 and rand_a.shape == cur_a.shape == next_a.shape == (S, B * n, A)
        q_at_s = {name: agent.critic(repeat_rows(b.obs, n), a) for name, a in          # [S, 2, B·n] each
                  (("rand", rand_a), ("cur", cur_a), ("next", next_a))}
        expected = torch.empty(S, 2, B)
        for s in range(S):
            for i in range(2):
                for r in range(B):
                    rows = slice(r * n, (r + 1) * n)
                    def Q(name):
                        return q_at_s[name][s, i, rows]                          # [n]
                    if importance_sample:
                        terms = [Q("rand") - A * math.log(0.5), Q("cur") - cur_logp[s, rows],
                                 Q("next") - next_logp[s, rows]]
                    else:
                        terms = [Q("rand"), Q("cur"), Q("next"), q[s, i, r:r + 1]]
                    expected[s, i, r] = torch.logsumexp(torch.cat(terms), 0) - q[s, i, r]
    torch.testing.assert_close(gap, expected, rtol=1e-5, atol=1e-5)


def test_lagrange_multiplier_grows_while_the_gap_exceeds_its_target():
    agent = _cql("antmaze")
    assert agent.cfg.cql_lagrange and agent.cfg.cql_max_target_backup and agent.cfg.reward_transform == "cql_antmaze"
    start = agent.log_alpha_prime.detach().clone()
    agent.cfg.cql_target_action_gap = -1e3                  # any gap is above it: α' must grow
    for _ in range(3):
        agent.update(_batch())
    assert (agent.log_alpha_prime.detach() > start).all()
    agent.cfg.cql_target_action_gap = 1e3                   # now below it: α' must shrink
    agent.reset_optimizer("alpha_prime")                    # (Adam's momentum would carry it up one more step)
    up = agent.log_alpha_prime.detach().clone()
    agent.update(_batch())
    assert (agent.log_alpha_prime.detach() < up).all()


def test_online_alpha_switches_at_the_phase_hook():
    agent = _cql(cql_alpha_online="2.0")
    agent.start_phase(Phase("offline", 10, 10, 10))
    assert agent.cql_alpha == 10.0
    agent.start_phase(Phase("online", 10, 10, 10, previous="offline"))
    assert agent.cql_alpha == 2.0
    assert _cql().cql_alpha == 10.0 and (a := _cql()).start_phase(Phase("online", 1, 0, 1)) is None and a.cql_alpha == 10.0


def test_per_domain_settings_follow_corl():
    loco, ant = resolve_config(get_agent("cql"), "locomotion", False), resolve_config(get_agent("cql"), "antmaze", False)
    assert (loco.cql_alpha, loco.policy_lr, loco.normalize_obs, loco.cql_lagrange) == (10.0, 3e-5, True, False)
    assert (ant.cql_alpha, ant.policy_lr, ant.normalize_obs, ant.critic_layers) == (5.0, 1e-4, False, 5)
    assert (ant.cql_target_action_gap, ant.cql_clip_diff_min) == (0.8, -200.0)
    assert len(_cql("antmaze").critic.net.layers) == 6 and len(_cql("antmaze").actor.net.layers) == 3


# --- Cal-QL ---
def _calql(domain="locomotion", **over):
    cls = get_agent("cal_ql")
    spec = Spec(3, 2, domain, np.zeros(3, np.float32), np.ones(3, np.float32), (0.0, 100.0))
    cfg = resolve_config(cls, domain, False, {"hidden": "16,16", "cql_n_actions": "4", **over})
    torch.manual_seed(0)
    return cls(spec, cfg, 2)


def test_calql_mc_return_by_hand():
    rows = Rows(reward=np.array([1.0, 2.0, 3.0, 0.0, 0.0]), step=np.array([0, 1, 2, 0, 1]),
                episode=np.array([0, 0, 0, 1, 1]), terminal=np.array([0, 0, 1, 0, 0], bool), gamma=0.5)
    np.testing.assert_allclose(_calql().mc_return(rows), [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 0, 0])
    # antmaze: rewards 10r − 5; the all-zero (failed) episode is worth −5/(1 − γ), not its finite sum
    np.testing.assert_allclose(_calql("antmaze").mc_return(rows),
                               [5 + 0.5 * 15 + 0.25 * 25, 15 + 0.5 * 25, 25, -10.0, -10.0])


def test_calql_bound_reduces_to_cql_without_a_bound_and_lifts_policy_values_with_one():
    b = _batch()
    S, B, _, n = *b.action.shape, 4
    cql, calql = _cql(), _calql()                   # built from the same seed: the same weights
    assert all(torch.equal(x, y) for x, y in zip(cql.parameters(), calql.parameters()))
    with torch.no_grad():
        q = cql.critic(b.obs, b.action)
        gaps = {}
        samples = cql.policy_samples(b)
        for name, agent, bound in (("cql", cql, None), ("none", calql, -math.inf), ("high", calql, 1e3)):
            batch = b if bound is None else batch_type(("mc_return",))(*b, torch.full((S, B), bound))
            gaps[name] = agent.conservative_gap(batch, q, samples)
    torch.testing.assert_close(gaps["none"][0], gaps["cql"][0], rtol=0, atol=0)
    assert (gaps["none"][1]["bound_rate"] == 0).all() and (gaps["high"][1]["bound_rate"] == 1).all()
    with torch.no_grad():       # every π action now counts at 1e3: the log-sum-exp is dominated by them
        _, _, cur_logp, _, next_logp, _ = samples
        lse = torch.logsumexp(torch.cat([1e3 - cur_logp.view(S, B, n), 1e3 - next_logp.view(S, B, n)], -1), -1)
    torch.testing.assert_close(gaps["high"][0], lse[:, None] - q, rtol=1e-5, atol=1e-3)


def test_calql_fine_tunes_on_half_offline_batches():
    cls = get_agent("cal_ql")
    loop = resolve_loop(cls, "antmaze", True)
    assert (loop.buffer_mixing, loop.offline_fraction) == ("fixed", 0.5)
    assert resolve_loop(get_agent("cql"), "antmaze", True).buffer_mixing == "union"
    assert resolve_config(cls, "antmaze", True).sparse_reward

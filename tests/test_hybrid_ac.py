"""The deep hybrid actor-critic: the Q*-targeting backup, the actor's loss offline and online (optimism,
KL anchor), the rare-switching schedule with actor resets, the ablation flags, and exact resume with
switches in flight."""
import json

import numpy as np
import pytest
import torch

from offrl import OffrlError
from offrl.agent import Phase, Spec, get_agent, resolve_config, resolve_loop
from offrl.buffer import Batch
from offrl.trainer import RunConfig, Trainer

SMALL = {"hidden": "16,16", "batch_size": "8"}


def _agent(seeds=2, **over):
    cls = get_agent("hybrid_ac")
    spec = Spec(3, 2, "locomotion", np.zeros(3, np.float32), np.ones(3, np.float32), (0.0, 1.0))
    torch.manual_seed(0)
    return cls(spec, resolve_config(cls, "locomotion", True, {**SMALL, **over}), seeds)


def _batch(S=2, B=8):
    g = torch.Generator().manual_seed(3)
    return Batch(torch.randn(S, B, 3, generator=g), torch.rand(S, B, 2, generator=g) * 2 - 1,
                 torch.randn(S, B, generator=g), torch.randn(S, B, 3, generator=g), torch.ones(S, B))


def _online(agent, updates=100, offline=10):
    agent.num_updates = offline
    agent.start_phase(Phase("online", updates, offline, updates, previous="offline", updates=updates))


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_backup_is_the_max_over_candidate_actions_of_the_min_over_critics():
    agent, b = _agent(target_actions="3", num_critics="4"), _batch()
    draws = []
    real = torch.randn_like
    torch.randn_like = lambda x, **kw: draws.append(real(x, **kw)) or draws[-1]
    try:
        with torch.no_grad():
            y, _ = agent.next_q(b, None)
    finally:
        torch.randn_like = real
    noise = draws[-1].clamp(-0.5 / 0.2, 0.5 / 0.2) * 0.2             # [S, K−1, B, A]: σ 0.2 clipped at 0.5
    mode = agent.actor_target(b.next_obs)
    best = torch.full_like(b.reward, -torch.inf)
    with torch.no_grad():
        for k in range(3):                                          # member by member, candidate by candidate
            a = mode if k == 0 else (mode + noise[:, k - 1]).clamp(-1, 1)
            q_min = torch.stack([agent.critic_target(b.next_obs, a, ensemble=slice(i, i + 1))[:, 0] for i in range(4)]).min(0).values
            best = torch.maximum(best, q_min)
    torch.testing.assert_close(y, best)
    # the ablation: TD3's one smoothed action
    a, td3 = torch.rand_like(b.action), _agent(q_star_backup="false")
    torch.testing.assert_close(td3.next_q(b, a)[0], td3.critic_target(b.next_obs, a).min(1).values)


def test_offline_actor_loss_is_td3_bc_on_the_ensemble_mean():
    agent, b = _agent(), _batch()
    agent.phase = "offline"
    with torch.no_grad():
        pi = agent.actor(b.obs)
        q = agent.critic(b.obs, pi).mean(1)
        expected = (-2.5 / q.abs().mean(1, keepdim=True) * q + ((pi - b.action) ** 2).mean(-1)).mean(1)
    loss, m = agent.actor_loss(pi, b)
    torch.testing.assert_close(loss, expected)
    assert "beta" not in m and torch.equal(m["optimism_bonus"], torch.zeros(2))


def test_online_actor_loss_is_optimistic_on_the_frozen_critic_with_a_kl_anchor():
    agent, b = _agent(optimism="2.0", kl_coef="0.5"), _batch()
    _online(agent, updates=100, offline=10)
    agent.num_updates = 35                                          # 25 of 100 online updates: β = 2·0.75
    with torch.no_grad():                                           # the live critic moves; the frozen one is f̂
        for p in agent.critic.parameters():
            p.add_(1.0)
        pi = agent.actor(b.obs) + 0.1
        q = agent.critic_frozen(b.obs, pi)
        q_opt = q.mean(1) + 1.5 * q.std(1)
        anchor = agent.actor_anchor(b.obs)
        expected = (-2.5 / q_opt.abs().mean(1, keepdim=True) * q_opt + 0.5 * ((pi - anchor) ** 2).mean(-1)).mean(1)
    loss, m = agent.actor_loss(pi, b)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(m["beta"], torch.full((2,), 1.5))
    torch.testing.assert_close(m["optimism_bonus"], (1.5 * q.std(1)).mean(1))


def test_optimism_is_off_on_expert_data_and_needs_two_critics():
    cls = get_agent("hybrid_ac")
    assert resolve_config(cls, "locomotion", True, None, "hopper-medium-expert").optimism == 0
    assert resolve_config(cls, "locomotion", True, None, "hopper-medium-replay").optimism == 1.0
    assert resolve_loop(cls, "locomotion", True).buffer_mixing == "fixed"
    with pytest.raises(OffrlError, match="num_critics >= 2"):
        _agent(num_critics="1")


def test_rare_switching_refreshes_the_frozen_critic_and_resets_the_actor_on_a_doubling_schedule():
    agent, b = _agent(first_switch="4", md_every="3"), _batch()
    offline_actor = _params(agent.actor)
    _online(agent, updates=40)
    switched_at, frozen = [], _params(agent.critic_frozen)
    for k in range(40):
        before = agent.switch_count.clone()
        agent.update(b)
        if not torch.equal(agent.switch_count, before):
            switched_at.append(k + 1)       # the k-th update (0-based) completes k + 1 online updates
            assert not _same(frozen, _params(agent.critic_frozen))
            frozen = _params(agent.critic_frozen)
        else:
            assert _same(frozen, _params(agent.critic_frozen))      # f̂ stays frozen between switches
    assert switched_at == [4, 8, 16, 32] and agent.switch_count.tolist() == [4, 4]
    # at a switch the actor restarts from its end-of-offline weights, and f̂ is the live critic
    agent.num_updates = 10 + 63
    agent.before_update()
    assert _same(offline_actor, _params(agent.actor)) and _same(offline_actor, _params(agent.actor_anchor))
    assert _same(_params(agent.critic), _params(agent.critic_frozen))


def test_without_rare_switching_the_actor_follows_the_live_critic_and_is_never_reset():
    agent, b = _agent(rare_switching="false", md_every="3"), _batch()
    _online(agent, updates=20)
    for _ in range(12):
        agent.update(b)
    assert agent.switch_count.tolist() == [0, 0]
    pi = agent.actor(b.obs).detach()
    with torch.no_grad():
        q = agent.critic(b.obs, pi)
        q_opt = q.mean(1) + (1 - 12 / 20) * q.std(1)
    loss, _ = agent.actor_loss(pi, b)
    expected = (-2.5 / q_opt.abs().mean(1, keepdim=True) * q_opt + ((pi - agent.actor_anchor(b.obs)) ** 2).mean(-1)).mean(1)
    torch.testing.assert_close(loss, expected.detach())


def test_the_no_offline_critic_init_ablation_restarts_the_critics_online():
    agent = _agent(offline_critic_init="false")
    offline = _params(agent.critic)
    _online(agent)
    assert not _same(offline, _params(agent.critic))
    assert _same(_params(agent.critic), _params(agent.critic_target)) and _same(_params(agent.critic), _params(agent.critic_frozen))
    kept = _agent()
    offline = _params(kept.critic)
    _online(kept)
    assert _same(offline, _params(kept.critic))


def _records(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x]


def test_resume_with_switches_in_flight_equals_uninterrupted(pendulum_dataset, tmp_path):
    def run_cfg():
        return RunConfig(agent="hybrid_ac", dataset="pendulum", env="InvertedPendulum-v5", seeds=2, seed=5, steps=4,
                         online_steps=40, eval_episodes=0, log_every=1, checkpoint_every=1000,
                         agent_config={**SMALL, "first_switch": "4", "md_every": "3"})
    straight = Trainer(run_cfg(), tmp_path / "straight", progress=False, dataset=pendulum_dataset)
    straight.train()
    first = Trainer(run_cfg(), tmp_path / "resumed", progress=False, dataset=pendulum_dataset)
    assert first.train(until=4 + 13) is None                      # between the switches at 8 and 16
    second = Trainer(run_cfg(), tmp_path / "resumed", resume=True, progress=False, dataset=pendulum_dataset)
    second.train()
    a, b = _records(tmp_path / "straight"), _records(tmp_path / "resumed")
    assert a == b
    assert [r["switches"] for r in a if "switches" in r][-1] == [4.0, 4.0]
    sa, sb = straight.agent.state_dict()["nets"], second.agent.state_dict()["nets"]
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k

"""FamO2O: the β embedding and map, the balance model's tanh-Gaussian log-probability, the AWR weights'
clip, which step moves which network, uniform offline β, and the β diagnostics of a run."""
import json
import math

import numpy as np
import pytest
import torch

from offrl import OffrlError
from offrl.agent import Phase, Spec, get_agent, resolve_config
from offrl.algorithms.famo2o import BalanceModel, beta_embedding
from offrl.buffer import Batch
from offrl.trainer import RunConfig, Trainer

SMALL = {"hidden": "16,16", "batch_size": "8"}


def _agent(name="famo2o_iql", domain="locomotion", **over):
    cls = get_agent(name)
    spec = Spec(3, 2, domain, np.zeros(3, np.float32), np.ones(3, np.float32), (0.0, 100.0))
    torch.manual_seed(0)
    return cls(spec, resolve_config(cls, domain, False, {**SMALL, **over}), 2)


def _batch(S=2, B=8):
    g = torch.Generator().manual_seed(3)
    return Batch(torch.randn(S, B, 3, generator=g), torch.rand(S, B, 2, generator=g) * 2 - 1,
                 torch.randn(S, B, generator=g), torch.randn(S, B, 3, generator=g), torch.ones(S, B))


def test_embedding_values_for_known_betas():
    e = beta_embedding(torch.tensor([0.0, 1.0, 3.0]))
    torch.testing.assert_close(e[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    for k, beta in enumerate((1.0, 3.0), 1):
        f = [1.0, 10_000 ** (-2 / 6), 10_000 ** (-4 / 6)]                     # 1, 1/21.544, 1/464.16
        expected = [g(beta * fi) for fi in f for g in (math.sin, math.cos)]
        torch.testing.assert_close(e[k], torch.tensor(expected))
    assert abs(1 / (10_000 ** (-2 / 6)) - 21.544) < 1e-3 and abs(1 / (10_000 ** (-4 / 6)) - 464.16) < 1e-2


@pytest.mark.parametrize("name,domain,lo,hi", [("famo2o_iql", "locomotion", 1.0, 5.0), ("famo2o_iql", "antmaze", 8.0, 14.0),
                                               ("famo2o_awac", "locomotion", 1.0, 5.0), ("famo2o_awac", "antmaze", 8.0, 14.0),
                                               ("famo2o_cql", "locomotion", 0.5, 1.5)])
def test_beta_stays_inside_its_interval(name, domain, lo, hi):
    agent = _agent(name, domain)
    assert (agent.cfg.beta_low, agent.cfg.beta_high) == (lo, hi)
    u = torch.tensor([-1.0, -0.999999, 0.0, 0.999999, 1.0])
    beta = agent.to_beta(u)
    assert beta[0] == lo and beta[-1] == hi and beta[2] == (lo + hi) / 2
    with torch.no_grad():
        agent.balance.net.layers[-1].bias.fill_(50.0)                          # saturate the tanh
        b = _batch()
        sampled = agent.to_beta(agent.balance(b.obs)[0])
        acted = agent.to_beta(agent.balance(b.obs, deterministic=True)[0])
    assert ((sampled >= lo) & (sampled <= hi)).all() and ((acted >= lo) & (acted <= hi)).all()


def test_balance_log_prob_is_the_tanh_gaussian_density_and_stays_finite():
    torch.manual_seed(1)
    model = BalanceModel(3, 2, (8,))
    with torch.no_grad():
        model.log_std.fill_(-0.7)
    obs = torch.randn(2, 64, 3)
    torch.manual_seed(2)
    u, logp = model(obs)
    torch.manual_seed(2)
    mean = model.net(obs)
    x = mean + math.exp(-0.7) * torch.randn_like(mean)
    dist = torch.distributions.TransformedDistribution(torch.distributions.Normal(mean, math.exp(-0.7)),
                                                       [torch.distributions.TanhTransform()])
    torch.testing.assert_close(u, torch.tanh(x)[..., 0])
    gaussian = torch.distributions.Normal(mean, math.exp(-0.7)).log_prob(x)[..., 0]
    torch.testing.assert_close(logp, gaussian - torch.log1p(-torch.tanh(x[..., 0]) ** 2), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logp, dist.log_prob(torch.tanh(x))[..., 0], rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        model.net.layers[-1].bias.fill_(40.0)                                  # tanh(x) = 1 in float: still finite
    assert torch.isfinite(model(obs)[1]).all()


def test_awr_weights_are_clipped_at_100():
    agent, b = _agent(), _batch()
    with torch.no_grad():
        agent.critic_target.net.layers[-1].bias.fill_(1e4)                     # Q_t − V ≫ 0: exp(β·A) would overflow
    nb = agent.preprocess(b)
    torch.manual_seed(4)
    beta = agent.awr_beta(nb)                                                   # the update's first draw
    with torch.no_grad():                                                       # V and balance steps leave π_u as is
        expected = (-100.0 * agent.actor.log_prob(agent.conditioned(nb.obs, beta), nb.action)).mean(1)
    torch.manual_seed(4)
    m = agent.update(b)
    torch.testing.assert_close(m["awr_beta"], beta.mean(1))
    torch.testing.assert_close(m["actor_loss"], expected)


def test_the_cql_variant_fixes_the_codes_online_beta_map_behind_a_flag():
    fixed, code = _agent("famo2o_cql"), _agent("famo2o_cql", code_beta_map="true")
    u = torch.tensor([-0.999, 0.0, 0.999])
    torch.testing.assert_close(fixed.to_beta(u), torch.tensor([0.5005, 1.0, 1.4995]))
    torch.testing.assert_close(code.to_beta(u), torch.tensor([-0.499, 0.5, 1.499]))      # leaves [0.5, 1.5], goes negative
    assert (fixed.cfg.cql_alpha, fixed.cfg.critic_layernorm) == (1.0, True)             # the FamO2O config, not CQL's


def test_the_cql_variants_policy_loss_scales_q_by_beta():
    """α·log π_u(ã|s, β) − β·min Q(s, ã), ã ~ π_u(·|s, e(β)): the loss the update minimises, by hand."""
    agent, b = _agent("famo2o_cql"), _batch()
    nb, beta = agent.preprocess(b), torch.tensor([[0.6, 1.4] * 4, [1.0, 0.5] * 4])
    agent.awr_beta = lambda _: beta                                              # this update's β, fixed
    real_actor, calls, seen = agent.actor.forward, [], {}

    def actor(x, deterministic=False):     # calls: a', π(s) and π(s') samples, the balance step's, the policy step's
        calls.append(1)
        if len(calls) == 5:
            torch.manual_seed(11)
            with torch.no_grad():          # the policy step's sample and the loss by hand, on the same noise
                a, logp = real_actor(x)
                seen["expected"] = (agent.log_alpha.exp()[:, None] * logp - beta * agent.critic(nb.obs, a).min(1).values).mean(1)
            torch.manual_seed(11)
        return real_actor(x, deterministic)
    agent.actor.forward = actor
    m = agent.update(b)
    torch.testing.assert_close(m["actor_loss"], seen["expected"])


@pytest.mark.parametrize("name", ["famo2o_iql", "famo2o_awac", "famo2o_cql"])
def test_the_balance_model_moves_only_in_its_own_step_and_does_not_move_the_policy(name):
    agent, b = _agent(name, balance_every="2"), _batch()
    steps = []
    minimize = agent.minimize

    def spy(opt, loss):
        balance = [p.clone() for p in agent.balance.parameters()]
        policy = [p.clone() for p in agent.actor.parameters()]
        minimize(opt, loss)
        moved_balance = not all(torch.equal(x, y) for x, y in zip(balance, agent.balance.parameters()))
        moved_policy = not all(torch.equal(x, y) for x, y in zip(policy, agent.actor.parameters()))
        steps.append((opt, moved_balance, moved_policy))
    agent.minimize = spy
    agent.update(b)                                                             # update 0: a balance step
    agent.update(b)                                                             # update 1: none
    for opt, moved_balance, moved_policy in steps:
        assert moved_balance == (opt == "balance"), (opt, steps)
        if opt in ("balance", "balance_alpha"):
            assert not moved_policy
    assert [s[0] for s in steps].count("balance") == 1


def test_offline_beta_is_uniform_on_its_interval_and_online_beta_comes_from_the_balance_model():
    agent = _agent()
    agent.phase = "offline"
    torch.manual_seed(0)
    beta = agent.awr_beta(Batch(*(t.expand(2, 20_000, *t.shape[2:]) for t in _batch(B=1)))).flatten().sort().values
    ks = (torch.arange(1, len(beta) + 1) / len(beta) - (beta - 1.0) / 4.0).abs().max()
    assert ks < 1.36 / math.sqrt(len(beta))                                     # Kolmogorov–Smirnov at 5%
    assert beta.min() >= 1.0 and beta.max() <= 5.0
    agent.start_phase(Phase("online", 10, 10, 10, previous="offline"))
    b = _batch()
    torch.manual_seed(7)
    online = agent.awr_beta(b)
    torch.manual_seed(7)
    torch.testing.assert_close(online, agent.to_beta(agent.balance(b.obs)[0]).detach())


def test_bad_beta_interval_is_refused():
    with pytest.raises(OffrlError, match="beta_low"):
        _agent(beta_low="5", beta_high="1")


def test_a_run_logs_the_chosen_beta_distribution(pendulum_dataset, tmp_path):
    run = RunConfig(agent="famo2o_iql", dataset="pendulum", env="InvertedPendulum-v5", seeds=2, steps=6, online_steps=20,
                    eval_every=13, eval_episodes=1, log_every=5, agent_config=dict(SMALL))
    result = Trainer(run, tmp_path / "run", progress=False, dataset=pendulum_dataset).train()
    d = result["diagnostics"]["beta"]
    assert len(d["mean"]) == 2 and all(1.0 <= x <= 5.0 for x in d["q10"] + d["q90"])
    assert [sum(c) for c in d["hist_counts"]] == [1024, 1024]
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert len(evals) >= 2 and all("beta" in e["diagnostics"] for e in evals)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"histograms": 0})
    acc.Reload()
    assert "diagnostics/beta/seed0" in acc.Tags()["histograms"]
    plain = RunConfig(agent="iql", dataset="pendulum", env="InvertedPendulum-v5", seeds=1, steps=4, eval_episodes=1,
                      agent_config=dict(SMALL))
    assert "diagnostics" not in Trainer(plain, tmp_path / "iql", progress=False, dataset=pendulum_dataset).train()

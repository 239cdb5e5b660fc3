"""Member-axis layers and the device buffer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from offrl import OffrlError
from offrl.buffer import Buffer, Mixing, NStep, n_step_transitions, past_returns
from offrl.data.dataset import Dataset, Episode
from offrl.nets import MLP, Critic, GaussianActor, Linear, TanhGaussianActor, per_seed_mean


def test_member_linear_equals_independent_layers():
    torch.manual_seed(0)
    layer = Linear(5, 3, members=(2, 4))
    x = torch.randn(2, 4, 7, 5)
    y = layer(x)
    for s in range(2):
        for n in range(4):
            ref = x[s, n] @ layer.weight[s, n] + layer.bias[s, n]
            torch.testing.assert_close(y[s, n], ref)
    bound = 1 / math.sqrt(5)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    assert not torch.equal(layer.weight[0, 0], layer.weight[0, 1])        # members initialised independently
    ortho = Linear(8, 8, members=(3,), init="orthogonal", gain=2.0)
    for m in range(3):
        torch.testing.assert_close(ortho.weight[m].T @ ortho.weight[m], 4 * torch.eye(8), atol=1e-5, rtol=0)
    assert (ortho.bias == 0).all()


def test_critic_ensemble_subset_and_shapes():
    torch.manual_seed(0)
    critic = Critic(3, 2, members=(2, 5), hidden=(16,), layernorm=True)
    obs, act = torch.randn(2, 9, 3), torch.randn(2, 9, 2)
    q = critic(obs, act)
    assert q.shape == (2, 5, 9)
    torch.testing.assert_close(critic(obs, act, ensemble=slice(0, 1)), q[:, :1])
    torch.testing.assert_close(critic(obs, act, ensemble=slice(2, 4)), q[:, 2:4])
    mlp = MLP(3, 1, (2,), hidden=(8,), dropout=0.5)
    mlp.eval()
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(mlp(x), mlp(x))


def test_actor_log_probs_match_torch_distributions():
    torch.manual_seed(0)
    actor = GaussianActor(3, 2, members=(2,), hidden=(8,))
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([[[-0.5, 0.3]], [[0.1, -7.0]]]))     # the second clips to −5
    obs, act = torch.randn(2, 6, 3), torch.rand(2, 6, 2) * 2 - 1
    mean, log_std = actor(obs)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(act).sum(-1)
    torch.testing.assert_close(actor.log_prob(obs, act), ref)
    assert log_std.min() == -5.0
    sac = TanhGaussianActor(3, 2, members=(2,), hidden=(8,))
    torch.manual_seed(1)
    a, logp = sac(obs)
    torch.manual_seed(1)
    mean, log_std = sac.net(obs).split(2, -1)
    base = torch.distributions.Normal(mean, log_std.clamp(-20, 2).exp())
    u = base.rsample()
    ref = base.log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2).sum(-1)
    torch.testing.assert_close(a, torch.tanh(u))
    torch.testing.assert_close(logp, ref, atol=1e-4, rtol=1e-4)


def test_per_seed_mean_never_mixes_seeds():
    x = torch.tensor([[[1.0, 3.0]], [[10.0, 30.0]]])
    assert per_seed_mean(x).tolist() == [2.0, 20.0]


def test_buffer_samples_independent_indices_per_seed(pendulum_dataset):
    buf = Buffer(pendulum_dataset, seeds=3, seed=0)
    b = buf.sample(64)
    assert b.obs.shape == (3, 64, 4) and b.action.shape == (3, 64, 1) and b.reward.shape == (3, 64)
    assert not torch.equal(b.obs[0], b.obs[1])
    # every sampled row is a real transition of the dataset, with not_done = 1 − terminal
    rows = {tuple(o) + (float(r),): float(nd) for o, r, nd in
            zip(pendulum_dataset.observations.tolist(), pendulum_dataset.rewards.tolist(),
                (~pendulum_dataset.terminals).astype(float).tolist())}
    for s in range(3):
        for i in range(64):
            key = tuple(b.obs[s, i].tolist()) + (float(b.reward[s, i]),)
            assert rows[key] == float(b.not_done[s, i])


def test_n_step_rows_and_past_returns_match_a_per_episode_loop():
    rng = np.random.default_rng(0)
    episodes = []
    for T, terminated in [(5, True), (3, False), (1, True), (7, False), (2, False)]:
        end = np.zeros(T, bool)
        end[-1] = True
        episodes.append(Episode(rng.normal(size=(T + 1, 2)).astype(np.float32), rng.normal(size=(T, 1)).astype(np.float32),
                                rng.normal(size=T).astype(np.float32), end & terminated, end & (not terminated)))
    data = Dataset.from_episodes(episodes)
    n, gamma = 3, 0.9
    reward, next_obs, terminal, horizon = n_step_transitions(data, n, gamma)
    elapsed, past = past_returns(data, gamma)
    i = 0
    for ep in episodes:
        T = len(ep.actions)
        for t in range(T):
            m = min(n, T - t)
            assert elapsed[i] == t and past[i] == pytest.approx(sum(gamma ** k * float(ep.rewards[k]) for k in range(t)))
            assert horizon[i] == m and terminal[i] == ep.terminations[t + m - 1]
            assert reward[i] == pytest.approx(sum(gamma ** k * float(ep.rewards[t + k]) for k in range(m)), abs=1e-6)
            np.testing.assert_array_equal(next_obs[i], ep.observations[t + m])
            i += 1
    # n = 1 is the one-step data; the buffer's horizon column says how many steps each row spans
    r1, o1, d1, h1 = n_step_transitions(data, 1, gamma)
    np.testing.assert_array_equal(o1, data.next_observations)
    assert (h1 == 1).all() and np.allclose(r1, data.rewards) and (d1 == data.terminals).all()
    b = Buffer(data, seeds=2, seed=0, columns=(NStep(n),), gamma=gamma).sample(32)
    assert set(b.horizon.unique().tolist()) <= {1.0, 2.0, 3.0} and not hasattr(Buffer(data, 2).sample(8), "horizon")
    with pytest.raises(OffrlError, match="n_step must be"):
        n_step_transitions(data, 0, gamma)


def _online_buffer(dataset, mixing, S=2, C=50):
    buf = Buffer(dataset, S, online_capacity=C, mixing=mixing, seed=0)
    for t in range(C + 10):                      # wraps the FIFO
        v = torch.full((S, 4), 1000.0 + t)
        buf.add(v, torch.zeros(S, 1), torch.full((S,), -1.0), v + 1, torch.zeros(S))
    return buf


@pytest.mark.parametrize("scheme,expected_offline", [("fixed", 0.25), ("annealed", 0.5), ("union", None)])
def test_mixed_sampler_schemes(pendulum_dataset, scheme, expected_offline):
    mix = Mixing(scheme, offline_fraction=0.25 if scheme == "fixed" else 0.9, floor=0.1, anneal_steps=75)
    buf = _online_buffer(pendulum_dataset, mix)
    assert buf.online_size == 50 and buf.online_added == 60
    b = buf.sample(1000)
    online = b.reward == -1.0
    assert online.shape == (2, 1000)
    frac_offline = 1 - online.float().mean().item()
    if scheme == "union":                       # uniform over 6501 offline + 50 online rows
        assert frac_offline == pytest.approx(6501 / 6551, abs=0.01)
    else:                                       # annealed: 0.9 → 0.1 over 75 steps, at 60: 0.26
        expected = expected_offline if scheme == "fixed" else 0.9 + (60 / 75) * (0.1 - 0.9)
        assert frac_offline == pytest.approx(expected, abs=1e-3)
    # online rows hold only the last 50 transitions written
    assert b.obs[online].min() >= 1010.0


def test_buffer_state_roundtrip_and_errors(pendulum_dataset):
    buf = _online_buffer(pendulum_dataset, Mixing("fixed", 0.5))
    clone = Buffer(pendulum_dataset, 2, online_capacity=50, mixing=Mixing("fixed", 0.5), seed=123)
    clone.load_state_dict(buf.state_dict())
    a, b = buf.sample(32), clone.sample(32)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    with pytest.raises(OffrlError, match="mixing"):
        Mixing("blend")
    with pytest.raises(OffrlError, match="no online part"):
        Buffer(pendulum_dataset, 1).add(*[torch.zeros(1, 4)] * 2, torch.zeros(1), torch.zeros(1, 4), torch.zeros(1))

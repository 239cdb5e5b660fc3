"""Policy-guided diffusion's parts: windows and their round trip, the U-Net's size, the σ schedule and
churn, EDM's preconditioning limit, λ = 0 equal to the unguided sampler, guidance raising log π, the
agents' policy log-likelihoods, and bad input."""
import math

import numpy as np
import pytest
import torch

from offrl import OffrlError
from offrl.agent import REGISTRY, Spec, load_builtins, resolve_config
from offrl.data import Dataset
from offrl.data.dataset import Episode
from offrl.diffusion import (Diffusion, EDMConfig, churn, decode, guidance_weight, make_windows, preconditioning,
                             sigma_schedule, timestep_vectors, window_starts)
from offrl.diffusion.unet import TemporalUNet

load_builtins()
TINY = EDMConfig(features=16, length=16, train_steps=300, batch_size=32, sample_steps=12)


@pytest.fixture(scope="module")
def trained(pendulum_dataset):
    model = Diffusion(make_windows(pendulum_dataset, length=16, stride=8), TINY, seed=0)
    for _ in range(TINY.train_steps):
        model.train_step()
    return model


def test_window_rules_stride_terminal_and_time_limit():
    assert window_starts(40, False, 16, 8) == [0, 8, 16]           # 24 would end at the time limit: dropped
    assert window_starts(41, True, 16, 8) == [0, 8, 16, 24, 25]     # plus the window ending at the terminal
    assert window_starts(10, True, 16, 8) == []
    rng = np.random.default_rng(0)
    eps = [Episode(rng.normal(size=(T + 1, 3)), rng.uniform(-1, 1, (T, 2)), rng.normal(size=T),
                   np.arange(T) == T - 1 if term else np.zeros(T, bool), np.zeros(T, bool) if term else np.arange(T) == T - 1)
           for T, term in [(40, False), (41, True), (20, True)]]
    w = make_windows(Dataset.from_episodes(eps, name="t"), length=16, stride=8, holdout=0.0)
    assert len(w.train) == 3 + 5 + 2                                # the 20-step episode: [0] and [4] (terminal)
    done = w.normalizer.unnormalize(w.train)[..., -1]
    assert (np.abs(done[:, :-1]) < 1e-9).all()                      # terminal only ever at the last position
    assert np.isclose(done[:, -1], 1.0).sum() == 2


def test_normalisation_atanh_tanh_round_trip(pendulum_dataset):
    w = make_windows(pendulum_dataset, length=16, stride=8, holdout=0.0)
    v = timestep_vectors(pendulum_dataset)
    torch.testing.assert_close(w.normalizer.unnormalize(w.normalizer.normalize(v)), v)
    first = decode(w.train[0], w.normalizer, w.obs_dim, w.act_dim)  # the first window: the dataset's first 16 rows
    np.testing.assert_allclose(first["obs"], pendulum_dataset.observations[:15], atol=1e-5)
    np.testing.assert_allclose(first["next_obs"], pendulum_dataset.next_observations[:15], atol=1e-5)
    np.testing.assert_allclose(first["action"], np.clip(pendulum_dataset.actions[:15], -0.999, 0.999), atol=1e-5)
    np.testing.assert_allclose(first["reward"], pendulum_dataset.rewards[:15], atol=1e-5)
    assert not first["terminal"].any()


def test_unet_sizes_match_the_reference_and_it_takes_any_length():
    counts = {f: sum(p.numel() for p in TemporalUNet(25, f).parameters()) for f in (64, 128)}
    assert round(counts[64] / 1e6, 2) == 0.70 and round(counts[128] / 1e6, 2) == 2.80
    net = TemporalUNet(7, 16)
    for L in (16, 33, 129):
        assert net(torch.randn(2, L, 7), torch.zeros(2)).shape == (2, L, 7)


def test_sigma_schedule_churn_and_guidance_weights():
    cfg = EDMConfig()
    s = sigma_schedule(cfg)
    assert len(s) == 257 and s[0] == pytest.approx(80.0) and s[-2] == pytest.approx(0.002) and s[-1] == 0
    assert (s[:-1].diff() < 0).all()
    assert churn(cfg, 10.0, 256) == pytest.approx(0.3125) and churn(cfg, 60.0, 256) == 0 and churn(cfg, 0.01, 256) == 0
    assert churn(cfg, 10.0, 32) == pytest.approx(math.sqrt(2) - 1)
    assert guidance_weight(0, 10, 2.0) == pytest.approx(2.0 * (1 + 0.3 * math.sin(math.pi / 10)))
    assert guidance_weight(9, 10, 2.0) == 0 and guidance_weight(3, 10, 0.0) == 0


def test_preconditioning_is_the_identity_as_sigma_goes_to_zero(trained):
    c_skip, c_out, c_in, _ = preconditioning(torch.tensor([1e-6, 1.0]), 1.0)
    assert c_skip[0] == pytest.approx(1.0) and c_out[0] == pytest.approx(1e-6) and c_in[1] == pytest.approx(2 ** -0.5)
    x = torch.randn(3, 16, trained.windows.dim)
    torch.testing.assert_close(trained.denoise(x, torch.full((3,), 1e-7)), x, atol=1e-5, rtol=0)


def test_lambda_zero_equals_the_unguided_sampler(trained):
    pull = lambda obs, a: -((a - 0.5) ** 2).sum(-1)                 # noqa: E731
    plain = trained.sample(2, 8, generator=torch.Generator().manual_seed(3))
    zero = trained.sample(2, 8, generator=torch.Generator().manual_seed(3), log_likelihood=pull, coef=0.0)
    assert torch.equal(plain, zero)
    with pytest.raises(OffrlError, match="log-likelihood"):
        trained.sample(1, 2, coef=1.0)


def test_guidance_raises_the_policys_log_likelihood_of_generated_actions(trained):
    w = trained.windows
    agent_cls = REGISTRY["iql"]
    spec = Spec(w.obs_dim, w.act_dim, "classic", return_range=(0.0, 1.0))
    torch.manual_seed(0)
    agent = agent_cls(spec, resolve_config(agent_cls, "classic", False, {"hidden": "16,16"}), 2)
    with torch.no_grad():
        agent.actor.net.layers[-1].bias.fill_(0.5)                  # a policy that prefers a ≈ tanh(0.5)
        agent.actor.log_std.fill_(-1.5)

    def mean_log_pi(x):
        tr = decode(x.numpy(), w.normalizer, w.obs_dim, w.act_dim)
        with torch.no_grad():
            return agent.action_log_likelihood(torch.as_tensor(tr["obs"]).reshape(2, -1, w.obs_dim),
                                               torch.as_tensor(tr["action"]).reshape(2, -1, w.act_dim)).mean(1)
    plain = trained.sample(2, 32, generator=torch.Generator().manual_seed(5))
    guided = trained.sample(2, 32, generator=torch.Generator().manual_seed(5), log_likelihood=agent.action_log_likelihood, coef=0.05)
    assert (mean_log_pi(guided) > mean_log_pi(plain) + 0.5).all(), (mean_log_pi(plain), mean_log_pi(guided))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_agent_gives_a_policy_log_likelihood_or_says_why_not(name):
    cls = REGISTRY[name]
    spec = Spec(3, 2, "classic", np.zeros(3, np.float32), np.ones(3, np.float32), (0.0, 1.0))
    torch.manual_seed(0)
    agent = cls(spec, resolve_config(cls, "classic", False, {"hidden": "16,16"} if "hidden" in cls.Config.__dataclass_fields__ else {}), 2)
    obs, action = torch.randn(2, 5, 3), (torch.rand(2, 5, 2) * 2 - 1).requires_grad_(True)
    try:
        ll = agent.action_log_likelihood(obs, action)
    except OffrlError as e:
        assert "policy log-likelihood" in str(e) and name in ("bc", "stock_ac") or name.startswith("plugin")
        return
    assert ll.shape == (2, 5) and torch.isfinite(ll).all()
    grad, = torch.autograd.grad(ll.sum(), action)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_tanh_gaussian_log_prob_matches_its_own_samples():
    from offrl.nets import TanhGaussianActor
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, (2,), (8,), log_std_offset=-1.0)
    obs = torch.randn(2, 6, 3)
    torch.manual_seed(1)
    a, logp = actor(obs)
    torch.testing.assert_close(actor.log_prob(obs, a, clip=1 - 1e-7), logp, rtol=1e-3, atol=1e-3)


def test_a_checkpoint_of_another_dataset_and_a_horizon_beyond_the_episodes_are_refused(trained, pendulum_dataset):
    other = Dataset.from_episodes(pendulum_dataset.to_episodes()[:6], name="other")
    fresh = Diffusion(make_windows(other, length=16, stride=8), TINY)
    with pytest.raises(OffrlError, match="another dataset"):
        fresh.load_state_dict(trained.state_dict())
    longest = int(np.bincount(pendulum_dataset.episode).max())
    with pytest.raises(OffrlError, match=f"at most {longest}"):
        make_windows(pendulum_dataset, length=longest + 1)

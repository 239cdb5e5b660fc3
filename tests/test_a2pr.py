"""A2PR: the advantage-filtered VAE, the advantage-selected regularisation target and its weights, λ, the
targets' cadence, V's target, state normalisation, and the per-dataset table."""
import numpy as np
import torch

from offrl.agent import Spec, get_agent, resolve_config
from offrl.algorithms.a2pr import regularisation_target
from offrl.buffer import Batch
from offrl.envs import dataset_level

SMALL = {"hidden": "16,16", "actor_hidden": "16,16", "vae_hidden": "24,24", "batch_size": "8"}


def _agent(**over):
    cls = get_agent("a2pr")
    spec = Spec(3, 2, "locomotion", np.array([0.5, -1.0, 2.0], np.float32), np.array([2.0, 0.5, 1.0], np.float32), (0.0, 1.0))
    torch.manual_seed(0)
    return cls(spec, resolve_config(cls, "locomotion", False, {**SMALL, **over}), 2)


def _batch(S=2, B=8):
    g = torch.Generator().manual_seed(3)
    return Batch(torch.randn(S, B, 3, generator=g), torch.rand(S, B, 2, generator=g) * 2 - 1,
                 torch.randn(S, B, generator=g), torch.randn(S, B, 3, generator=g), torch.ones(S, B))


def test_target_is_the_higher_advantage_action_and_weights_are_0_m_or_2m():
    adv_vae = torch.tensor([[1.0, -2.0, 0.0, -1.0, 3.0]])
    adv_data = torch.tensor([[0.5, 1.0, -1.0, -0.5, 3.0]])
    a_vae, action = torch.full((1, 5, 2), 0.5), torch.full((1, 5, 2), -0.25)
    target, weight, use_vae = regularisation_target(adv_vae, adv_data, a_vae, action, 0.4)
    assert use_vae.tolist() == [[True, False, True, False, True]]          # ties go to the VAE action (≥)
    assert target[0, :, 0].tolist() == [0.5, -0.25, 0.5, -0.25, 0.5]
    torch.testing.assert_close(weight, torch.tensor([[0.8, 0.4, 0.4, 0.0, 0.8]]))   # 1{A_vae ≥ 0} + 1{A_data > 0}
    _, chosen, _ = regularisation_target(adv_vae, adv_data, a_vae, action, 0.4, weight_sum=False)
    torch.testing.assert_close(chosen, torch.tensor([[0.4, 0.4, 0.4, 0.0, 0.4]]))   # m·1{A(a*) ≥ 0}
    assert len(weight.unique()) == 3                                        # {0, m, 2m}


def test_a_huge_value_filters_every_sample_out_of_the_vae_reconstruction():
    agent, b = _agent(), _batch()
    with torch.no_grad():
        agent.value.net.layers[-1].bias.fill_(1e6)                         # V ≫ Q everywhere: no positive advantage
    m = agent.update(b)
    assert torch.equal(m["vae_recon"], torch.zeros(2)) and torch.equal(m["positive_frac"], torch.zeros(2))
    assert (m["vae_kl"] > 0).all()                                          # the KL is not filtered
    assert torch.equal(m["reg_weight"], torch.zeros(2))                     # and the actor is not regularised


def test_value_target_is_the_min_of_two_td_targets_with_the_updated_critic():
    agent, b = _agent(), _batch()
    nb = agent.preprocess(b)
    torch.manual_seed(5)
    with torch.no_grad():
        noise = (torch.randn_like(nb.action) * 0.2).clamp(-0.5, 0.5)
        next_a = (agent.actor_target(nb.next_obs) + noise).clamp(-1, 1)
        y = nb.reward + 0.99 * agent.critic_target(nb.next_obs, next_a).min(1).values
        v0 = agent.value(nb.obs)
    torch.manual_seed(5)
    critic_step = agent.minimize
    seen = {}

    def spy(name, loss):                                 # V's loss is computed right after the critic's step
        if name == "value":
            with torch.no_grad():
                y_v = torch.minimum(y, nb.reward + 0.99 * agent.critic(nb.next_obs, next_a).min(1).values)
            seen["expected"] = ((v0 - y_v) ** 2).mean(1)
            seen["loss"] = loss.detach()
        critic_step(name, loss)
    agent.minimize = spy
    agent.update(b)
    torch.testing.assert_close(seen["loss"], seen["expected"])


def test_actor_loss_lambda_and_targets_move_only_on_actor_steps():
    agent, b = _agent(alpha="4.0"), _batch()
    nb = agent.preprocess(b)
    targets = [p.clone() for p in [*agent.actor_target.parameters(), *agent.critic_target.parameters()]]
    m0 = agent.update(b)                                                    # step 0: actor step
    moved = [p.clone() for p in [*agent.actor_target.parameters(), *agent.critic_target.parameters()]]
    assert "actor_loss" in m0 and not all(torch.equal(x, y) for x, y in zip(targets, moved))
    m1 = agent.update(b)                                                    # step 1: critic, V, VAE only
    assert "actor_loss" not in m1
    assert all(torch.equal(x, y) for x, y in zip(moved, [*agent.actor_target.parameters(), *agent.critic_target.parameters()]))
    # the loss by hand at this state, with the same VAE noise
    with torch.no_grad():
        pi = agent.actor(nb.obs)
        q1 = agent.critic(nb.obs, pi)[:, 0]
        torch.manual_seed(9)
        a_vae = agent.vae(nb.obs, pi)[0]
        v = agent.value(nb.obs)
        target, weight, _ = regularisation_target(agent.critic(nb.obs, a_vae)[:, 0] - v, agent.critic(nb.obs, nb.action)[:, 0] - v,
                                                  a_vae, nb.action, agent.cfg.mask)
        expected = (-4.0 / q1.abs().mean(1, keepdim=True) * q1).mean(1) + (weight[..., None] * (pi - target) ** 2).mean((1, 2))
        torch.manual_seed(9)
        loss, _ = agent.actor_loss(pi, nb)
    torch.testing.assert_close(loss, expected)


def test_the_target_gradient_runs_through_the_vae_unless_detached():
    grads = {}
    for detach in (False, True):
        agent, b = _agent(detach_target=str(detach), mask="5.0"), _batch()
        nb = agent.preprocess(b)
        with torch.no_grad():
            agent.value.net.layers[-1].bias.fill_(-1e6)                     # every advantage positive: weight 2m, a* = ã_π or a
        torch.manual_seed(2)
        loss, _ = agent.actor_loss(agent.actor(nb.obs), nb)
        agent.actor.zero_grad()
        loss.sum().backward()
        grads[detach] = [p.grad.clone() for p in agent.actor.parameters()]
    assert not all(torch.allclose(x, y) for x, y in zip(grads[False], grads[True]))


def test_states_are_normalised_alike_in_training_and_acting():
    agent, b = _agent(), _batch()
    mean, std = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([2.0, 0.5, 1.0])
    torch.testing.assert_close(agent.preprocess(b).obs, (b.obs - mean) / std)
    with torch.no_grad():
        torch.testing.assert_close(agent.act(b.obs), agent.actor((b.obs - mean) / std))


def test_per_dataset_settings_reach_d4rl_and_zoo_names():
    cls = get_agent("a2pr")
    for name in ("halfcheetah-medium-replay-v2", "offrl/halfcheetah/medium-replay-v0", "mujoco/halfcheetah/medium-replay-v0"):
        cfg = resolve_config(cls, "locomotion", False, None, dataset_level(name))
        assert (cfg.alpha, cfg.vae_weight, cfg.mask, cfg.gamma) == (40.0, 1.5, 0.8, 0.995), name
    cfg = resolve_config(cls, "locomotion", False, None, dataset_level("hopper-medium-expert-v2"))
    assert (cfg.alpha, cfg.mask, cfg.gamma) == (2.5, 4.0, 0.99)
    assert resolve_config(cls, "locomotion", False).mask == 1.0            # unlisted datasets: the defaults

"""ReBRAC: LayerNorm after the ReLU, the critic target's BC penalty on the dataset's next action, the
actor's min-Q normalisation, and the O2O settings."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from offrl.agent import Phase, Spec, get_agent, resolve_config, resolve_loop
from offrl.buffer import batch_type
from offrl.nets import MLP


def test_layernorm_after_relu_is_ln_of_relu():
    torch.manual_seed(0)
    net = MLP(3, 2, (2,), (8,), layernorm="after_relu", ln_eps=1e-6)
    x = torch.randn(2, 5, 3)
    h = F.layer_norm(F.relu(net.layers[0](x)), (8,), eps=1e-6) * net.norms[0].weight + net.norms[0].bias
    torch.testing.assert_close(net(x), net.layers[1](h))


def _agent(**over):
    cls = get_agent("rebrac")
    spec = Spec(3, 2, "locomotion", np.zeros(3, np.float32), np.ones(3, np.float32), (0.0, 1.0))
    torch.manual_seed(0)
    return cls(spec, resolve_config(cls, "locomotion", False, {"hidden": "16,16", **over}), 2)


def _batch(S=2, B=8):
    g = torch.Generator().manual_seed(3)
    return batch_type(("next_action",))(torch.randn(S, B, 3, generator=g), torch.rand(S, B, 2, generator=g) * 2 - 1,
                                        torch.randn(S, B, generator=g), torch.randn(S, B, 3, generator=g),
                                        torch.ones(S, B), torch.rand(S, B, 2, generator=g) * 2 - 1)


def test_target_penalises_distance_to_the_dataset_next_action():
    agent, b = _agent(critic_bc_coef="0.5"), _batch()
    with torch.no_grad():
        torch.manual_seed(7)
        noise = (torch.randn_like(b.action) * 0.2).clamp(-0.5, 0.5)
        next_a = (agent.actor_target(b.next_obs) + noise).clamp(-1, 1)
        penalty = ((next_a - b.next_action) ** 2).sum(-1)
        y = b.reward + 0.99 * (agent.critic_target(b.next_obs, next_a).min(1).values - 0.5 * penalty)
        q = agent.critic(b.obs, b.action)
    torch.manual_seed(7)
    m = agent.update(b)
    torch.testing.assert_close(m["target_bc_penalty"], penalty.mean(1))
    torch.testing.assert_close(m["critic_loss"], ((q - y[:, None]) ** 2).mean(-1).sum(1))


def test_actor_loss_is_bc_minus_normalised_min_q():
    """β₁ Σ(π(s) − a)² − min_i Q_i(s, π(s)) / mean|min Q|, with the critics of this step (updated first)."""
    agent, b = _agent(actor_bc_coef="0.3"), _batch()
    with torch.no_grad():
        pi = agent.actor(b.obs)                                        # the actor before the step
    m = agent.update(b)                                                # step 0: critic, then actor
    with torch.no_grad():
        q_pi = agent.critic(b.obs, pi).min(1).values                   # the critic after its step
        expected = (0.3 * ((pi - b.action) ** 2).sum(-1) - q_pi / q_pi.abs().mean(1, keepdim=True)).mean(1)
    torch.testing.assert_close(m["actor_loss"], expected, rtol=1e-5, atol=1e-6)
    assert "actor_loss" not in agent.update(b)                         # step 1: critic only (policy_freq 2)


def test_o2o_uses_half_offline_batches_and_can_reset_optimizers():
    cls = get_agent("rebrac")
    loop = resolve_loop(cls, "locomotion", True)
    assert (loop.buffer_mixing, loop.offline_fraction) == ("fixed", 0.5)
    agent, b = _agent(reset_optimizers="true"), _batch()
    agent.update(b)
    assert agent.optimizers["critic"].state
    agent.start_phase(Phase("online", 10, 10, 10, previous="offline"))
    assert not agent.optimizers["critic"].state and not agent.optimizers["actor"].state


def test_online_decays_the_actor_bc_weight_linearly_and_drops_the_critic_one():
    """The official fine-tuning schedule: after k of K online updates β₁·max(floor, 1 − k/K); β₂ = 0."""
    agent, b = _agent(actor_bc_coef="0.4", critic_bc_coef="0.5", min_bc_decay="0.25"), _batch()
    for _ in range(3):
        agent.update(b)
    assert agent.bc_coefs() == (0.4, 0.5)                              # offline: the configured values
    agent.start_phase(Phase("online", 10, 3, 10, previous="offline", updates=4))
    seen = []
    for _ in range(6):
        beta1, beta2 = agent.bc_coefs()
        assert beta1.shape == (2, 1)
        seen.append(round(float(beta1[0, 0]), 6))
        assert beta2 == 0.0
        agent.update(b)
    assert seen == [0.4, 0.3, 0.2, 0.1, 0.1, 0.1]                      # 1, 3/4, 1/2, then the floor 1/4
    state = agent.state_dict()
    fresh = _agent(actor_bc_coef="0.4", critic_bc_coef="0.5", min_bc_decay="0.25")
    fresh.load_state_dict(state)
    assert fresh.bc_coefs()[0].flatten().tolist() == pytest.approx([0.1, 0.1])            # the schedule survives a checkpoint
    off = _agent(online_bc_decay="false", actor_bc_coef="0.4")
    off.start_phase(Phase("online", 10, 3, 10, previous="offline", updates=4))
    assert off.bc_coefs() == (0.4, 0.01)


def test_the_saturation_diagnostic_reads_the_actors_pre_tanh_output_per_seed():
    """TD3-family agents report |u| (pre-tanh, mean over action dims) at the probe states: the symptom of a
    dead seed (results/zoo: ReBRAC on halfcheetah-medium-replay), here forced on seed 1 only."""
    agent = _agent()
    obs = torch.randn(2, 5, 3)
    with torch.no_grad():
        u = agent.actor.net(agent.normalize(obs))
        torch.testing.assert_close(agent.diagnostics(obs)["actor_preact_abs"], u.abs().mean(-1))
        assert agent.diagnostics(obs)["actor_preact_abs"].max() < 3                 # a fresh actor is live
        agent.actor.net.layers[-1].bias[1] += 50.0                                  # seed 1 runs into tanh's tail
        d = agent.diagnostics(obs)["actor_preact_abs"]
    torch.testing.assert_close(d[0], u[0].abs().mean(-1))                           # seed 0 untouched
    assert (d[1] > 45).all() and torch.equal(agent.act(obs)[1], torch.ones(5, 2))

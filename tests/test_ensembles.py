"""SAC-N and EDAC: N critics per seed in one member-axis module, and EDAC's gradient-diversity term
against a member-by-member reference."""
import numpy as np
import torch

from offrl.agent import Spec, get_agent, resolve_config
from offrl.algorithms.edac import gradient_diversity
from offrl.nets import Critic


def test_gradient_diversity_matches_a_member_by_member_reference():
    torch.manual_seed(0)
    S, N, B, O, A = 2, 4, 6, 3, 2
    critic = Critic(O, A, (S, N), (16, 16))
    obs, act = torch.randn(S, B, O), torch.rand(S, B, A) * 2 - 1
    action = act.unsqueeze(1).expand(-1, N, -1, -1).detach().requires_grad_(True)
    got = gradient_diversity(critic(obs, action), action)                       # [S]
    expected = torch.zeros(S)
    for s in range(S):
        grads = []
        for i in range(N):                        # ∇_a Q_i(s, a) of member (s, i) alone
            a = act.clone().requires_grad_(True)
            q = critic(obs, a)[s, i]
            grads.append(torch.autograd.grad(q.sum(), a)[0][s])                 # [B, A]
        unit = [g / (g.norm(dim=-1, keepdim=True) + 1e-10) for g in grads]
        for i in range(N):
            for j in range(N):
                if i != j:
                    expected[s] += (unit[i] * unit[j]).sum(-1).mean() / (N - 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_identical_critics_have_the_largest_diversity_loss_and_it_trains_the_critics():
    torch.manual_seed(0)
    S, N, B = 1, 5, 8
    critic = Critic(3, 2, (S, N), (64,))
    with torch.no_grad():                         # every member a copy of member 0: all cosines are 1
        for p in critic.parameters():
            p.copy_(p[:, :1].clone().expand_as(p))
    action = torch.rand(S, 1, B, 2).expand(S, N, B, 2).detach().requires_grad_(True)   # one action, N copies
    loss = gradient_diversity(critic(torch.randn(S, B, 3), action), action)
    torch.testing.assert_close(loss, torch.full((S,), float(N)))
    critic = Critic(3, 2, (S, N), (64,))          # (equal members are its maximum, where its gradient is 0)
    gradient_diversity(critic(torch.randn(S, B, 3), action), action).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in critic.named_parameters() if "weight" in n)


def test_num_critics_sets_the_ensemble_axis():
    for name in ("sac_n", "edac"):
        cls = get_agent(name)
        cfg = resolve_config(cls, "locomotion", False, {"hidden": "8", "num_critics": "7"})
        agent = cls(Spec(3, 2, "locomotion", np.zeros(3, np.float32), np.ones(3, np.float32), (0.0, 1.0)), cfg, 2)
        assert agent.critic.members == (2, 7) and agent.critic.net.layers[0].weight.shape == (2, 7, 5, 8)

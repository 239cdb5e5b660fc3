"""CachedAdam must take exactly torch's fused-Adam steps, across groups, LR schedules and state loads."""
from __future__ import annotations

import copy

import torch

from offrl.optim import CachedAdam


def _params(seed):
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(3, 5)), torch.nn.Parameter(torch.randn(3, 1, 5)),
            torch.nn.Parameter(torch.randn(4))]


def _groups(ps):
    return [{"params": ps[:2], "lr": 1e-2}, {"params": ps[2:], "lr": 3e-3}]


def test_cached_adam_equals_torch_fused_adam():
    a, b = _params(0), _params(0)
    opt_a = CachedAdam(_groups(a), lr=1e-2, eps=1e-6)
    opt_b = torch.optim.Adam(_groups(b), lr=1e-2, eps=1e-6, fused=True)
    sched_a = torch.optim.lr_scheduler.LambdaLR(opt_a, [lambda t: 0.9 ** t, lambda t: 1.0])
    sched_b = torch.optim.lr_scheduler.LambdaLR(opt_b, [lambda t: 0.9 ** t, lambda t: 1.0])
    for step in range(6):
        torch.manual_seed(100 + step)
        grads = [torch.randn_like(p) for p in a]
        for ps, opt, sched in ((a, opt_a, sched_a), (b, opt_b, sched_b)):
            opt.zero_grad(set_to_none=True)
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opt.step()
            sched.step()
        for x, y in zip(a, b):
            assert torch.equal(x, y), step
        if step == 2:                                  # a state load mid-way invalidates the cache
            opt_a.load_state_dict(copy.deepcopy(opt_b.state_dict()))   # as torch.load gives it
    state = opt_a.state_dict()["state"]
    assert all(float(s["step"]) == 6 for s in state.values())


def test_cached_adam_falls_back_when_a_gradient_is_missing():
    a, b = _params(1), _params(1)
    opt_a, opt_b = CachedAdam(a, lr=0.1), torch.optim.Adam(b, lr=0.1, fused=True)
    for step in range(4):
        for ps, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad(set_to_none=True)
            for i, p in enumerate(ps):
                if not (step == 2 and i == 1):
                    p.grad = torch.full_like(p, float(step + i))
            opt.step()
        for x, y in zip(a, b):
            assert torch.equal(x, y), step

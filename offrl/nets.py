"""Layers with a member axis: every weight has leading member dimensions (seeds, then ensemble).

`Linear(in, out, members=(S, N))` holds a weight [S, N, in, out] and runs one batched matmul for
all S·N members. Inputs are [*members, B, in]. Each member is initialised independently, exactly as
a lone PyTorch layer would be. Nothing here mixes members.
"""
from __future__ import annotations

import copy
import math
import weakref
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Members = tuple[int, ...]


class Linear(nn.Module):
    """y = x W + b per member. weight [*members, in, out], bias [*members, 1, out].

    init: "torch" (PyTorch's default: U(±1/√in) for weight and bias), "orthogonal" (gain `gain`,
    zero bias, as in the official IQL/JAX code) or "xavier" (Glorot uniform with gain `gain`, zero bias).
    """

    def __init__(self, in_features: int, out_features: int, members: Members, init: str = "torch",
                 gain: float = 1.0):
        super().__init__()
        self.members = tuple(members)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(*self.members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(*self.members, 1, out_features))
        self.reset_parameters(init, gain)

    @torch.no_grad()
    def reset_parameters(self, init: str = "torch", gain: float = 1.0) -> None:
        if init == "torch":
            bound = 1.0 / math.sqrt(self.in_features)
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)
        elif init == "orthogonal":
            w = self.weight.view(-1, self.in_features, self.out_features)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)                    # LAPACK's QR rounds differently with more threads: the
            try:                                        # initial weights must not depend on the thread count
                for m in range(w.shape[0]):             # once at construction: a loop is fine here
                    w[m].copy_(nn.init.orthogonal_(torch.empty(self.out_features, self.in_features), gain).T)
            finally:
                torch.set_num_threads(threads)
            self.bias.zero_()
        elif init == "xavier":
            bound = gain * math.sqrt(6.0 / (self.in_features + self.out_features))
            self.weight.uniform_(-bound, bound)
            self.bias.zero_()
        else:
            raise ValueError(f"unknown init {init!r}; use 'torch', 'orthogonal' or 'xavier'")

    def forward(self, x: Tensor, ensemble: slice | None = None) -> Tensor:
        """x [*members, B, in] → [*members, B, out]. `ensemble` selects members along axis 1 (e.g. the
        first critic of a twin pair), and x then carries only the selected members."""
        w, b = self.weight, self.bias
        if ensemble is not None:
            w, b = w[:, ensemble], b[:, ensemble]
        if self.out_features == 1:
            # A scalar head (Q, V): MKL's batched GEMM with N=1 is 2-4x slower than a fused
            # multiply-sum once there are several members (measured on the project's CPUs).
            return (x * w.transpose(-1, -2)).sum(-1, keepdim=True) + b      # [*members, B, 1]
        if x.dim() == 3 and w.dim() == 3:       # members (S,): no reshapes, one call
            return torch.baddbmm(b, x, w)
        m = math.prod(w.shape[:-2])
        y = torch.baddbmm(b.reshape(m, 1, self.out_features),
                          x.reshape(m, -1, self.in_features),
                          w.reshape(m, self.in_features, self.out_features))
        return y.reshape(*x.shape[:-2], -1, self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, members={self.members}"


class LayerNorm(nn.Module):
    """LayerNorm over features with a separate affine per member: weight/bias [*members, 1, F]."""

    def __init__(self, features: int, members: Members, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(*members, 1, features))
        self.bias = nn.Parameter(torch.zeros(*members, 1, features))
        self.eps = eps

    def forward(self, x: Tensor, ensemble: slice | None = None) -> Tensor:
        w, b = (self.weight, self.bias) if ensemble is None else (self.weight[:, ensemble], self.bias[:, ensemble])
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * w + b


class MLP(nn.Module):
    """Linear → [LayerNorm] → ReLU → [Dropout] per hidden layer, then a linear output layer.

    x [*members, B, in] → [*members, B, out]. `activate_final` also applies the hidden-layer block
    after the last layer (for trunks that feed separate heads). `layernorm="after_relu"` puts the
    LayerNorm after the ReLU (ReBRAC's order); `ln_eps` is its ε (Flax's default: 1e-6).
    """

    def __init__(self, in_features: int, out_features: int, members: Members, hidden: Sequence[int] = (256, 256),
                 layernorm: bool | str = False, dropout: float = 0.0, activate_final: bool = False,
                 init: str = "torch", gain: float = 1.0, last_gain: float | None = None, last_init: str | None = None,
                 ln_eps: float = 1e-5):
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            self.layers.append(Linear(a, b, members, last_init or init if last else init,
                                      gain if not last or last_gain is None else last_gain))
            if layernorm and (not last or activate_final):
                self.norms.append(LayerNorm(b, members, ln_eps))
        self.layernorm, self.dropout, self.activate_final = layernorm, dropout, activate_final
        self.norm_after_relu = layernorm == "after_relu"

    def forward(self, x: Tensor, ensemble: slice | None = None) -> Tensor:
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            x = layer(x, ensemble)
            if i < n - 1 or self.activate_final:
                if self.layernorm and not self.norm_after_relu:
                    x = self.norms[i](x, ensemble)
                x = F.relu(x)
                if self.norm_after_relu:
                    x = self.norms[i](x, ensemble)
                if self.dropout > 0:
                    x = F.dropout(x, self.dropout, self.training)
        return x


@torch.no_grad()
def edac_init(net: MLP, last_bound: float) -> None:
    """The EDAC paper's init (used by CORL's SAC-N, EDAC and ReBRAC): PyTorch's default weights, hidden
    biases 0.1, and the output layer's weight and bias U(±last_bound)."""
    for layer in net.layers[:-1]:
        layer.bias.fill_(0.1)
    net.layers[-1].weight.uniform_(-last_bound, last_bound)
    net.layers[-1].bias.uniform_(-last_bound, last_bound)


def broadcast_members(x: Tensor, members: Members) -> Tensor:
    """[S, B, F] → [S, N, B, F] for an ensemble of N per seed; inputs already [S, N, B, F] pass."""
    if x.dim() == len(members) + 2 or len(members) == 1:
        return x
    return x.unsqueeze(1).expand(*members, *x.shape[1:])


class Critic(nn.Module):
    """Ensemble Q(s, a): members (S, N). obs [S, B, O] (or [S, N, B, O]), action likewise → Q [S, N, B].

    `ensemble` evaluates only the selected members, e.g. slice(0, 1) for TD3's Q1 → [S, 1, B].
    """

    def __init__(self, obs_dim: int, act_dim: int, members: Members, hidden: Sequence[int] = (256, 256),
                 out_features: int = 1, **mlp):
        super().__init__()
        self.members = tuple(members)
        self.out_features = out_features
        self.net = MLP(obs_dim + act_dim, out_features, self.members, hidden, **mlp)

    def forward(self, obs: Tensor, action: Tensor, ensemble: slice | None = None) -> Tensor:
        """→ [S, N, B], or [S, N, B, out_features] for vector heads (e.g. return quantiles). One of obs and
        action may carry the ensemble axis (e.g. one action copy per member) while the other does not."""
        if obs.dim() != action.dim():
            obs, action = broadcast_members(obs, self.members), broadcast_members(action, self.members)
        x = torch.cat([obs, action], -1)
        if x.dim() == 3:
            n = len(range(*ensemble.indices(self.members[1]))) if ensemble is not None else self.members[1]
            x = x.unsqueeze(1).expand(x.shape[0], n, *x.shape[1:])
        y = self.net(x, ensemble)
        return y.squeeze(-1) if self.out_features == 1 else y


class ValueNet(nn.Module):
    """V(s): members (S,) or (S, N). obs [S, B, O] → [*members, B]."""

    def __init__(self, obs_dim: int, members: Members, hidden: Sequence[int] = (256, 256), **mlp):
        super().__init__()
        self.members = tuple(members)
        self.net = MLP(obs_dim, 1, self.members, hidden, **mlp)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(broadcast_members(obs, self.members)).squeeze(-1)


class DeterministicActor(nn.Module):
    """a = tanh(MLP(s)): obs [S, B, O] → actions [S, B, A] in [-1, 1] (TD3, TD3+BC, BC)."""

    def __init__(self, obs_dim: int, act_dim: int, members: Members, hidden: Sequence[int] = (256, 256), **mlp):
        super().__init__()
        self.net = MLP(obs_dim, act_dim, members, hidden, **mlp)

    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.net(obs))


class TanhGaussianActor(nn.Module):
    """SAC's policy: u ~ N(μ(s), σ(s)), a = tanh(u), with state-dependent log σ clamped to [min, max].

    forward(obs [S, B, O]) → (action [S, B, A], log_prob [S, B]) with a reparameterised sample;
    `deterministic=True` returns tanh(μ) and a log-prob of zeros.
    """

    def __init__(self, obs_dim: int, act_dim: int, members: Members, hidden: Sequence[int] = (256, 256),
                 log_std_min: float = -20.0, log_std_max: float = 2.0, log_std_offset: float | None = None, **mlp):
        """log_std_offset: learn log σ = m·net(s) + c with scalars m (init 1) and c (init this value) per
        member, as CQL's policy does; None: log σ = net(s)."""
        super().__init__()
        self.act_dim = act_dim
        self.net = MLP(obs_dim, 2 * act_dim, members, hidden, **mlp)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        if log_std_offset is not None:
            self.log_std_scale = nn.Parameter(torch.ones(*members, 1, 1))
            self.log_std_shift = nn.Parameter(torch.full((*members, 1, 1), float(log_std_offset)))
        self.affine = log_std_offset is not None

    def _log_std(self, raw: Tensor) -> Tensor:
        """log σ from the net's raw output: the learned affine (if any), then the clamp."""
        if self.affine:
            raw = self.log_std_scale * raw + self.log_std_shift
        return raw.clamp(self.log_std_min, self.log_std_max)

    def forward(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        mean, log_std = self.net(obs).split(self.act_dim, -1)
        if deterministic:
            return torch.tanh(mean), torch.zeros(mean.shape[:-1], device=mean.device)
        log_std = self._log_std(log_std)
        eps = torch.randn_like(mean)
        u = mean + log_std.exp() * eps
        # log N(u; μ, σ) − Σ log(1 − tanh(u)²), the latter written stably as 2(log 2 − u − softplus(−2u)).
        log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob

    def log_prob(self, obs: Tensor, action: Tensor, clip: float = 0.999) -> Tensor:
        """log π(a|s) [S, B] of given actions in [-1, 1] (clipped to ±clip before atanh)."""
        mean, raw = self.net(obs).split(self.act_dim, -1)
        log_std = self._log_std(raw)
        a = action.clamp(-clip, clip)
        u = torch.atanh(a)
        z = (u - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi) - torch.log1p(-a.pow(2))).sum(-1)


class GaussianActor(nn.Module):
    """IQL's policy: N(tanh(MLP(s)), exp(log σ)) with a state-independent log σ (init 0) clipped to
    [log_std_min, log_std_max]; not tanh-squashed, so dataset actions have a finite log-prob.
    `tanh_mean=False` leaves the mean unbounded (AWAC's policy in CORL); actions are clipped to [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, members: Members, hidden: Sequence[int] = (256, 256),
                 log_std_min: float = -5.0, log_std_max: float = 2.0, tanh_mean: bool = True, **mlp):
        super().__init__()
        self.net = MLP(obs_dim, act_dim, members, hidden, activate_final=False, **mlp)
        self.log_std = nn.Parameter(torch.zeros(*members, 1, act_dim))
        self.log_std_min, self.log_std_max, self.tanh_mean = log_std_min, log_std_max, tanh_mean

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(mean [S, B, A], log σ [S, 1, A])."""
        mean = self.net(obs)
        return torch.tanh(mean) if self.tanh_mean else mean, self.log_std.clamp(self.log_std_min, self.log_std_max)

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        """log π(a|s) [S, B] of a diagonal Gaussian."""
        mean, log_std = self(obs)
        z = (action - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def sample(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """An action [S, B, A] in [-1, 1]: the mean, or a reparameterised sample, clipped."""
        mean, log_std = self(obs)
        if deterministic:
            return mean if self.tanh_mean else mean.clamp(-1.0, 1.0)
        return (mean + log_std.exp() * torch.randn_like(mean)).clamp(-1.0, 1.0)


def target(module: nn.Module) -> nn.Module:
    """A frozen copy of `module` for Polyak-averaged targets."""
    t = copy.deepcopy(module)
    t.requires_grad_(False)
    return t


_param_lists: "weakref.WeakKeyDictionary[nn.Module, list[Tensor]]" = weakref.WeakKeyDictionary()


def _params(module: nn.Module) -> list[Tensor]:
    """module.parameters() as a list, cached: the Parameter objects never change (state loads copy
    into them), and walking the module tree every update costs more than the lerp itself. Under
    torch.compile the walk is traced once, so the cache (whose weak references dynamo would guard on) is skipped."""
    if torch.compiler.is_compiling():
        return list(module.parameters())
    if module not in _param_lists:
        _param_lists[module] = list(module.parameters())
    return _param_lists[module]


@torch.no_grad()
def soft_update(target_net: nn.Module, source: nn.Module, tau: float) -> None:
    """target ← τ·source + (1−τ)·target, all tensors in one fused call."""
    torch._foreach_lerp_(_params(target_net), _params(source), tau)


def per_seed_mean(x: Tensor) -> Tensor:
    """Mean over everything but the leading seed axis: [S, ...] → [S]. Sum the result over seeds to get
    a loss whose gradient for each seed is exactly that seed's own."""
    return x.reshape(x.shape[0], -1).mean(1)


def quantile_huber_loss(pred: Tensor, target_q: Tensor, kappa: float = 1.0) -> Tensor:
    """QR-DQN's loss Σ_i mean_j ρ_{τ̂_i}(y_j − θ_i), ρ_τ(u) = |τ − 1{u<0}|·L_κ(u)/κ, per sample:
    pred θ [..., N] at levels τ̂_i = (2i−1)/(2N), target y [..., N'] → [...]."""
    n = pred.shape[-1]
    taus = ((torch.arange(n, device=pred.device, dtype=pred.dtype) + 0.5) / n).unsqueeze(-1)   # τ̂_i, [N, 1]
    u = target_q.unsqueeze(-2) - pred.unsqueeze(-1)                                          # [..., N, N']
    # torch's fused Huber kernel is ~3x faster on CPU than composing where/abs by hand
    huber = F.huber_loss(u, torch.zeros((), dtype=u.dtype, device=u.device).expand_as(u), reduction="none", delta=kappa)
    weight = torch.where(u.detach() < 0, 1 - taus, taus)
    return (weight * huber).mean(-1).sum(-1) / kappa

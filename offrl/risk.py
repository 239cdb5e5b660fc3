"""Risk objectives for stock-augmented return-distribution optimisation, and empirical risk statistics.

Stock augmentation (Ávila Pires et al., 2025): the state is extended with a stock c, C_0 = c_0 and
C_{t+1} = (C_t + R_{t+1})/γ, so that C_t + G_t = γ^{-t}(C_0 + G_0). An expected-utility objective
E f(c_0 + G) can then be maximised by greedy distributional DP on the augmented state, provided
(i) it is an expected utility (mixture-monotone) and (ii) f(γx) = a·f(x) + b for the run's γ.
Every `Utility` carries the flag `any_gamma` that says whether (ii) holds for all γ or only γ = 1.
Thresholds and targets belong in the initial stock (c_0 = −θ), never inside f.

CVaR_τ is *not* a valid greedy criterion; it is obtained as an outer maximisation over c_0
(Rockafellar–Uryasev): CVaR_τ(G) = max_c [ −c + E min(c + G, 0)/τ ], optimal at c = −VaR_τ(G).

Every function here works on exact numbers (int, Fraction) as well as on floats, and utilities also
on torch tensors (the deep agents call them on quantile atoms).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np
import torch

from offrl import OffrlError

Number = Any        # int | Fraction | float | Tensor


@dataclass(frozen=True)
class Utility:
    """f in E f(c + G). `scalar` works on exact numbers, `tensor` element-wise on torch tensors."""
    name: str
    scalar: Callable[[Number], Number] = field(repr=False)
    tensor: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    any_gamma: bool          # f(γx) = a f(x) + b for every γ (greedy stock DP valid for γ < 1 too)
    piecewise_affine: bool   # affine on each side of 0: stock clipping to [−G_max, −G_min] keeps greedy choices

    def __call__(self, x: Number) -> Number:
        return self.tensor(x) if isinstance(x, torch.Tensor) else self.scalar(x)

    def check_gamma(self, gamma: Number, allow_invalid: bool = False) -> None:
        """Raise (or, with allow_invalid, warn) when greedy stock DP is not valid for this γ."""
        if self.any_gamma or gamma == 1:
            return
        msg = (f"utility {self.name} is not γ-homogeneous (f(γx) ≠ a·f(x)+b), so greedy stock-augmented DP "
               f"is not optimal for γ={gamma}; use γ=1 (episodic) or a homogeneous utility "
               "(mean, lower, upper, piecewise, indicator, abs, square)")
        if not allow_invalid:
            raise OffrlError(msg + ", or pass allow_invalid_gamma=True to run it anyway")
        warnings.warn(msg + " (running anyway: allow_invalid_gamma=True)", stacklevel=3)


def _pos(x: Number) -> Number:
    return x if x > 0 else 0 * x


def make_utility(name: str, alpha: Number = 1, beta: Number = 1, lam: Number = 1.0) -> Utility:
    """The expected-utility family of the reference (§1.5):

    mean: x · lower: min(x, 0) · upper: max(x, 0) · piecewise: α·x₊ − β·x₋ · indicator: 1{x ≥ 0}
    · abs: −|x| · square: −x² · exp: −e^{−λx} (valid only for γ = 1).
    """
    table: dict[str, tuple[Callable, Callable, bool, bool]] = {
        "mean": (lambda x: x, lambda x: x, True, True),
        "lower": (lambda x: min(x, 0 * x), lambda x: x.clamp(max=0), True, True),
        "upper": (lambda x: _pos(x), lambda x: x.clamp(min=0), True, True),
        "piecewise": (lambda x: alpha * _pos(x) - beta * _pos(-x),
                      lambda x: alpha * x.clamp(min=0) - beta * (-x).clamp(min=0), True, True),
        "indicator": (lambda x: 1 if x >= 0 else 0, lambda x: (x >= 0).to(x.dtype), True, True),
        "abs": (lambda x: -abs(x), lambda x: -x.abs(), True, True),
        "square": (lambda x: -x * x, lambda x: -x * x, True, False),
        "exp": (lambda x: -math.exp(-lam * x), lambda x: -torch.exp(-lam * x), False, False),
    }
    if name not in table:
        raise OffrlError(f"unknown utility {name!r}; choose one of {', '.join(table)}")
    scalar, tensor, any_gamma, affine = table[name]
    label = {"piecewise": f"piecewise(α={alpha}, β={beta})", "exp": f"exp(λ={lam})"}.get(name, name)
    return Utility(label, scalar, tensor, any_gamma, affine)


@dataclass(frozen=True)
class Objective:
    """What a stock-augmented agent maximises: E f(c_0 + G) at a fixed c_0, or, with `search_c0`,
    max over c_0 of [E f(c_0 + G) − c_0] (CVaR and mean-CVaR via Rockafellar–Uryasev)."""
    name: str
    utility: Utility
    c0: Number = 0               # initial stock when not searched (−θ for thresholds and targets)
    search_c0: bool = False      # CVaR-type: J(c_0) = V(c_0) − c_0, maximised over c_0

    def outer(self, c0: Number, value: Number) -> Number:
        """The objective's value J(c_0) given V(c_0) = max_π E f(c_0 + G)."""
        return value - c0 if self.search_c0 else value


def _scale(u: Utility, k: Number, name: str) -> Utility:
    return Utility(name, lambda x: k * u.scalar(x), lambda x: k * u.tensor(x), u.any_gamma, u.piecewise_affine)


def objective(name: str, tau: Number = 0.1, theta: Number = 0, weight: Number = 0.5, lam: Number = 1.0) -> Objective:
    """mean | cvar (CVaR_τ) | mean_cvar (w·E G + (1−w)·CVaR_τ) | prob (P(G ≥ θ)) | target (−E|G−θ|)
    | target_sq (−E(G−θ)²) | exp (E −e^{−λG}, γ = 1 only)."""
    if name == "mean":
        return Objective("mean", make_utility("mean"))
    if name in ("cvar", "mean_cvar"):
        if not 0 < tau <= 1:
            raise OffrlError(f"CVaR level tau must be in (0, 1], got {tau}")
        w = weight if name == "mean_cvar" else 0
        lower = make_utility("lower")
        f = Utility(f"{name}(τ={tau})", lambda x: w * x + (1 - w) / tau * lower.scalar(x),
                    lambda x: w * x + (1 - w) / tau * x.clamp(max=0), True, True)
        return Objective(f.name, f, search_c0=True)
    if name == "prob":
        return Objective(f"P(G≥{theta})", make_utility("indicator"), c0=-theta)
    if name == "target":
        return Objective(f"target({theta})", make_utility("abs"), c0=-theta)
    if name == "target_sq":
        return Objective(f"target_sq({theta})", make_utility("square"), c0=-theta)
    if name == "exp":
        return Objective(f"exp(λ={lam})", make_utility("exp", lam=lam))
    raise OffrlError(f"unknown objective {name!r}; choose mean, cvar, mean_cvar, prob, target, target_sq or exp")


# --- exact statistics of a discrete distribution {value: probability} ---
def dist_quantile(dist: Sequence[tuple[Number, Number]], u: Number) -> Number:
    """Lower quantile F^{-1}(u) = min{x : F(x) ≥ u} of sorted (value, prob) pairs."""
    acc = 0 * u
    for x, p in dist:
        acc += p
        if acc >= u:
            return x
    return dist[-1][0]


def dist_cvar(dist: Sequence[tuple[Number, Number]], tau: Number) -> Number:
    """Lower-tail CVaR_τ = (1/τ)∫_0^τ F^{-1}(u) du of sorted (value, prob) pairs, exact for Fractions."""
    remaining, total = tau, 0 * tau
    for x, p in dist:
        take = p if p < remaining else remaining
        total += take * x
        remaining -= take
        if remaining <= 0:
            break
    return total / tau


# --- empirical statistics of sampled returns ---
def empirical_cvar(samples: Sequence[Number] | np.ndarray, tau: Number) -> Number:
    """Lower-tail CVaR_τ of n samples with fractional weighting: the mean of the lowest τn samples,
    the ⌈τn⌉-th counted with weight τn − ⌊τn⌋ (T8: [1, 2, 3, 4] at τ = 3/10 → 7/6)."""
    xs = sorted(samples)
    n = len(xs)
    if n == 0 or not 0 < tau <= 1:
        raise OffrlError(f"empirical CVaR needs samples and 0 < τ ≤ 1 (got {n} samples, τ={tau})")
    return dist_cvar([(x, Fraction(1, n) if not isinstance(tau, float) else 1.0 / n) for x in xs], tau)


def empirical_var(samples: Sequence[Number] | np.ndarray, tau: Number) -> Number:
    """Lower τ-quantile VaR_τ: the ⌈τn⌉-th smallest sample."""
    xs = sorted(samples)
    return xs[max(math.ceil(tau * len(xs)) - 1, 0)]


RISK_LEVELS = (0.05, 0.1, 0.25)


def risk_metrics(returns: np.ndarray, levels: Sequence[float] = RISK_LEVELS,
                 thresholds: Sequence[float] = ()) -> dict[str, float]:
    """mean, CVaR_α and VaR_α per level, worst return, and P(G ≥ θ) per threshold, of one seed's
    episode returns [n]."""
    r = [float(x) for x in np.asarray(returns, np.float64).ravel()]
    out: dict[str, float] = {"episodes": len(r), "mean": float(np.mean(r)), "worst": min(r)}
    for a in levels:
        out[f"cvar_{a:g}"] = float(empirical_cvar(r, float(a)))
        out[f"var_{a:g}"] = float(empirical_var(r, a))
    for t in thresholds:
        out[f"p_ge_{t:g}"] = float(np.mean(np.asarray(r) >= t))
    return out


def next_stock(c: Number, r: Number, gamma: Number) -> Number:
    """C_{t+1} = (C_t + R_{t+1})/γ."""
    return (c + r) / gamma if gamma != 1 else c + r


def stock_trajectory(c0: Number, rewards: Sequence[Number], gamma: Number) -> list[Number]:
    """[C_0, C_1, …, C_T] for rewards R_1..R_T."""
    out = [c0]
    for r in rewards:
        out.append(next_stock(out[-1], r, gamma))
    return out

"""Discrete return distributions and their representations (exact, categorical, quantile).

A distribution is a tuple of (value, probability) pairs sorted by value with distinct values. With
int/Fraction inputs every operation is exact. A representation's `project` maps any distribution to
the representable set: `Exact` keeps it, `Categorical` is the C51 projection onto a fixed support,
`Quantile` the W1-optimal projection onto N equal-weight atoms at levels (2i−1)/(2N).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterable, Sequence

from offrl import OffrlError

Dist = tuple[tuple[Any, Any], ...]


def normalize(pairs: Iterable[tuple[Any, Any]]) -> Dist:
    """Merge equal values, drop zero mass, sort by value."""
    acc: dict[Any, Any] = {}
    for x, p in pairs:
        if p:
            acc[x] = acc.get(x, 0) + p
    return tuple(sorted((x, p) for x, p in acc.items() if p))


def point(x: Any) -> Dist:
    return ((x, 1),)


def affine(d: Dist, shift: Any, scale: Any) -> Dist:
    """Law of shift + scale·X."""
    return normalize((shift + scale * x, p) for x, p in d)


def mixture(parts: Iterable[tuple[Any, Dist]]) -> Dist:
    """Σ w_k · d_k for (w_k, d_k)."""
    return normalize((x, w * p) for w, d in parts for x, p in d)


def expect(d: Dist, fn: Callable[[Any], Any]) -> Any:
    return sum(p * fn(x) for x, p in d)


def mean(d: Dist) -> Any:
    return expect(d, lambda x: x)


class Exact:
    """Keep the distribution as it is (finite-horizon problems with finitely many returns)."""
    name = "exact"

    def project(self, d: Dist) -> Dist:
        return d


@dataclass(frozen=True)
class Categorical:
    """C51 projection onto `atoms` (sorted; Fractions keep it exact): mass at x between z_j and z_{j+1}
    splits in proportion to closeness; mass outside [z_1, z_M] moves to the nearest end."""
    atoms: tuple[Any, ...]
    name: str = "categorical"

    @classmethod
    def uniform(cls, vmin: Any, vmax: Any, m: int) -> "Categorical":
        if m < 2 or not vmax > vmin:
            raise OffrlError(f"a categorical support needs m ≥ 2 atoms and vmax > vmin (got m={m}, [{vmin}, {vmax}])")
        step = Fraction(vmax - vmin) / (m - 1) if isinstance(vmin, (int, Fraction)) else (vmax - vmin) / (m - 1)
        return cls(tuple(vmin + i * step for i in range(m)))

    def project(self, d: Dist) -> Dist:
        z = self.atoms
        out = []
        for x, p in d:
            if x <= z[0]:
                out.append((z[0], p))
            elif x >= z[-1]:
                out.append((z[-1], p))
            else:
                j = next(i for i in range(len(z) - 1) if z[i] <= x <= z[i + 1])
                w = (x - z[j]) / (z[j + 1] - z[j])
                out += [(z[j], p * (1 - w)), (z[j + 1], p * w)]
        return normalize(out)


@dataclass(frozen=True)
class Quantile:
    """W1 projection onto n equal-weight atoms θ_i = F^{-1}((2i−1)/(2n))."""
    n: int
    name: str = "quantile"

    def project(self, d: Dist) -> Dist:
        levels = [Fraction(2 * i + 1, 2 * self.n) for i in range(self.n)]
        atoms, acc, k = [], 0, 0
        for u in levels:
            while acc + d[k][1] < u and k < len(d) - 1:
                acc += d[k][1]
                k += 1
            atoms.append(d[k][0])
        return normalize((x, Fraction(1, self.n)) for x in atoms)


def quantile_atoms(d: Dist, n: int) -> list[Any]:
    """The n atoms of `Quantile(n).project(d)`, with repeats, in increasing order."""
    proj = Quantile(n).project(d)
    return [x for x, p in proj for _ in range(int(p * n))]


def support_values(d: Dist) -> Sequence[Any]:
    return [x for x, _ in d]

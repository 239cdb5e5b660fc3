"""Valid values of config fields, declared in each field's annotation (no list kept elsewhere):

    tau: Unit = 0.005                          # a float in [0, 1]
    policy_freq: AtLeastOne = 2                # an int ≥ 1
    expectile: Annotated[float, Check(gt=0, lt=1)] = 0.7
    objective: OneOf("mean", "cvar") = "cvar"

`check_fields(cfg)` raises, naming the field, the rule and the value, before any run directory exists
(`resolve_config`, `resolve_loop`, `check_run`) and again when an agent is built from a config directly.
Light on purpose (no torch): `offrl --help` imports it.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable

from offrl import OffrlError


@dataclass(frozen=True)
class Check:
    """Bounds for a number (or for every entry of a tuple, which must then be non-empty), or the
    allowed strings."""
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()

    def rule(self) -> str:
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        lo = f"{'(' if self.gt is not None else '['}{self.gt if self.gt is not None else self.ge}"
        hi = f"{self.lt if self.lt is not None else self.le}{')' if self.lt is not None else ']'}"
        if self.lt is None and self.le is None:
            return f"> {self.gt}" if self.gt is not None else f"≥ {self.ge}"
        if self.gt is None and self.ge is None:
            return f"< {self.lt}" if self.lt is not None else f"≤ {self.le}"
        return f"in {lo}, {hi}"

    def ok(self, x: Any) -> bool:
        if self.choices:
            return x in self.choices
        if isinstance(x, tuple):
            return len(x) > 0 and all(self.ok(v) for v in x)
        if isinstance(x, float) and math.isnan(x):
            return False
        return ((self.gt is None or x > self.gt) and (self.ge is None or x >= self.ge)
                and (self.lt is None or x < self.lt) and (self.le is None or x <= self.le))


Positive = Annotated[float, Check(gt=0)]               # learning rates, scales, clips that must act
NonNegative = Annotated[float, Check(ge=0)]            # noise levels, weights that may switch a term off
Unit = Annotated[float, Check(ge=0, le=1)]             # probabilities, fractions, Polyak rates
Count = Annotated[int, Check(ge=0)]                    # steps or rows that may be 0
AtLeastOne = Annotated[int, Check(ge=1)]               # batch sizes, periods, ensemble sizes
Sizes = Annotated[tuple[int, ...], Check(ge=1)]        # MLP hidden sizes: at least one layer, each ≥ 1


def OneOf(*choices: str) -> Any:
    """A string field restricted to `choices`."""
    return Annotated[str, Check(choices=choices)]


def check_fields(cfg: Any, label: Callable[[str], str] | None = None) -> None:
    """Raise OffrlError for the first field of dataclass `cfg` outside its declared Check. The message
    names the field as `label(name)` (e.g. a command-line flag), by default as the `--set` key."""
    hints = typing.get_type_hints(type(cfg), include_extras=True)
    for f in dataclasses.fields(cfg):
        for check in getattr(hints.get(f.name), "__metadata__", ()):
            value = getattr(cfg, f.name)
            if isinstance(check, Check) and not check.ok(value):
                name = label(f.name) if label else f.name
                hint = "" if label else f" (--set {f.name}=…)"
                if check.choices:
                    raise OffrlError(f"unknown {name} {value!r}; choose one of {', '.join(check.choices)}{hint}")
                what = "non-empty, each entry " if isinstance(value, tuple) else ""
                raise OffrlError(f"{name} must be {what}{check.rule()}, got {value!r}{hint}")

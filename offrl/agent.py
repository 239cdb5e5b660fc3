"""The Agent base class, typed configs, the registry and plug-in loading.

An agent is a class with a typed config dataclass, registered by name. Built-ins and plug-ins use
the same public API:

    @register("my_agent")
    class MyAgent(Agent):
        Config = MyConfig                        # a dataclass deriving AgentConfig
        def __init__(self, spec, cfg, seeds, device): ...
        def update(self, batch) -> dict[str, Tensor]: ...   # one gradient step; metrics [S] per seed
        def act(self, obs, deterministic=True) -> Tensor: ... # obs [S, E, O] → actions [S, E, A]
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from offrl import OffrlError, __version__
from offrl.buffer import Batch, Mixing
from offrl.optim import CachedAdam
from offrl.data.dataset import Dataset, reward_transform
from offrl.utils import closest

CHECKPOINT_FORMAT = 1


@dataclass
class AgentConfig:
    """Fields every agent has. Subclasses add their own; defaults are the paper's."""
    batch_size: int = 256              # transitions per seed per gradient step
    gamma: float = 0.99                # discount factor
    normalize_obs: bool = False        # standardise observations with the dataset's mean/std (+1e-3)
    reward_transform: str = "none"     # none | iql_locomotion (r·1000/(R_max−R_min)) | antmaze (r−1)
    buffer_mixing: str = "union"       # O2O batches: union | fixed | annealed (see offrl.buffer.Mixing)
    offline_fraction: float = 0.5      # offline share of a batch for fixed/annealed mixing
    offline_fraction_floor: float = 0.0  # final offline share for annealed mixing
    anneal_steps: int = 100_000        # online steps over which annealed mixing reaches its floor
    utd: int = 1                       # gradient steps per environment step online
    time_feature: bool = False         # append t/T to observations; reaching the time limit T is terminal
    random_steps: int = 0              # uniform-random env steps before the policy acts (online from scratch)

    def mixing(self) -> Mixing:
        return Mixing(self.buffer_mixing, self.offline_fraction, self.offline_fraction_floor, self.anneal_steps)


@dataclass
class Spec:
    """What an agent learns about its task from outside: shapes, domain and dataset statistics."""
    obs_dim: int
    act_dim: int
    domain: str = "locomotion"
    obs_mean: np.ndarray | None = None       # [O] dataset observation mean (None: online-only)
    obs_std: np.ndarray | None = None        # [O] dataset observation std + 1e-3
    return_range: tuple[float, float] | None = None   # min and max dataset episode return

    @classmethod
    def from_dataset(cls, ds: Dataset, domain: str = "locomotion") -> "Spec":
        mean, std = ds.observation_stats()
        returns = ds.episode_returns()
        return cls(ds.obs_dim, ds.act_dim, domain, mean, std, (float(returns.min()), float(returns.max())))


class Agent(nn.Module):
    """Base class: observation normalisation, reward transform, optimisers, checkpoint state.

    Subclasses build their networks with member dimensions (seeds first), create optimisers with
    `self.optimizer(...)`, and implement `update` and `act`.
    """
    Config: ClassVar[type[AgentConfig]] = AgentConfig
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # Per-domain (and "o2o") hyper-parameter overrides, applied over the dataclass defaults.
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, spec: Spec, cfg: AgentConfig, seeds: int, device: torch.device | str = "cpu"):
        super().__init__()
        self.spec, self.cfg, self.seeds, self.device = spec, cfg, seeds, torch.device(device)
        if cfg.normalize_obs and spec.obs_mean is None:
            raise OffrlError(f"{self.name}: normalize_obs=true needs an offline dataset for the statistics; "
                             "set normalize_obs=false for online-only runs")
        mean = spec.obs_mean if cfg.normalize_obs else np.zeros(spec.obs_dim, np.float32)
        std = spec.obs_std if cfg.normalize_obs else np.ones(spec.obs_dim, np.float32)
        self.register_buffer("obs_mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.as_tensor(std, dtype=torch.float32))
        self.reward_scale, self.reward_shift = reward_transform(cfg.reward_transform, spec.return_range)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._opt_params: dict[str, list[Tensor]] = {}
        self.schedulers: dict[str, Any] = {}
        self.num_updates = 0          # gradient steps taken (a host int: no device sync to read it)
        # Per-episode state of agents whose policy depends on the history (e.g. a stock): tensors
        # [S, E, ...] kept between `begin_episodes`/`observe` calls and saved in checkpoints.
        self.episode_state: dict[str, Tensor] = {}

    # --- helpers for subclasses ---
    def optimizer(self, name: str, params: Any, lr: float, **kw: Any) -> torch.optim.Optimizer:
        """Adam over stacked member weights: element-wise, so it equals S independent optimisers.
        The fused kernel is ~2× faster than the foreach one on CPU and exists on CUDA too; CachedAdam
        also skips torch's per-step regrouping of tensors."""
        opt = CachedAdam(params, lr=lr, **kw)
        self.optimizers[name] = opt
        self._opt_params[name] = [p for g in opt.param_groups for p in g["params"]]
        return opt

    @torch.compiler.disable
    def minimize(self, name: str, loss: Tensor) -> None:
        """One step of optimiser `name` on a per-seed loss [S]: the loss is summed over seeds, so each
        seed's gradient is exactly its own, and gradients are computed only for that optimiser's
        parameters (an actor loss does not fill the critic's .grad). Under `--compile` this stays eager
        (offrl.fast): backward runs the compiled graphs' backward and Adam its one fused kernel."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.sum().backward(inputs=self._opt_params[name])
        opt.step()

    def transform_reward(self, reward: Tensor) -> Tensor:
        """The configured reward transform (offline rows, online rows and observed rewards alike)."""
        return reward * self.reward_scale + self.reward_shift if self.cfg.reward_transform != "none" else reward

    def normalize(self, obs: Tensor) -> Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def preprocess(self, b: Batch) -> Batch:
        """Normalised observations and transformed rewards, the same for offline and online rows."""
        reward = self.transform_reward(b.reward)
        if not self.cfg.normalize_obs:
            return b._replace(reward=reward)
        return b._replace(obs=self.normalize(b.obs), reward=reward, next_obs=self.normalize(b.next_obs))

    # --- the interface ---
    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One gradient step on a batch [S, B, ...]; returns detached metrics, each [S]."""
        raise NotImplementedError

    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """Actions [S, E, A] in [-1, 1] for raw observations [S, E, O]."""
        raise NotImplementedError

    def begin_episodes(self, obs: Tensor, starting: Tensor) -> None:
        """Called with observations [S, E, O] whenever episodes start; `starting` [S, E] bool marks the
        envs that were reset. History-dependent agents initialise `episode_state` here."""

    def observe(self, reward: Tensor) -> None:
        """Called after every env step with the raw rewards [S, E] (E envs per seed)."""

    # --- checkpoint state: networks, optimisers, schedulers ---
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {"format": CHECKPOINT_FORMAT, "offrl_version": __version__, "agent": self.name,
                "seeds": self.seeds, "num_updates": self.num_updates, "nets": super().state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "episode_state": {k: v.clone() for k, v in self.episode_state.items()}}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        if state.get("agent") != self.name:
            raise OffrlError(f"checkpoint holds agent {state.get('agent')!r}, not {self.name!r}; "
                             f"load it with --agent {state.get('agent')}")
        if state.get("format") != CHECKPOINT_FORMAT:
            raise OffrlError(f"checkpoint format {state.get('format')} (offrl {state.get('offrl_version')}) is "
                             f"not this offrl's format {CHECKPOINT_FORMAT} (offrl {__version__}); retrain or use that version")
        if state.get("seeds") != self.seeds:
            raise OffrlError(f"checkpoint has {state.get('seeds')} seeds, this agent {self.seeds}; use --seeds "
                             f"{state.get('seeds')}")
        super().load_state_dict(state["nets"], strict=strict)
        self.num_updates = int(state["num_updates"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.episode_state = {k: v.to(self.device) for k, v in state.get("episode_state", {}).items()}


# --- registry ---
REGISTRY: dict[str, type[Agent]] = {}


def register(name: str):
    """Class decorator: make an Agent available under `name` (CLI, suites, plug-ins)."""
    def deco(cls: type[Agent]) -> type[Agent]:
        if not (isinstance(cls, type) and issubclass(cls, Agent)):
            raise TypeError(f"@register({name!r}) must decorate an Agent subclass")
        if not (dataclasses.is_dataclass(cls.Config) and issubclass(cls.Config, AgentConfig)):
            raise TypeError(f"{cls.__name__}.Config must be a dataclass deriving AgentConfig")
        if name in REGISTRY and REGISTRY[name] is not cls and REGISTRY[name].__qualname__ != cls.__qualname__:
            raise OffrlError(f"agent name {name!r} is already registered by {REGISTRY[name].__module__}; "
                             "choose another name")
        cls.name = name
        if not cls.summary:             # the docstring's first sentence (`offrl agents` prints one line each)
            text = " ".join((cls.__doc__ or "").split())
            cls.summary = text.split(". ", 1)[0].rstrip(".") + "." if text else ""
        REGISTRY[name] = cls
        return cls
    return deco


_loaded = False


def load_builtins() -> None:
    """Import the built-in agents and the `offrl.agents` entry points (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import offrl.algorithms  # noqa: F401  (registers the built-ins)
    for ep in importlib.metadata.entry_points(group="offrl.agents"):
        try:
            ep.load()
        except Exception as e:  # a broken third-party plug-in must not hide the built-ins
            print(f"offrl: warning: plug-in entry point {ep.name!r} failed to load: {e}", file=sys.stderr)


def load_plugin(path: str | Path) -> None:
    """Import a Python file whose @register calls add agents to the registry."""
    path = Path(path)
    if not path.is_file():
        raise OffrlError(f"plug-in file {path} not found; give the path of a .py file that defines an agent")
    name = f"offrl_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise OffrlError(f"plug-in {path} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def get_agent(name: str) -> type[Agent]:
    load_builtins()
    if name not in REGISTRY:
        raise OffrlError(f"unknown agent {name!r}{closest(name, REGISTRY)}; known agents: "
                         f"{', '.join(sorted(REGISTRY))} (`offrl agents` lists them; --plugin FILE adds one)")
    return REGISTRY[name]


# --- configs: resolution and typed overrides ---
def config_fields(cfg_cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cfg_cls)}


def parse_value(cfg_cls: type, key: str, text: Any) -> Any:
    """Convert `text` to the declared type of field `key`, or raise naming the field and the type."""
    fields = config_fields(cfg_cls)
    if key not in fields:
        raise OffrlError(f"unknown config key {key!r} for {cfg_cls.__name__}{closest(key, fields)}; "
                         f"valid keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cfg_cls)
    typ = hints[key]
    if not isinstance(text, str):
        value = text
    else:
        try:
            if typ is bool:
                low = text.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = low in ("true", "1", "yes")
            elif typ is int:
                value = int(float(text)) if float(text).is_integer() else int(text)
            elif typ is float:
                value = float(text)
            elif typ is str:
                value = text
            elif typing.get_origin(typ) is tuple:
                value = tuple(int(x) for x in text.strip("()[] ").split(",") if x.strip())
            else:
                raise OffrlError(f"config key {key!r} has type {typ}, which --set cannot parse")
        except ValueError:
            raise OffrlError(f"config key {key!r} expects {getattr(typ, '__name__', typ)}, got {text!r}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typing.get_origin(typ) is tuple and isinstance(value, list):
        value = tuple(value)
    ok = (isinstance(value, typ) if typ in (int, float, str, bool) else isinstance(value, tuple))
    if not ok or (typ is int and isinstance(value, bool)):
        raise OffrlError(f"config key {key!r} expects {getattr(typ, '__name__', typ)}, got {value!r}")
    return value


def resolve_config(agent_cls: type[Agent], domain: str, o2o: bool,
                   overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Dataclass defaults → DEFAULTS[domain] → DEFAULTS['o2o'] (when fine-tuning online) → overrides."""
    merged: dict[str, Any] = {}
    merged.update(agent_cls.DEFAULTS.get(domain, {}))
    if o2o:
        merged.update(agent_cls.DEFAULTS.get("o2o", {}))
    for k, v in (overrides or {}).items():
        merged[k] = parse_value(agent_cls.Config, k, v)
    for k in list(merged):
        merged[k] = parse_value(agent_cls.Config, k, merged[k])
    cfg = agent_cls.Config(**merged)
    cfg.mixing()    # validates the mixing fields
    return cfg


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise OffrlError(f"--set expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out

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
import fnmatch
import importlib.metadata
import importlib.util
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from offrl import OffrlError, __version__
from offrl.buffer import Batch, Mixing
from offrl.optim import CachedAdam
from offrl.data.dataset import REWARD_TRANSFORMS, Dataset, reward_transform
from offrl.fields import AtLeastOne, Check, Count, OneOf, Unit, check_fields
from offrl.utils import closest

CHECKPOINT_FORMAT = 1


@dataclass
class AgentConfig:
    """Fields every agent has. Subclasses add their own; defaults are the paper's."""
    batch_size: AtLeastOne = 256       # transitions per seed per gradient step
    gamma: Annotated[float, Check(gt=0, le=1)] = 0.99  # discount factor
    normalize_obs: bool = False        # standardise observations with the dataset's mean/std (+1e-3)
    reward_transform: OneOf(*REWARD_TRANSFORMS) = "none"  # none | iql_locomotion (r·1000/(R_max−R_min)) | antmaze (r−1) | cql_antmaze (10r−5)
    time_feature: bool = False         # append t/T to observations; reaching the time limit T is terminal


@dataclass
class LoopConfig:
    """The run's buffer and loop settings (not the agent's): set with the same `--set key=value` as agent
    fields, and resolved like them: these defaults → the agent's LOOP_DEFAULTS → its DEFAULTS[domain],
    DATASET_DEFAULTS and DEFAULTS['o2o'] entries that name these keys → the run's overrides."""
    buffer_mixing: OneOf("union", "fixed", "annealed") = "union"  # O2O batches: union | fixed | annealed (see offrl.buffer.Mixing)
    offline_fraction: Unit = 0.5       # offline share of a batch for fixed/annealed mixing
    offline_fraction_floor: Unit = 0.0  # final offline share for annealed mixing
    anneal_steps: AtLeastOne = 100_000  # online steps over which annealed mixing reaches its floor
    utd: AtLeastOne = 1                # gradient steps per environment step online
    random_steps: Count = 0            # uniform-random env steps before the policy acts (online from scratch)

    def mixing(self) -> Mixing:
        return Mixing(self.buffer_mixing, self.offline_fraction, self.offline_fraction_floor, self.anneal_steps)


@dataclass(frozen=True)
class Phase:
    """What `Agent.on_phase` is told when a phase starts.

    name: "offline" or "online"; steps: this phase's length (gradient steps offline, env steps per seed
    online); offline_steps, online_steps: the run's two budgets; previous: the phase that just ended
    ("offline" at the offline → online switch, None for a run's first phase); updates: the gradient
    steps this phase will take (online: the env steps after any random warm-up × UTD; None → steps)."""
    name: str
    steps: int
    offline_steps: int
    online_steps: int
    previous: str | None = None
    updates: int | None = None

    def __post_init__(self) -> None:
        if self.updates is None:
            object.__setattr__(self, "updates", self.steps)     # frozen dataclass


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
    # Per-domain (and "o2o") hyper-parameter overrides, applied over the dataclass defaults; entries may
    # name LoopConfig keys too (e.g. an agent's O2O mixing scheme or UTD).
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}
    # Per-dataset overrides (the papers' tuned values), applied over DEFAULTS[domain] and under
    # DEFAULTS["o2o"]: keys are fnmatch patterns over the dataset's 'task-level' (`offrl.envs.dataset_level`:
    # 'hopper-medium-replay', 'walker2d-*'); every matching entry applies, in the order written.
    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}
    # The agent's own loop settings in every domain (e.g. SAC's random warm-up steps).
    LOOP_DEFAULTS: ClassVar[dict[str, Any]] = {}
    # Config fields read only in the online phase (an O2O ablation's switches). Runs that differ only in
    # these (and in LoopConfig keys, all online-only) share their offline phase exactly, so a variant may
    # start from another run's end-of-offline state instead of retraining it (RunConfig.fork_from).
    ONLINE_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: Spec, cfg: AgentConfig, seeds: int, device: torch.device | str = "cpu"):
        super().__init__()
        check_fields(cfg)
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
        self.phase = ""               # the phase running now ("offline" | "online"), saved in checkpoints

    # --- helpers for subclasses ---
    def optimizer(self, name: str, params: Any, lr: float, **kw: Any) -> torch.optim.Optimizer:
        """Adam over stacked member weights: element-wise, so it equals S independent optimisers.
        The fused kernel is ~2× faster than the foreach one on CPU and exists on CUDA too; CachedAdam
        also skips torch's per-step regrouping of tensors."""
        opt = CachedAdam(params, lr=lr, **kw)
        self.optimizers[name] = opt
        self._opt_params[name] = [p for g in opt.param_groups for p in g["params"]]
        return opt

    def reset_optimizer(self, name: str) -> None:
        """Forget optimiser `name`'s moments and step counts (e.g. at the offline → online switch)."""
        opt = self.optimizers[name]
        opt.state.clear()
        if isinstance(opt, CachedAdam):
            opt._lists = None

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
    def columns(self) -> tuple[Any, ...]:
        """Extra per-row quantities this agent reads from its batches (`offrl.buffer`): names of registered
        columns ("return_to_go", "elapsed", "past_return", "episode"), `Column` objects of its own, and
        `NStep(n)` for n-step offline rows (adds `horizon`). Each becomes a Batch field of that name."""
        return ()

    def sources(self) -> dict[str, dict[str, Any]]:
        """Further data sources this agent wants in its buffer: {name: {"factory": registered source name
        or callable (buffer, agent, **settings) → Source, **settings}} (see `offrl.buffer.register_source`)."""
        return {}

    def on_phase(self, phase: Phase) -> None:
        """Called when a phase starts (`phase.name` is "offline" or "online"; at the switch `phase.previous`
        is "offline"), before its first step, and never again for that phase when a run resumes. Reset
        optimisers, change weights or switch schedules here; whatever it changes must live in the
        checkpoint (modules, optimisers, schedulers, `episode_state`)."""

    def start_phase(self, phase: Phase) -> None:
        """The trainer's call: record the phase, then the agent's hook."""
        self.phase = phase.name
        self.on_phase(phase)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One gradient step on a batch [S, B, ...]; returns detached metrics, each [S]."""
        raise NotImplementedError

    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """Actions [S, E, A] in [-1, 1] for raw observations [S, E, O]."""
        raise NotImplementedError

    def action_log_likelihood(self, obs: Tensor, action: Tensor) -> Tensor:
        """log π(a | s) [S, B] for raw observations [S, B, O] and actions [S, B, A] in [-1, 1], differentiable
        in the action (policy-guided diffusion's guidance). Deterministic actors return the stated surrogate
        log N(a; μ(s), I) up to a constant. Agents without one raise."""
        raise OffrlError(f"agent {self.name!r} has no policy log-likelihood, which policy guidance needs: give "
                         "its class an `action_log_likelihood(obs, action)` (stochastic actors: log π(a|s); "
                         "deterministic actors: the surrogate −½‖a − μ(s)‖²), or guide with another agent")

    def diagnostics(self, obs: Tensor) -> dict[str, Tensor]:
        """Distributions to watch over training: given raw probe observations [S, K, O] (the same K dataset
        states at every evaluation), {name: values [S, K]}. The trainer calls it at each evaluation (only
        when overridden) and writes a per-seed summary and histogram into that evaluation's record
        (metrics.jsonl, TensorBoard histograms) and the last one into final.json's `diagnostics`."""
        return {}

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
                "episode_state": {k: v.clone() for k, v in self.episode_state.items()}, "phase": self.phase}

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
        mine = super().state_dict()
        for k, v in state["nets"].items():
            if k in mine and tuple(v.shape) != tuple(mine[k].shape):
                raise OffrlError(f"it holds {self.name} weights of other shapes ({k}: {tuple(v.shape)} in the "
                                 f"checkpoint, {tuple(mine[k].shape)} in this run with observation size "
                                 f"{self.spec.obs_dim} and action size {self.spec.act_dim}): it was written for another "
                                 "dataset or network size; resume with the same settings, or choose another --out")
        super().load_state_dict(state["nets"], strict=strict)
        self.num_updates = int(state["num_updates"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.episode_state = {k: v.to(self.device) for k, v in state.get("episode_state", {}).items()}
        self.phase = state.get("phase", "")


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
        if "summary" not in vars(cls):  # its own docstring's first sentence, not its parent's (`offrl agents`)
            text = " ".join((cls.__doc__ or "").split())
            cls.summary = text.split(". ", 1)[0].rstrip(".") + "." if text else ""
        REGISTRY[name] = cls
        return cls
    return deco


_loaded = False


def load_builtins() -> None:
    """Import the built-in agents and sources and the `offrl.agents` entry points (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import offrl.algorithms  # noqa: F401  (registers the built-ins)
    import offrl.diffusion.pgd  # noqa: F401  (registers the built-in buffer source `pgd`)
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
        valid = [*fields, *(LOOP_KEYS if cfg_cls is not LoopConfig else ())]
        raise OffrlError(f"unknown config key {key!r} for {cfg_cls.__name__}{closest(key, valid)}; "
                         f"valid keys: {', '.join(valid)}")
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


LOOP_KEYS = frozenset(config_fields(LoopConfig))


def split_overrides(overrides: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--set` overrides → (agent fields, loop settings): one flag for both, routed by name."""
    agent, loop = {}, {}
    for k, v in (overrides or {}).items():
        (loop if k in LOOP_KEYS else agent)[k] = v
    return agent, loop


def _layered(agent_cls: type[Agent], domain: str, o2o: bool, keep: Callable[[str], bool],
             dataset: str | None) -> dict[str, Any]:
    layers = [agent_cls.LOOP_DEFAULTS, agent_cls.DEFAULTS.get(domain, {})]
    if dataset is not None:
        layers += [v for pattern, v in agent_cls.DATASET_DEFAULTS.items() if fnmatch.fnmatchcase(dataset, pattern)]
    layers.append(agent_cls.DEFAULTS.get("o2o", {}) if o2o else {})
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if keep(k)})
    return merged


def resolve_config(agent_cls: type[Agent], domain: str, o2o: bool,
                   overrides: dict[str, Any] | None = None, dataset: str | None = None) -> AgentConfig:
    """Dataclass defaults → DEFAULTS[domain] → DATASET_DEFAULTS entries matching `dataset` (a
    `dataset_level`, e.g. 'hopper-medium') → DEFAULTS['o2o'] (when fine-tuning online) → overrides.
    Loop keys among the overrides are left for `resolve_loop`."""
    merged = _layered(agent_cls, domain, o2o, lambda k: k not in LOOP_KEYS, dataset)
    for k, v in split_overrides(overrides)[0].items():
        merged[k] = parse_value(agent_cls.Config, k, v)
    for k in list(merged):
        merged[k] = parse_value(agent_cls.Config, k, merged[k])
    cfg = agent_cls.Config(**merged)
    check_fields(cfg)
    return cfg


def resolve_loop(agent_cls: type[Agent], domain: str, o2o: bool,
                 overrides: dict[str, Any] | None = None, dataset: str | None = None) -> LoopConfig:
    """LoopConfig defaults → the agent's LOOP_DEFAULTS → its DEFAULTS[domain] / DATASET_DEFAULTS /
    DEFAULTS['o2o'] loop keys (as `resolve_config`) → overrides."""
    merged = _layered(agent_cls, domain, o2o, lambda k: k in LOOP_KEYS, dataset)
    merged.update(split_overrides(overrides)[1])
    loop = LoopConfig(**{k: parse_value(LoopConfig, k, v) for k, v in merged.items()})
    check_fields(loop)
    loop.mixing()    # and floor ≤ offline_fraction
    return loop


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise OffrlError(f"--set expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out

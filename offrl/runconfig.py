"""A run's settings apart from the agent's own hyper-parameters (light: no torch, so `offrl --help` is fast)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from offrl import OffrlError
from offrl.fields import AtLeastOne, Count, OneOf
from offrl.utils import closest


# RunConfig fields that `offrl train` sets with a flag of the same name (--online-steps for online_steps).
RUN_FLAGS = ("dataset", "env", "domain", "seeds", "seed", "steps", "online_steps", "online_capacity", "eval_every",
             "eval_episodes", "log_every", "checkpoint_every", "device", "threads", "matmul_precision", "fork_from")


MATMUL_PRECISIONS = ("highest", "high", "medium")     # torch.set_float32_matmul_precision's values


@dataclass
class RunConfig:
    """Everything about a run that is not the agent's own hyper-parameters."""
    agent: str = "td3_bc"              # registered agent name (`offrl agents`)
    label: str = ""                    # name of this run in reports (default: the agent name)
    dataset: str | None = None         # Minari id, Minari folder or D4RL .hdf5 path (None: online only)
    env: str | None = None             # Gymnasium env id for evaluation/online steps (default: the dataset's)
    domain: str = "auto"               # hyper-parameter domain: auto | locomotion | antmaze | maze | adroit | kitchen | classic
    seeds: AtLeastOne = 1              # S seeds trained at once along the member axis
    seed: int = 0                      # base random seed
    steps: Count = 1_000_000           # offline gradient steps
    online_steps: Count = 0            # online env steps per seed after the offline phase
    online_capacity: Count = 0         # online FIFO rows per seed (0: online_steps)
    offline_data: bool = True          # the dataset's rows go into the buffer (false: it gives only the env,
                                       # reference scores and statistics, e.g. an online-from-scratch reference row)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # further buffer sources: {name: {factory, share, …}}
    eval_every: Count = 5000           # evaluate every k steps of each phase (0: only at the end)
    eval_episodes: Count = 10          # evaluation episodes per seed (≥100 for the risk statistics)
    risk_thresholds: list[float] = field(default_factory=list)  # θ of P(G ≥ θ) in final.json's risk block
    log_every: AtLeastOne = 1000       # write metrics every k steps
    checkpoint_every: AtLeastOne = 10000  # checkpoint every k steps and at each phase end (a shorter phase: at each evaluation)
    device: str = "cpu"                # cpu | cuda | cuda:N
    threads: Count = 0                 # torch CPU threads (0: auto, the cores free at start; see offrl.utils.auto_threads)
    compile_mode: str = "none"         # none | compile | cuda-graphs: how update steps run (offrl.fast)
    # float32 matmuls (torch.set_float32_matmul_precision): highest = exact float32, every committed result;
    # high = TF32 products on Ampere+ GPUs (exact on CPU); medium = bfloat16 products, float32 sums: ~3–4× the
    # matmul rate on CPUs with AMX or on GPUs, ~0.5% relative error per product. Reports list such runs.
    matmul_precision: OneOf(*MATMUL_PRECISIONS) = "highest"
    download: bool = False             # fetch a missing Minari dataset from its remote
    snapshots: bool = False            # keep the networks of every evaluation in snapshots/step_<n>.pt
    plugins: list[str] = field(default_factory=list)  # plug-in files to import before resolving the agent
    # a run directory of the same agent, dataset and budget whose end-of-offline state (its offline.pt) this run
    # starts from instead of training its own offline phase: exact when the two differ only in online settings
    # (the agent's ONLINE_FIELDS and loop keys), e.g. the online ablations of one offline-trained agent
    fork_from: str = ""
    agent_config: dict[str, Any] = field(default_factory=dict)  # --set key=value: agent fields and LoopConfig keys

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in names]
        if unknown:
            raise OffrlError(f"unknown run setting {unknown[0]!r}{closest(unknown[0], names)}")
        return cls(**d)


def parse_source(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME:key=value,key=value` (the `--source` flag) → (NAME, settings); values become int, float or
    bool where they read as one, else stay strings."""
    name, _, rest = text.partition(":")
    if not name or not re.fullmatch(r"[A-Za-z_][\w-]*", name):
        raise OffrlError(f"--source expects NAME:key=value,…, got {text!r}")
    settings: dict[str, Any] = {}
    for pair in filter(None, rest.split(",")):
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise OffrlError(f"--source {name}: expected key=value, got {pair!r}")
        settings[key.strip()] = _scalar(value.strip())
    return name, settings


def _scalar(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text

"""Benchmark suites: YAML files of agents × datasets × seeds × budget × overrides.

    name: quick
    agents:                      # a name, or {name, label, set} for a variant with overrides
      - bc
      - {name: iql, label: iql-beta10, set: {temperature: 10}}
    datasets: [offrl/invertedpendulum/scripted-mixed-small-v0]
    seeds: 2                     # vectorised in one process per (agent, dataset) task
    steps: 3000                  # offline gradient steps
    online_steps: 0              # online fine-tuning steps after the offline phase
    eval_every: 1000
    eval_episodes: 5
    threads: 1                   # torch threads per task: fixed, so every launcher gives identical numbers
    compare: [[td3_bc, bc]]      # probability-of-improvement pairs in the report (default: each vs the first)

Every error names the file and line, and is raised before any run starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from offrl import OffrlError
from offrl.agent import get_agent, load_plugin, parse_value
from offrl.data import dataset_exists
from offrl.trainer import RunConfig
from offrl.utils import closest, slug

SUITES_DIR = Path(__file__).parent / "suites"
TOP_KEYS = {"name": "", "description": "", "agents": [], "datasets": [], "seeds": 1, "steps": 0,
            "online_steps": 0, "eval_every": 0, "eval_episodes": 10, "threads": 1, "seed": 0,
            "compare": [], "plugins": [], "env": None, "domain": "auto", "risk_thresholds": []}


class SuiteError(OffrlError):
    pass


@dataclass
class Task:
    """One (agent variant, dataset) with all its seeds: one Trainer run, one run directory."""
    label: str
    dataset: str
    run: RunConfig

    @property
    def key(self) -> str:
        return f"{self.label}/{slug(self.dataset)}"


@dataclass
class Suite:
    name: str
    path: str
    tasks: list[Task]
    labels: list[str]
    datasets: list[str]
    compare: list[tuple[str, str]]
    settings: dict[str, Any] = field(default_factory=dict)


def _plain(node: yaml.Node) -> Any:
    """A YAML node as plain Python values (the line numbers stay on the nodes)."""
    return yaml.safe_load(yaml.serialize(node))


def find_suite(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    builtin = SUITES_DIR / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    names = sorted(x.stem for x in SUITES_DIR.glob("*.yaml"))
    raise SuiteError(f"no suite {name_or_path!r}{closest(name_or_path, names)}: give a YAML file or one of "
                     f"{', '.join(names)}")


def _make_hint(ds: str) -> str:
    """How to build a missing zoo dataset: the exact `datasets make` command when the id is one."""
    from offrl.data.generate import LEVELS, SHIPPED_POLICIES
    from offrl.envs import RECIPES, TASKS

    parts = ds.split("/")
    if len(parts) == 3 and parts[0] == "offrl" and parts[1] in RECIPES and parts[2].removesuffix("-v0") in LEVELS:
        env_id = TASKS[parts[1]].env_id
        # Without committed policies for the task the make trains its behaviour policy first.
        shipped = (SHIPPED_POLICIES / f"{parts[1]}-standard-seed0" / "index.json").exists()
        return f"make it with `offrl datasets make {env_id} --budget standard{' --from-policies shipped' if shipped else ''}`"
    return "`offrl datasets make` builds the offrl zoo"


def load_suite(name_or_path: str) -> Suite:
    path = find_suite(name_or_path)
    text = path.read_text()
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(root, yaml.MappingNode):
        raise SuiteError(f"{path}: a suite is a YAML mapping with agents, datasets, seeds, steps, …")
    where = lambda node: f"{path}:{node.start_mark.line + 1}"
    nodes: dict[str, yaml.Node] = {}
    for k, v in root.value:
        key = k.value
        if key not in TOP_KEYS:
            raise SuiteError(f"{where(k)}: unknown key {key!r}{closest(key, TOP_KEYS)}; valid keys: {', '.join(TOP_KEYS)}")
        if key in nodes:
            raise SuiteError(f"{where(k)}: key {key!r} appears twice")
        nodes[key] = v
    settings = {k: (_plain(nodes[k]) if k in nodes else d) for k, d in TOP_KEYS.items()}
    settings["name"] = settings["name"] or path.stem
    for key in ("seeds", "steps", "online_steps", "eval_every", "eval_episodes", "threads", "seed"):
        if not isinstance(settings[key], int) or isinstance(settings[key], bool) or settings[key] < 0:
            raise SuiteError(f"{where(nodes[key])}: {key} must be a non-negative integer, got {settings[key]!r}")
    thresholds = settings["risk_thresholds"]
    if not (isinstance(thresholds, list) and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in thresholds)):
        raise SuiteError(f"{where(nodes['risk_thresholds'])}: risk_thresholds is a list of numbers (θ of P(G ≥ θ)), "
                         f"got {thresholds!r}")
    if settings["seeds"] < 1:
        raise SuiteError(f"{where(nodes['seeds'])}: seeds must be ≥ 1")
    for plugin in settings["plugins"]:
        load_plugin(path.parent / plugin if not Path(plugin).is_absolute() else plugin)
    for req in ("agents", "datasets"):
        if req not in nodes or not isinstance(nodes[req], yaml.SequenceNode) or not nodes[req].value:
            raise SuiteError(f"{path}: '{req}' must be a non-empty list")

    variants: list[tuple[str, str, dict[str, Any]]] = []
    for node in nodes["agents"].value:
        entry = _plain(node)
        if isinstance(entry, str):
            name, label, overrides = entry, entry, {}
        elif isinstance(entry, dict) and "name" in entry:
            unknown = set(entry) - {"name", "label", "set"}
            if unknown:
                raise SuiteError(f"{where(node)}: unknown agent field(s) {sorted(unknown)}; use name, label, set")
            name, label, overrides = entry["name"], entry.get("label", entry["name"]), entry.get("set") or {}
        else:
            raise SuiteError(f"{where(node)}: an agent is a name or {{name, label, set}}, got {entry!r}")
        try:
            cls = get_agent(str(name))
            for k, v in overrides.items():
                parse_value(cls.Config, k, v if not isinstance(v, (list, tuple)) else ",".join(map(str, v)))
        except OffrlError as e:
            raise SuiteError(f"{where(node)}: {e}") from None
        if any(label == v[1] for v in variants):
            raise SuiteError(f"{where(node)}: duplicate agent entry {label!r}; give variants distinct labels")
        variants.append((name, label, {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
                                       for k, v in overrides.items()}))
    datasets: list[str] = []
    for node in nodes["datasets"].value:
        ds = _plain(node)
        if not isinstance(ds, str):
            raise SuiteError(f"{where(node)}: a dataset is an id or a path, got {ds!r}")
        if ds in datasets:
            raise SuiteError(f"{where(node)}: duplicate dataset {ds!r}")
        if not dataset_exists(ds):
            raise SuiteError(f"{where(node)}: unknown dataset {ds!r}: not a local or embedded Minari id, folder or "
                             f"D4RL file (`offrl datasets list`; {_make_hint(ds)})")
        datasets.append(ds)
    labels = [v[1] for v in variants]
    compare = []
    for pair in settings["compare"] or [[lb, labels[0]] for lb in labels[1:]]:
        if not (isinstance(pair, list) and len(pair) == 2 and all(p in labels for p in pair)):
            raise SuiteError(f"{where(nodes['compare'])}: compare entries are pairs of agent labels from "
                             f"{labels}, got {pair!r}")
        compare.append((pair[0], pair[1]))
    tasks = [Task(label, ds, RunConfig(
        agent=name, label=label, dataset=ds, env=settings["env"], domain=settings["domain"], seeds=settings["seeds"],
        seed=settings["seed"], steps=settings["steps"], online_steps=settings["online_steps"],
        eval_every=settings["eval_every"], eval_episodes=settings["eval_episodes"], threads=settings["threads"],
        risk_thresholds=[float(t) for t in settings["risk_thresholds"]],
        log_every=max(1, min(1000, (settings["steps"] + settings["online_steps"]) // 20)),
        plugins=[str((path.parent / p).resolve()) for p in settings["plugins"]], agent_config=dict(overrides)))
        for name, label, overrides in variants for ds in datasets]
    return Suite(settings["name"], str(path), tasks, labels, datasets, compare, settings)

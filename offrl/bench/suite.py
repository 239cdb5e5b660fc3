"""Benchmark suites: YAML files of agents × datasets × seeds × budget × overrides.

    name: quick
    agents:                      # a name, or {name, label, set} for a variant with overrides
      - bc
      - {name: iql, label: iql-beta10, set: {temperature: 10}}
      - {name: sac, label: sac-online, run: {steps: 0, offline_data: false}}   # run settings of this entry
      - {name: iql, label: iql-utd4, set: {utd: 4}, fork: iql}   # O2O: starts from iql's end-of-offline state
    datasets: [offrl/invertedpendulum/scripted-mixed-small-v0]
    seeds: 2                     # vectorised in one process per (agent, dataset) task
    steps: 3000                  # offline gradient steps
    online_steps: 0              # online fine-tuning steps after the offline phase
    eval_every: 1000
    eval_episodes: 5
    threads: 1                   # torch threads per task (`offrl bench run --threads N` overrides it for one sweep)
    compare: [[td3_bc, bc]]      # probability-of-improvement pairs in the report (default: each vs the first)
    report_wall_time: false      # true: the report adds each agent's run wall times (no longer byte-reproducible)

A suite may start from another: `extends: zoo` (a built-in name, or a YAML file beside this one) takes
every key of that suite but its name and description, and each key this file gives replaces the
inherited one whole (lists are not merged). A table that reads another suite's runs (a2pr reads the
zoo's a2pr row) extends it, so both keep one budget and one dataset list.

Every error names the file and line, and is raised before any run starts. A zoo dataset
(`offrl/<task>/<level>-v0`) missing on disk is listed in `Suite.missing` when the package ships the
behaviour policies that build it (`offrl bench` builds it first); otherwise it is an error that gives
the exact `offrl datasets make` command.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from offrl import OffrlError
from offrl.bench import SUITES_DIR
from offrl.agent import get_agent, load_plugin, parse_value, resolve_config, resolve_loop
from offrl.data import dataset_exists, dataset_shapes
from offrl.envs import dataset_level, find_task
from offrl.evaluate import make_env
from offrl.fields import check_fields
from offrl.trainer import RunConfig
from offrl.utils import closest, slug

TOP_KEYS = {"name": "", "description": "", "agents": [], "datasets": [], "seeds": 1, "steps": 0,
            "online_steps": 0, "eval_every": 0, "eval_episodes": 10, "threads": 1, "seed": 0,
            "compare": [], "plugins": [], "env": None, "domain": "auto", "risk_thresholds": [],
            "report_wall_time": False}


class SuiteError(OffrlError):
    pass


@dataclass
class Task:
    """One (agent variant, dataset) with all its seeds: one Trainer run, one run directory."""
    label: str
    dataset: str
    run: RunConfig
    fork: str = ""          # label of the entry whose end-of-offline state this run starts from (RunConfig.fork_from)

    @property
    def key(self) -> str:
        return f"{self.label}/{slug(self.dataset)}"

    @property
    def fork_key(self) -> str:
        """The run directory (relative to the sweep's output) of the run this one forks; '' if none."""
        return f"{self.fork}/{slug(self.dataset)}" if self.fork else ""


@dataclass
class Suite:
    name: str
    path: str
    tasks: list[Task]
    labels: list[str]
    datasets: list[str]
    compare: list[tuple[str, str]]
    settings: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)   # env id → zoo levels to build first

    def select(self, agents: list[str] | None = None, datasets: list[str] | None = None) -> Suite:
        """The suite cut down to these agent labels and datasets (None: all), in the suite's order; an
        unknown name is an error that lists the suite's own. For adding one agent's row to a table."""
        for asked, have, what in ((agents, self.labels, "agent"), (datasets, self.datasets, "dataset")):
            if asked is not None and not asked:
                raise SuiteError(f"no {what} named: give one or more of {', '.join(have)}, comma-separated")
            for name in asked or []:
                if name not in have:
                    raise SuiteError(f"suite {self.name} has no {what} {name!r}{closest(name, have)}; "
                                     f"its {what}s: {', '.join(have)}")
        keep = lambda t: (agents is None or t.label in agents) and (datasets is None or t.dataset in datasets)
        tasks = [t for t in self.tasks if keep(t)]
        needed = {zoo[:2] for zoo in map(zoo_level, dict.fromkeys(t.dataset for t in tasks)) if zoo is not None}
        missing = {env: [lv for lv in lvs if (env, lv) in needed] for env, lvs in self.missing.items()}
        return dataclasses.replace(self, tasks=tasks, missing={env: lvs for env, lvs in missing.items() if lvs})

    def with_threads(self, threads: int) -> Suite:
        """The suite with every task on this many torch threads: two on a free 2-core machine for one long
        run, one each when two runs share it. Scores do not depend on the count (tests/test_cli.py checks
        every built-in agent), so a row may mix counts and a run may resume on another; config.json records
        each run's."""
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise SuiteError(f"threads must be a positive integer, got {threads!r}")
        tasks = [dataclasses.replace(t, run=dataclasses.replace(t.run, threads=threads)) for t in self.tasks]
        return dataclasses.replace(self, tasks=tasks, settings={**self.settings, "threads": threads})


# Run settings an agent entry may change with `run:` (the rest are the suite's, the same for every entry).
ENTRY_RUN_KEYS = ("steps", "online_steps", "offline_data", "online_capacity", "eval_every", "eval_episodes", "sources",
                  "matmul_precision")


def _plain(node: yaml.Node) -> Any:
    """A YAML node as plain Python values (the line numbers stay on the nodes)."""
    return yaml.safe_load(yaml.serialize(node))


def find_suite(name_or_path: str, beside: Path | None = None) -> Path:
    """A suite's file: a YAML path (relative to `beside`, the extending suite's folder, when given), else a
    built-in suite's name."""
    p = beside / name_or_path if beside is not None else Path(name_or_path)
    if p.is_file():
        return p
    builtin = SUITES_DIR / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    names = sorted(x.stem for x in SUITES_DIR.glob("*.yaml"))
    raise SuiteError(f"no suite {name_or_path!r}{closest(name_or_path, names)}: give a YAML file"
                     f"{f' beside it in {beside}' if beside is not None else ''} or one of {', '.join(names)}")


def zoo_level(ds: str) -> tuple[str, str, bool] | None:
    """(env id, level, shipped policies?) of a zoo id `offrl/<task>/<level>-v0`, else None. A maze zoo id
    (`offrl/pointmaze/<maze>[-dense]-v0`, scripted: always buildable) has level ''."""
    from offrl.maze import env_of_dataset
    from offrl.envs import RECIPES, TASKS
    from offrl.zoo import LEVELS, SHIPPED_POLICIES

    if env_of_dataset(ds):
        return env_of_dataset(ds), "", True
    parts = ds.split("/")
    if len(parts) == 3 and parts[0] == "offrl" and parts[1] in RECIPES and parts[2].removesuffix("-v0") in LEVELS:
        shipped = (SHIPPED_POLICIES / f"{parts[1]}-standard-seed0" / "index.json").exists()
        return TASKS[parts[1]].env_id, parts[2].removesuffix("-v0"), shipped
    return None


def make_command(env_id: str, levels: list[str], shipped: bool) -> str:
    """The `offrl datasets make` command that builds these zoo levels (standard budget)."""
    if not any(levels):                                     # a maze zoo set: one per env id
        return f"offrl datasets make {env_id} --budget standard"
    return (f"offrl datasets make {env_id} --budget standard --levels {','.join(levels)}"
            + (" --from-policies shipped" if shipped else ""))


def _make_hint(ds: str) -> str:
    """How to build a missing zoo dataset: the exact `datasets make` command when the id is one."""
    zoo = zoo_level(ds)
    if zoo is not None:
        # Without committed policies for the task the make trains its behaviour policy first.
        return f"make it with `{make_command(zoo[0], [zoo[1]], zoo[2])}`"
    return "`offrl datasets make` builds the offrl zoo"


def _where(node: yaml.Node) -> str:
    """file:line of a node (its own file: an inherited key points into the suite it came from)."""
    return f"{node.start_mark.name}:{node.start_mark.line + 1}"


def _top_nodes(path: Path, children: tuple[Path, ...] = ()) -> dict[str, yaml.Node]:
    """A suite file's top-level value nodes by key, over those of the suite it `extends:` (whose keys but
    name and description it inherits; its own replace them whole). children: the files extending this one."""
    with open(path) as f:            # composed from the file, so every node's mark names it
        try:
            root = yaml.compose(f)
        except yaml.YAMLError as e:
            raise SuiteError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(root, yaml.MappingNode):
        raise SuiteError(f"{path}: a suite is a YAML mapping with agents, datasets, seeds, steps, …")
    nodes: dict[str, yaml.Node] = {}
    for k, v in root.value:
        key = k.value
        if key not in TOP_KEYS and key != "extends":
            valid = [*TOP_KEYS, "extends"]
            raise SuiteError(f"{_where(k)}: unknown key {key!r}{closest(key, valid)}; valid keys: {', '.join(valid)}")
        if key in nodes:
            raise SuiteError(f"{_where(k)}: key {key!r} appears twice")
        nodes[key] = v
    if "extends" not in nodes:
        return nodes
    node = nodes.pop("extends")
    base = _plain(node)
    if not isinstance(base, str) or not base:
        raise SuiteError(f"{_where(node)}: extends is one suite: a built-in name or a YAML file beside this one, got {base!r}")
    try:
        base_path = find_suite(base, beside=path.parent)
    except SuiteError as e:
        raise SuiteError(f"{_where(node)}: extends: {e}") from None
    chain = (*children, path.resolve())
    if base_path.resolve() in chain:
        raise SuiteError(f"{_where(node)}: extends: {base!r} leads back to {path.name} "
                         f"({' → '.join(p.name for p in (*chain, base_path))}); a suite cannot extend itself")
    inherited = _top_nodes(base_path, chain)
    return {**{k: v for k, v in inherited.items() if k not in ("name", "description")}, **nodes}


def load_suite(name_or_path: str, build_missing: bool = False) -> Suite:
    """Parse and check a suite. build_missing: missing zoo datasets with shipped behaviour policies go
    to `Suite.missing` instead of failing (the caller builds them before the first run)."""
    path = find_suite(name_or_path)
    nodes = _top_nodes(path)
    settings = {k: (_plain(nodes[k]) if k in nodes else d) for k, d in TOP_KEYS.items()}
    settings["name"] = settings["name"] or path.stem
    if not isinstance(settings["report_wall_time"], bool):
        raise SuiteError(f"{_where(nodes['report_wall_time'])}: report_wall_time is true or false")
    for key in ("seeds", "steps", "online_steps", "eval_every", "eval_episodes", "threads", "seed"):
        if not isinstance(settings[key], int) or isinstance(settings[key], bool) or settings[key] < 0:
            raise SuiteError(f"{_where(nodes[key])}: {key} must be a non-negative integer, got {settings[key]!r}")
    thresholds = settings["risk_thresholds"]
    if not (isinstance(thresholds, list) and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in thresholds)):
        raise SuiteError(f"{_where(nodes['risk_thresholds'])}: risk_thresholds is a list of numbers (θ of P(G ≥ θ)), "
                         f"got {thresholds!r}")
    if settings["seeds"] < 1:
        raise SuiteError(f"{_where(nodes['seeds'])}: seeds must be ≥ 1")
    plugin_dir = Path(nodes["plugins"].start_mark.name).parent if "plugins" in nodes else path.parent   # its file's
    for plugin in settings["plugins"]:
        load_plugin(plugin_dir / plugin if not Path(plugin).is_absolute() else plugin)
    for req in ("agents", "datasets"):
        if req not in nodes or not isinstance(nodes[req], yaml.SequenceNode) or not nodes[req].value:
            raise SuiteError(f"{path}: '{req}' must be a non-empty list")

    variants: list[tuple[str, str, dict[str, Any], dict[str, Any], str]] = []     # name, label, set, run, fork
    for node in nodes["agents"].value:
        entry = _plain(node)
        if isinstance(entry, str):
            name, label, overrides = entry, entry, {}
        elif isinstance(entry, dict) and "name" in entry:
            unknown = set(entry) - {"name", "label", "set", "run", "fork"}
            if unknown:
                raise SuiteError(f"{_where(node)}: unknown agent field(s) {sorted(unknown)}; use name, label, set, run, fork")
            name, label, overrides = entry["name"], entry.get("label", entry["name"]), entry.get("set") or {}
            run_over = entry.get("run") or {}
            if not isinstance(overrides, dict) or not isinstance(run_over, dict):
                raise SuiteError(f"{_where(node)}: an agent entry's set: and run: are mappings (key: value), "
                                 f"got set={overrides!r}, run={run_over!r}")
            for k, v in run_over.items():
                if k not in ENTRY_RUN_KEYS:
                    raise SuiteError(f"{_where(node)}: run: {k!r} cannot differ between agents{closest(k, ENTRY_RUN_KEYS)}; "
                                     f"an entry may set {', '.join(ENTRY_RUN_KEYS)}")
                if k == "sources":            # further buffer sources: {name: {factory, share, …}} (e.g. pgd)
                    if not (isinstance(v, dict) and all(isinstance(s, dict) for s in v.values())):
                        raise SuiteError(f"{_where(node)}: run: sources is a mapping of source names to settings, got {v!r}")
                    continue
                if k == "matmul_precision":     # e.g. a bfloat16 twin of a costly agent: {label: cql-bf16, …};
                    continue                    # its values are checked with every RunConfig field below
                want = bool if k == "offline_data" else int
                if not isinstance(v, want) or (want is int and (isinstance(v, bool) or v < 0)):
                    raise SuiteError(f"{_where(node)}: run: {k} must be {'true or false' if want is bool else 'a non-negative integer'}, got {v!r}")
        else:
            raise SuiteError(f"{_where(node)}: an agent is a name or {{name, label, set}}, got {entry!r}")
        try:
            cls = get_agent(str(name))
            for k, v in overrides.items():
                parse_value(cls.Config, k, v if not isinstance(v, (list, tuple)) else ",".join(map(str, v)))
        except OffrlError as e:
            raise SuiteError(f"{_where(node)}: {e}") from None
        if any(label == v[1] for v in variants):
            raise SuiteError(f"{_where(node)}: duplicate agent entry {label!r}; give variants distinct labels")
        fork = entry.get("fork", "") if isinstance(entry, dict) else ""
        if fork:
            source = next((v for v in variants if v[1] == fork), None)
            if source is None:
                raise SuiteError(f"{_where(node)}: fork: {fork!r} is not an agent entry listed above this one; a fork "
                                 f"starts from an earlier entry's end-of-offline state{closest(str(fork), [v[1] for v in variants])}")
            if source[4]:
                raise SuiteError(f"{_where(node)}: fork: {fork!r} is itself a fork; fork its source {source[4]!r}")
            if source[0] != name or source[3] != (run_over if isinstance(entry, dict) else {}):
                raise SuiteError(f"{_where(node)}: fork: {fork!r} must be the same agent with the same run: settings "
                                 f"(it is {source[0]} with run: {source[3] or {}}); only agent settings may differ")
        variants.append((name, label, {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
                                       for k, v in overrides.items()}, run_over if isinstance(entry, dict) else {}, fork))
    datasets: list[str] = []
    suite_missing: dict[str, list[str]] = {}
    for node in nodes["datasets"].value:
        ds = _plain(node)
        if not isinstance(ds, str):
            raise SuiteError(f"{_where(node)}: a dataset is an id or a path, got {ds!r}")
        if ds in datasets:
            raise SuiteError(f"{_where(node)}: duplicate dataset {ds!r}")
        zoo = zoo_level(ds)
        if not dataset_exists(ds) and build_missing and zoo is not None and zoo[2]:
            suite_missing.setdefault(zoo[0], []).append(zoo[1])
        elif not dataset_exists(ds):
            raise SuiteError(f"{_where(node)}: unknown dataset {ds!r}: not a local or embedded Minari id, folder or "
                             f"D4RL file (`offrl datasets list`; {_make_hint(ds)})")
        datasets.append(ds)
    labels = [v[1] for v in variants]
    compare = []
    for pair in settings["compare"] or [[lb, labels[0]] for lb in labels[1:]]:
        if not (isinstance(pair, list) and len(pair) == 2 and all(p in labels for p in pair)):
            inherited = nodes["compare"].start_mark.name != str(path)
            raise SuiteError(f"{_where(nodes['compare'])}: compare entries are pairs of agent labels from "
                             f"{labels}, got {pair!r}" + (f" (inherited by {path.name} through extends: give it its "
                                                         "own compare:)" if inherited else ""))
        compare.append((pair[0], pair[1]))
    def task(name: str, label: str, overrides: dict[str, Any], run_over: dict[str, Any], fork: str, ds: str) -> Task:
        budget = {k: run_over.get(k, settings[k]) for k in ("steps", "online_steps", "eval_every", "eval_episodes")}
        return Task(label, ds, fork=fork, run=RunConfig(
            agent=name, label=label, dataset=ds, env=settings["env"], domain=settings["domain"], seeds=settings["seeds"],
            seed=settings["seed"], threads=settings["threads"], risk_thresholds=[float(t) for t in settings["risk_thresholds"]],
            log_every=max(1, min(1000, (budget["steps"] + budget["online_steps"]) // 20)),
            plugins=[str((plugin_dir / p).resolve()) for p in settings["plugins"]], agent_config=dict(overrides),
            **budget, **{k: v for k, v in run_over.items() if k not in budget}))

    tasks = [task(*variant, ds) for variant in variants for ds in datasets]
    if settings["env"]:                       # one env for every dataset: their shapes must fit it
        try:
            probe = make_env(settings["env"])
        except OffrlError as e:
            raise SuiteError(f"{_where(nodes['env'])}: {e}") from None
        env_shapes = (probe.observation_space.shape[0], probe.action_space.shape[0])
        probe.close()
        for node, ds in zip(nodes["datasets"].value, datasets):
            shapes = dataset_shapes(ds)
            if shapes is not None and shapes != env_shapes:
                raise SuiteError(f"{_where(node)}: dataset {ds!r} has observation and action sizes {shapes}, but the "
                                 f"suite's env {settings['env']} (line {nodes['env'].start_mark.line + 1}) has "
                                 f"{env_shapes}; remove env: or give datasets of that env")
    entry_nodes = dict(zip(labels, nodes["agents"].value))
    for t in tasks:                           # every agent and loop value in its declared range, per dataset
        task_info = find_task(t.dataset)
        domain = t.run.domain if t.run.domain != "auto" else (task_info.domain if task_info else "locomotion")
        try:
            check_fields(t.run, lambda name: f"{name} of {t.label}")
            cls = get_agent(t.run.agent)
            level = dataset_level(t.dataset)
            cfg = resolve_config(cls, domain, t.run.online_steps > 0, t.run.agent_config, level)
            resolve_loop(cls, domain, t.run.online_steps > 0, t.run.agent_config, level)
        except OffrlError as e:
            raise SuiteError(f"{_where(entry_nodes[t.label])}: {t.label} on {t.dataset}: {e}") from None
        if t.fork:                            # the fork shares the source's offline phase: only online fields differ
            source = next(u for u in tasks if u.label == t.fork and u.dataset == t.dataset)
            theirs = dataclasses.asdict(resolve_config(cls, domain, True, source.run.agent_config, level))
            offline = [k for k, v in dataclasses.asdict(cfg).items() if theirs[k] != v and k not in cls.ONLINE_FIELDS]
            if t.run.steps == 0 or t.run.online_steps == 0:
                raise SuiteError(f"{_where(entry_nodes[t.label])}: {t.label} forks {t.fork}'s offline phase, so it needs "
                                 f"steps > 0 and online_steps > 0")
            if offline:
                raise SuiteError(f"{_where(entry_nodes[t.label])}: {t.label} forks {t.fork}'s offline phase but sets "
                                 f"{', '.join(offline)}, which act offline; {t.run.agent} may fork on "
                                 f"{', '.join(sorted(cls.ONLINE_FIELDS)) or 'no agent setting'} and loop settings only")
    for t in tasks:
        if t.run.steps == 0 and t.run.online_steps == 0:
            raise SuiteError(f"{path}: {t.label} has nothing to do (steps and online_steps are both 0)")
        if t.run.steps > 0 and not t.run.offline_data:
            raise SuiteError(f"{path}: {t.label} has offline_data: false, which needs steps: 0")
    return Suite(settings["name"], str(path), tasks, labels, datasets, compare, settings, suite_missing)

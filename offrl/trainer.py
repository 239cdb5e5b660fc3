"""The one training loop: offline gradient steps, then online env steps, evaluation, run directory.

A run directory holds config.json (enough to rerun), metrics.jsonl, TensorBoard events (tb/),
checkpoint.pt (weights, optimisers, online buffer, RNG states, counters; written atomically) and,
when finished, final.json with raw and normalised scores per seed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from offrl import OffrlError, __version__
from offrl.agent import Agent, LoopConfig, Phase, Spec, get_agent, load_plugin, resolve_config, resolve_loop
from offrl.buffer import SOURCES, Buffer
from offrl.data import Dataset, load_dataset
from offrl.envs import dataset_level, find_task
from offrl.risk import risk_metrics
from offrl.evaluate import EnvBatch, env_state, evaluate, fit_to_env, make_env, restore_env_state, time_limit_of
from offrl.fast import check_mode, update_step
from offrl.fields import check_fields
from offrl.record import Evaluation, Risk, RunRecord, Scores, summarize_distribution
from offrl.runconfig import RUN_FLAGS, RunConfig
from offrl.utils import (DirectoryLock, atomic_write, auto_threads, check_device, check_writable_dir, closest,
                         remove_stale_temps, write_json)


class NonFiniteError(OffrlError):
    """A loss went non-finite; the run stopped and kept its last good checkpoint."""


class _Pause(Exception):
    """Raised inside the loop when `train(until=...)` reaches its step; the checkpoint is written."""


OFFLINE_STATE = "offline.pt"       # an O2O run's state at the end of its offline phase (RunConfig.fork_from)
CHECKPOINT_KEYS = ("agent", "buffer", "rng", "np_rng", "offline_step", "online_step", "updates", "evals",
                   "online_episodes", "metrics_bytes", "online_env")


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Assembly:
    """Everything a run is built from, validated: `assemble` makes it, the Trainer runs it."""
    dataset: Dataset | None
    env_id: str | None
    domain: str
    cfg: Any                           # the agent's resolved config (an AgentConfig subclass)
    loop: LoopConfig
    spec: Spec
    time_feature: bool
    ref: tuple[float | None, float | None]
    ref_source: str
    dataset_hash: str | None = None    # sha256 of the transitions as loaded (= a zoo level's offrl_content_hash)


def check_run(run: RunConfig) -> type[Agent]:
    """The checks that need no data: plug-ins, agent name, budgets, device and speed mode."""
    for p in run.plugins:
        load_plugin(p)
    agent_cls = get_agent(run.agent)
    check_fields(run, lambda name: f"--{name.replace('_', '-')}" if name in RUN_FLAGS else f"run setting {name}")
    if run.steps == 0 and run.online_steps == 0:
        raise OffrlError("nothing to do: both --steps and --online-steps are 0")
    if run.dataset is None and run.steps > 0:
        raise OffrlError("offline steps need a dataset: pass --dataset, or --steps 0 for an online-only run")
    if not run.offline_data and run.steps > 0:
        raise OffrlError("offline_data=false keeps the dataset out of the buffer, so it needs --steps 0")
    check_device(run.device)
    check_mode(run.compile_mode, run.device)
    return agent_cls


def assemble(run: RunConfig, agent_cls: type[Agent], dataset: Dataset | None = None) -> Assembly:
    """Load the data, fit it to the env, resolve the agent and loop configs; every check before any work."""
    dataset = dataset if dataset is not None else (
        load_dataset(run.dataset, download=run.download, env_id=run.env) if run.dataset else None)
    env_id = run.env or (dataset.env_id if dataset else None)
    # Before any fitting: the zoo's levels rebuilt on another CPU differ in their bytes (the policies'
    # forward passes round differently), and reports must see which runs share a build.
    dataset_hash = dataset.content_hash() if dataset is not None else None
    needs_env = run.online_steps > 0 or run.eval_episodes > 0
    if needs_env and env_id is None:
        raise OffrlError(f"dataset {run.dataset} names no environment; pass --env ENV_ID "
                         "(or --eval-episodes 0 for an offline run without evaluation)")
    if dataset is not None and env_id:
        dataset = fit_to_env(dataset, env_id)
    if dataset is not None:
        obs_dim, act_dim = dataset.obs_dim, dataset.act_dim
    else:
        probe = make_env(env_id)
        obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
        probe.close()
    task = find_task(run.dataset or "") or find_task(env_id or "")
    domain = run.domain if run.domain != "auto" else (task.domain if task else "locomotion")
    o2o = run.online_steps > 0
    level = dataset_level(run.dataset) if run.dataset else None     # the key of the agent's DATASET_DEFAULTS
    cfg = resolve_config(agent_cls, domain, o2o, run.agent_config, level)
    loop = resolve_loop(agent_cls, domain, o2o, run.agent_config, level)
    time_feature = bool(cfg.time_feature)
    if time_feature:
        if env_id is None:
            raise OffrlError("time_feature=true needs the env's time limit: pass --env ENV_ID")
        limit = time_limit_of(env_id)
        if dataset is not None:
            dataset = dataset.with_time_feature(limit)
        obs_dim += 1
    spec = Spec.from_dataset(dataset, domain) if dataset is not None else Spec(obs_dim, act_dim, domain)
    ref = (dataset.ref_min_score, dataset.ref_max_score) if dataset else (None, None)
    return Assembly(dataset, env_id, domain, cfg, loop, spec, time_feature, ref,
                    dataset.ref_source if dataset else "none", dataset_hash)


def build_buffer(run: RunConfig, a: Assembly, agent: Agent, device: torch.device) -> Buffer:
    """The buffer with the agent's declared columns and every further source (the agent's, then the run's)."""
    buffer = Buffer(a.dataset if run.offline_data else None, run.seeds, device, run.online_capacity or run.online_steps,
                    a.spec.obs_dim, a.spec.act_dim, a.loop.mixing(), seed=run.seed + 1, columns=agent.columns(),
                    gamma=a.cfg.gamma)
    for i, (name, settings) in enumerate({**agent.sources(), **run.sources}.items()):
        settings = dict(settings)
        factory = settings.pop("factory", name)
        if isinstance(factory, str):
            if factory not in SOURCES:
                raise OffrlError(f"unknown buffer source {factory!r}{closest(factory, SOURCES)}; registered: "
                                 f"{', '.join(sorted(SOURCES)) or 'none'} (offrl.buffer.register_source adds one)")
            factory = SOURCES[factory]
        settings.setdefault("seed", run.seed * 1_000_003 + 3 + i)
        buffer.add_source(name, factory(buffer, agent, **settings))
    return buffer


class OnlineCollector:
    """One env per seed, stepped in lockstep: the agent's actions in, transitions into the buffer.

    Keeps the episode bookkeeping (returns, lengths, the reset-seed counter) and, for checkpoints, the
    episodes in flight (MuJoCo physics, time-limit counters and env RNGs), so a resumed run continues
    them exactly. Env i's k-th reset uses seed `base_seed + k·S + i`."""

    def __init__(self, env_id: str, seeds: int, time_feature: bool, base_seed: int, device: torch.device,
                 episodes: list[dict[str, Any]]):
        self.envs = EnvBatch(env_id, seeds, time_feature)
        self.S, self.base_seed, self.device, self.episodes = seeds, base_seed, device, episodes
        self.episode_index = 0
        self.ep_return, self.ep_len = np.zeros(seeds), np.zeros(seeds, np.int64)
        self.obs: np.ndarray | None = None

    def _t(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, device=self.device)

    def _reset(self, i: int) -> np.ndarray:
        return self.envs.envs[i].reset(seed=self.base_seed + self.episode_index * self.S + i)[0]

    def start(self, agent: Agent, saved: dict[str, Any] | None) -> None:
        """Fresh episodes, or (resume) the saved ones mid-flight."""
        if saved is not None:
            self.episode_index = saved["episode_index"]
            self.obs = saved["obs"].numpy().copy()
            self.ep_return, self.ep_len = saved["ep_return"].numpy().copy(), saved["ep_len"].numpy().copy()
            if saved["envs"] is not None:
                for env, st in zip(self.envs.envs, saved["envs"]):
                    env.reset(seed=0)
                    restore_env_state(env, st)
                return                   # (the agent's checkpoint holds its episode state)
            # envs without a snapshot restart their episodes
            self.ep_return[:], self.ep_len[:] = 0.0, 0
        self.obs = np.stack([self._reset(i) for i in range(self.S)]).astype(np.float32)
        self.episode_index += 1
        agent.begin_episodes(self._t(self.obs)[:, None], torch.ones(self.S, 1, dtype=torch.bool, device=self.device))

    def step(self, actions: np.ndarray, agent: Agent, buffer: Buffer, global_step: int) -> None:
        """Step every env with actions [S, A]; store the transitions; reset the envs whose episode ended."""
        obs, S = self.obs, self.S
        next_obs = np.empty_like(obs)
        rewards, terms = np.zeros(S, np.float32), np.zeros(S, np.float32)
        for i, env in enumerate(self.envs.envs):
            o2, r, term, trunc, _ = env.step(actions[i])
            next_obs[i], rewards[i], terms[i] = o2, r, float(term)
            self.ep_return[i] += r
            self.ep_len[i] += 1
            if term or trunc:
                self.episodes.append({"step": global_step + 1, "seed": i, "return": float(self.ep_return[i]),
                                      "length": int(self.ep_len[i])})
                self.ep_return[i], self.ep_len[i] = 0.0, 0
        rewards_t = self._t(rewards)
        agent.observe(rewards_t[:, None])
        buffer.add(self._t(obs), self._t(actions), rewards_t, self._t(next_obs), self._t(terms))
        # Reset finished envs only after storing the true final observation.
        finished = np.flatnonzero(self.ep_len == 0).tolist()
        if finished:
            buffer.end_episodes(finished)
        for i in finished:
            next_obs[i] = self._reset(i)
        if finished:
            self.episode_index += 1
            agent.begin_episodes(self._t(next_obs)[:, None], self._t(self.ep_len == 0)[:, None])
        self.obs = next_obs

    def state(self) -> dict[str, Any]:
        states = [env_state(e) for e in self.envs.envs]
        return {"episode_index": self.episode_index, "obs": torch.from_numpy(self.obs.copy()),
                "ep_return": torch.from_numpy(self.ep_return.copy()), "ep_len": torch.from_numpy(self.ep_len.copy()),
                "envs": None if any(x is None for x in states) else states}

    def close(self) -> None:
        self.envs.close()


class Trainer:
    """Builds dataset, buffer, agent and envs from a RunConfig, validating everything first, then runs."""

    def __init__(self, run: RunConfig, out: str | Path, resume: bool = False, progress: bool | None = None,
                 dataset: Dataset | None = None, log: Callable[[str], None] | None = None):
        """progress: the progress bar (None: only on a terminal); log: where a line per evaluation goes
        (step, score, elapsed time, ETA), e.g. `print` when output goes to a file."""
        self.run, self.out, self.progress, self.log = run, Path(out), progress, log
        agent_cls = check_run(run)
        check_writable_dir(self.out)
        self.lock = DirectoryLock(self.out)
        if self.out.exists():
            self.lock.check()                  # another process is training this directory: say so now
        self.ckpt_path = self.out / "checkpoint.pt"
        if self.out.exists() and (self.ckpt_path.exists() or (self.out / "final.json").exists()) and not resume:
            raise OffrlError(f"run directory {self.out} already holds a run; pass --resume to continue it, "
                             "or choose another --out")
        if resume and (self.out / "config.json").exists():
            saved = json.loads((self.out / "config.json").read_text())["run"]
            mine = dataclasses.asdict(run)
            diff = [k for k in ("agent", "dataset", "seeds", "seed", "steps", "online_steps", "agent_config")
                    if saved.get(k) != mine.get(k)]
            if diff:
                raise OffrlError(f"--resume: {self.out} was started with different settings ({', '.join(diff)}: "
                                 f"{[saved.get(k) for k in diff]} vs {[mine.get(k) for k in diff]}); rerun with the "
                                 "same settings or choose another --out")

        a = self.assembly = assemble(run, agent_cls, dataset)
        self.dataset, self.env_id, self.domain, self.cfg, self.loop = a.dataset, a.env_id, a.domain, a.cfg, a.loop
        self.dataset_hash = a.dataset_hash
        if resume and self.ckpt_path.exists() and (self.out / "config.json").exists():
            saved = json.loads((self.out / "config.json").read_text())
            started_on = (saved.get("dataset") or {}).get("content_hash")
            started = saved["run"].get("matmul_precision", "highest")
            if started != run.matmul_precision:
                raise OffrlError(f"--resume: {self.out} was started with matmul_precision {started!r}, now "
                                 f"{run.matmul_precision!r}; one run keeps one precision: resume with "
                                 f"--matmul-precision {started}, or delete the run directory to start afresh")
            if started_on is not None and started_on != self.dataset_hash:
                raise OffrlError(f"--resume: {self.out} was started on another build of {run.dataset} (sha256 "
                                 f"{started_on[:12]}…, now {str(self.dataset_hash)[:12]}…; rebuilt, or made on another "
                                 "machine); continuing would mix two datasets in one run: restore the dataset it "
                                 "started on, or delete the run directory to start afresh")
        self.spec, self.time_feature, self.ref, self.ref_source = a.spec, a.time_feature, a.ref, a.ref_source
        self.threads, self.threads_why = (run.threads, "--threads") if run.threads > 0 else auto_threads()
        fresh = not (resume and (self.ckpt_path.exists() or (self.out / "final.json").exists()))
        self.fork_source = self._check_fork(agent_cls) if run.fork_from and fresh else None
        torch.set_num_threads(self.threads)
        torch.set_float32_matmul_precision(run.matmul_precision)   # process-wide: every Trainer sets its own
        torch.manual_seed(run.seed)
        self.device = torch.device(run.device)
        self.agent: Agent = agent_cls(self.spec, self.cfg, run.seeds, self.device)
        self.buffer = build_buffer(run, a, self.agent, self.device)
        self._update = update_step(self.agent, self.buffer, self.cfg.batch_size, run.compile_mode)
        self.eval_envs = EnvBatch(self.env_id, run.seeds * run.eval_episodes, self.time_feature) if run.eval_episodes > 0 else None
        self.np_rng = np.random.default_rng(run.seed + 2)
        # Counters and history (restored by resume).
        self.offline_step = 0
        self.online_step = 0
        self.updates = 0               # gradient steps taken, both phases (sources refill on this count)
        self.evals: list[Evaluation] = []
        self.online_episodes: list[dict[str, Any]] = []
        self.metrics_bytes = 0
        self.wall_before = 0.0         # training wall time of earlier sessions, up to the checkpoint resumed from
        self.resumed = False
        self.resumed_from: int | None = None     # the step of the checkpoint a resumed run continues from
        self._last_good_step: int | None = None
        self._collector: OnlineCollector | None = None
        self._saved_online_env: dict[str, Any] | None = None
        self._first_bad: torch.Tensor | None = None
        # The latest value of each metric since the last train line: a sub-step that runs every k updates
        # (TD3's delayed actor, FamO2O's balance model) reports only on its own updates, which a log step
        # may miss; its last value is logged with the line.
        self._recent: dict[str, torch.Tensor] = {}
        if resume and self.ckpt_path.exists():
            self._load_checkpoint()
        elif resume and (self.out / "final.json").exists():
            self.resumed = True
        elif self.fork_source is not None:
            self._load_checkpoint(self.fork_source / OFFLINE_STATE)

    # Run settings a fork may change (the rest shape the offline phase or its record): its name, its source,
    # its agent settings (checked field by field) and how the work is spread over threads and checkpoints.
    FORK_FREE = ("label", "fork_from", "agent_config", "threads", "checkpoint_every")

    def _check_fork(self, agent_cls: type[Agent]) -> Path:
        """The source directory of a fresh fork, after checking that its offline phase is this run's: the
        same run settings (but FORK_FREE), the same build of the dataset, agent settings that differ only
        in the agent's ONLINE_FIELDS (loop keys all act online)."""
        run, src = self.run, Path(self.run.fork_from)
        what = f"fork_from {src}"
        if run.steps == 0 or run.online_steps == 0:
            raise OffrlError(f"{what}: a fork takes another run's offline phase and trains its own online phase, so it "
                             f"needs steps > 0 and online_steps > 0 (got {run.steps} and {run.online_steps})")
        if not (src / "config.json").is_file():
            raise OffrlError(f"{what}: not a run directory (no config.json); give the directory of the run to fork")
        if not (src / OFFLINE_STATE).is_file():
            raise OffrlError(f"{what}: holds no {OFFLINE_STATE} (its end-of-offline state): its offline phase has not "
                             "finished, or it ran before offrl kept that state; finish or rerun it first")
        if src.resolve() == self.out.resolve():
            raise OffrlError(f"{what}: a run cannot fork itself; choose another --out")
        saved = json.loads((src / "config.json").read_text())
        mine = json.loads(json.dumps(self._config_dict()))          # as config.json holds it (tuples → lists)
        diff = [k for k in mine["run"] if k not in self.FORK_FREE and saved["run"].get(k) != mine["run"][k]]
        if diff:
            raise OffrlError(f"{what}: its run settings differ from this run's in {', '.join(diff)} "
                             f"({[saved['run'].get(k) for k in diff]} vs {[mine['run'][k] for k in diff]}); a fork "
                             "shares the whole offline phase, so only the agent's online settings may differ")
        agent_diff = [k for k in mine["agent"] if saved["agent"].get(k) != mine["agent"][k]]
        offline = [k for k in agent_diff if k not in agent_cls.ONLINE_FIELDS]
        if offline:
            online = ", ".join(sorted(agent_cls.ONLINE_FIELDS)) or "none"
            raise OffrlError(f"{what}: the agent settings {', '.join(offline)} differ "
                             f"({[saved['agent'].get(k) for k in offline]} vs {[mine['agent'][k] for k in offline]}) "
                             f"and act in the offline phase; {run.agent} may fork on its online settings only ({online})")
        started_on = (saved.get("dataset") or {}).get("content_hash")
        if started_on != self.dataset_hash:
            raise OffrlError(f"{what}: it trained on another build of {run.dataset} (sha256 {str(started_on)[:12]}…, "
                             f"now {str(self.dataset_hash)[:12]}…); rerun the source on this build")
        return src

    # --- run directory ---
    def _config_dict(self) -> dict[str, Any]:
        return {"offrl_version": __version__, "torch_version": torch.__version__,
                "run": dataclasses.asdict(self.run), "agent": dataclasses.asdict(self.cfg),
                "loop": dataclasses.asdict(self.loop), "domain": self.domain, "env": self.env_id, "threads": self.threads,
                "dataset": None if self.dataset is None else {
                    "name": self.dataset.name, "source": self.dataset.source, "transitions": len(self.dataset),
                    "episodes": self.dataset.num_episodes, "ref_min_score": self.ref[0],
                    "ref_max_score": self.ref[1], "ref_source": self.ref_source, "content_hash": self.dataset_hash}}

    def _normalized(self, returns: np.ndarray) -> np.ndarray | None:
        if self.ref[0] is None or self.ref[1] is None:
            return None
        return 100.0 * (returns - self.ref[0]) / (self.ref[1] - self.ref[0])

    def _save_checkpoint(self, offline_end: bool = False) -> None:
        """checkpoint.pt; at the end of an O2O run's offline phase also offline.pt, the state forks start from."""
        self._check_finite()
        state = {"agent": self.agent.state_dict(), "buffer": self.buffer.state_dict(), "rng": _rng_state(),
                 "np_rng": self.np_rng.bit_generator.state, "offline_step": self.offline_step,
                 "online_step": self.online_step, "updates": self.updates, "evals": [e.to_json() for e in self.evals],
                 "online_episodes": self.online_episodes, "metrics_bytes": self.metrics_bytes,
                 "wall_seconds": self.wall_before + time.time() - self._started,
                 "recent_metrics": {k: v.cpu() for k, v in self._recent.items()},
                 "online_env": None if self._collector is None else self._collector.state()}
        with self._writing("the checkpoint"):
            atomic_write(self.ckpt_path, lambda f: torch.save(state, f), binary=True)
        if offline_end:
            with self._writing(f"the end-of-offline state {OFFLINE_STATE}"):
                atomic_write(self.out / OFFLINE_STATE, lambda f: torch.save(state, f), binary=True)

    def _load_checkpoint(self, path: Path | None = None) -> None:
        """Continue from a checkpoint: this run's own, or (a fork) another run's end-of-offline state."""
        path = path or self.ckpt_path
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:
            raise OffrlError(f"{path}: the checkpoint cannot be read ({type(e).__name__}: {e}); "
                             "delete it to restart the run from scratch") from None
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
        if missing:
            holds = f"a dict of {', '.join(map(str, list(state)[:6]))}" if isinstance(state, dict) else type(state).__name__
            raise OffrlError(f"{path} is not an offrl run checkpoint: it holds {holds}, without "
                             f"{', '.join(missing[:4])}; delete it (or choose another --out) to start the run afresh")
        try:
            self.agent.load_state_dict(state["agent"])
        except OffrlError as e:
            raise OffrlError(f"{path}: {e}") from None
        self.buffer.load_state_dict(state["buffer"])
        _set_rng_state({k: (v.cpu() if isinstance(v, torch.Tensor) else [t.cpu() for t in v])
                        for k, v in state["rng"].items()})
        self.np_rng.bit_generator.state = state["np_rng"]
        self.offline_step, self.online_step, self.updates = state["offline_step"], state["online_step"], state["updates"]
        self.evals = [Evaluation.from_json(e) for e in state["evals"]]
        self.online_episodes = state["online_episodes"]
        self.metrics_bytes = state["metrics_bytes"]
        self.wall_before = state.get("wall_seconds", 0.0)        # (checkpoints before it was kept: 0)
        self._recent = {k: v.to(self.device) for k, v in state.get("recent_metrics", {}).items()}   # (older: none)
        self._saved_online_env = state["online_env"]
        self.resumed = True
        self.resumed_from = self._global_step()

    # --- logging ---
    def _open_logs(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        with self._writing("config.json"):
            remove_stale_temps(self.out)             # half-written files of a killed run (we hold the lock)
            write_json(self.out / "config.json", self._config_dict())
        metrics = self.out / "metrics.jsonl"
        if self.fork_source is not None:            # a fresh fork's offline lines are its source's
            with self._writing("metrics.jsonl"):
                shutil.copyfile(self.fork_source / "metrics.jsonl", metrics)
        with self._writing("metrics.jsonl"):
            if metrics.exists():                      # drop lines written after the checkpoint we resume from
                with open(metrics, "r+b") as f:
                    f.truncate(self.metrics_bytes)
            self.metrics_file = open(metrics, "ab")
        # TensorBoard's events are a view of metrics.jsonl: rebuilt from it, so after any kill and resume
        # every (tag, step) is there exactly once, as in an uninterrupted run.
        with self._writing("the TensorBoard events"):
            shutil.rmtree(self.out / "tb", ignore_errors=True)
            self.tb = SummaryWriter(str(self.out / "tb"))
            with open(metrics, "rb") as f:
                for line in f:
                    self._tb_record(json.loads(line))

    def _global_step(self) -> int:
        return self.offline_step + self.online_step

    def _tb_record(self, record: dict[str, Any]) -> None:
        for name, v in record.items():
            if isinstance(v, list) and v and isinstance(v[0], (int, float)):
                for s, x in enumerate(v):
                    self.tb.add_scalar(f"{record['kind']}/{name}/seed{s}", x, record["step"])
        for name, d in (record.get("diagnostics") or {}).items():     # an agent's distributions (Agent.diagnostics)
            edges = d["hist_edges"]
            for s, counts in enumerate(d["hist_counts"]):
                mean, std, n = d["mean"][s], d["std"][s], sum(counts)
                self.tb.add_histogram_raw(f"diagnostics/{name}/seed{s}", d["min"][s], d["max"][s], n, mean * n,
                                          (std ** 2 + mean ** 2) * n, edges[1:], counts, record["step"])
                for stat in ("mean", "q10", "q50", "q90"):
                    self.tb.add_scalar(f"diagnostics/{name}_{stat}/seed{s}", d[stat][s], record["step"])

    def _log(self, kind: str, values: dict[str, Any]) -> None:
        step = self._global_step()
        phase = "online" if self.online_step > 0 else "offline"
        record = {"step": step, "phase": phase, "kind": kind, **values}
        with self._writing("metrics.jsonl"):
            self.metrics_file.write((json.dumps(record) + "\n").encode())
            self.metrics_file.flush()
            self.metrics_bytes = self.metrics_file.tell()
        with self._writing("the TensorBoard events"):
            self._tb_record(record)

    def _log_metrics(self, metrics: dict[str, torch.Tensor]) -> None:
        values = {k: v.float().cpu().tolist() for k, v in metrics.items()}
        self._check_finite()
        self._log("train", values)

    # --- non-finite detection without a host sync per step ---
    def _track_finite(self, metrics: dict[str, torch.Tensor]) -> None:
        bad = ~torch.isfinite(torch.stack(list(metrics.values()))).all()     # metrics are all [S]: 3 ops a step
        first = bad & (self._first_bad < 0)
        self._first_bad = torch.where(first, self._global_step(), self._first_bad)
        self._last_metrics = metrics

    def _check_finite(self) -> None:
        if self._first_bad is None or int(self._first_bad) < 0:
            return
        bad_names = [k for k, v in self._last_metrics.items() if not torch.isfinite(v).all()]
        raise NonFiniteError(
            f"{self.run.agent}: a loss became non-finite at step {int(self._first_bad)} "
            f"({', '.join(bad_names) or 'see metrics.jsonl'}: {[self._last_metrics[k].tolist() for k in bad_names]}); "
            "the run stopped; " + (f"its last good checkpoint is {self.ckpt_path} (step {self._last_good_step})"
                                   if self._last_good_step is not None else "no checkpoint was written before it") +
            ". Lower the learning rates or check the dataset's rewards")

    # --- evaluation ---
    def _evaluate(self, phase: str) -> None:
        if self.eval_envs is None:
            return
        index = len(self.evals)
        returns = evaluate(self.agent, self.eval_envs, self.run.eval_episodes,
                           seed=self.run.seed * 1_000_003 + 10_000 + index * len(self.eval_envs))
        mean = returns.mean(1)
        norm = self._normalized(mean)
        record = Evaluation(mean.tolist(), None if norm is None else norm.tolist(), self._global_step(), phase,
                            returns.tolist(), self._save_snapshot() if self.run.snapshots else None, self._diagnostics())
        self.evals.append(record)
        self._log("eval", {k: v for k, v in record.to_json().items() if k not in ("step", "phase")})
        shown = f"{'score' if norm is not None else 'return'} {(norm if norm is not None else mean).mean():.1f}"
        if self._bar is not None:
            self._bar.set_postfix_str(shown)
        if self.log is not None:
            step, total = self._global_step(), self.run.steps + self.run.online_steps
            elapsed = time.time() - self._started
            eta = elapsed / max(step - self._start_step, 1) * (total - step)
            self.log(f"{self.run.label or self.run.agent} step {step}/{total} ({phase}): {shown} (mean over "
                     f"{self.run.seeds} seed{'s' * (self.run.seeds > 1)}) | elapsed {elapsed:.0f} s, ETA {eta:.0f} s")

    def _save_snapshot(self) -> str:
        """The networks now, as snapshots/step_<global step>.pt (atomic); returns the path in the run dir."""
        rel = f"snapshots/step_{self._global_step():09d}.pt"
        nets = self.agent.state_dict()["nets"]
        with self._writing(f"the snapshot {rel}"):
            atomic_write(self.out / rel, lambda f: torch.save(nets, f), binary=True)
        return rel

    # --- the loop ---
    def train(self, until: int | None = None) -> dict[str, Any] | None:
        """Run (or finish) the run; returns the content of final.json.

        until: stop with a checkpoint once this many steps (offline + online) are done and return None;
        a later `Trainer(..., resume=True).train()` continues exactly where it stopped.
        """
        final_path = self.out / "final.json"
        if final_path.exists() and self.resumed:
            return json.loads(final_path.read_text())
        with self._writing("the run directory"):
            self.out.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            return self._train(until, final_path)
        finally:
            self.lock.release()

    def _train(self, until: int | None, final_path: Path) -> dict[str, Any] | None:
        from tqdm import tqdm

        self._last_good_step = self._global_step() if self.ckpt_path.exists() else None
        self._open_logs()
        self._first_bad = torch.tensor(-1, device=self.device)
        total = self.run.steps + self.run.online_steps
        self._bar = tqdm(total=total, initial=self._global_step(), desc=self.run.agent, unit="step",
                         disable=None if self.progress is None else not self.progress, dynamic_ncols=True)
        started = self._started = time.time()
        self._start_step = self._global_step()
        self._until = until
        if self.run.snapshots and not self.resumed:     # the initial (random) networks, as step 0
            self._save_snapshot()
        try:
            self._offline_phase()
            self._online_phase()
        except _Pause:
            return None
        finally:
            self._bar.close()
            self.metrics_file.close()
            with self._writing("the TensorBoard events"):
                self.tb.close()
            if self.eval_envs is not None:
                self.eval_envs.close()
        result = self._final(time.time() - started).to_json()
        with self._writing("final.json"):
            write_json(final_path, result)
        return result

    @contextlib.contextmanager
    def _writing(self, what: str) -> Any:
        """Turn an OS error while writing (a full disk, a file-size limit, a vanished folder) into one line
        that says what was being written, at which step, and which checkpoint survives."""
        try:
            yield
        except OSError as e:
            good = self._last_good_step
            kept = (f"the last good checkpoint is step {good} ({self.ckpt_path})" if good is not None
                    else "no checkpoint was written yet")
            raise OffrlError(f"{(e.strerror or str(e)).lower()} ({e.filename or self.out}) while writing {what} at "
                             f"step {self._global_step()}; {kept}") from None

    def _phase(self, name: str) -> Phase:
        run = self.run
        if name == "offline":
            return Phase(name, run.steps, run.steps, run.online_steps, None, run.steps)
        learning = run.online_steps - (self.loop.random_steps if run.steps == 0 else 0)
        return Phase(name, run.online_steps, run.steps, run.online_steps, "offline" if run.steps > 0 else None,
                     max(learning, 0) * self.loop.utd)

    def _gradient_step(self) -> dict[str, torch.Tensor]:
        """One update of every seed; further sources refill first when due (eager, outside compiled code)."""
        self.buffer.refresh(self.updates, self.agent)
        metrics = self._update()
        self.updates += 1
        return metrics

    def _after_step(self, phase: str, s: int, total: int, metrics: dict[str, torch.Tensor] | None) -> None:
        """The cadence of both phases: log every `log_every`, evaluate every `eval_every`, checkpoint every
        `checkpoint_every` steps of the phase, and all three at its last step."""
        run, last = self.run, s == total
        self._bar.update(1)
        if metrics is not None:
            # a CUDA graph's outputs are overwritten by its next replay: keep copies of what is carried
            self._recent.update(metrics if run.compile_mode != "cuda-graphs" else {k: v.clone() for k, v in metrics.items()})
            if s % run.log_every == 0 or last:
                self._log_metrics(self._recent)
                self._recent = {}
        if (run.eval_every and s % run.eval_every == 0) or last:
            self._check_finite()
            self._evaluate(phase)
        # a phase shorter than checkpoint_every checkpoints at its evaluations (or 5 times), so a kill never loses it all
        every = run.checkpoint_every if total >= run.checkpoint_every else (run.eval_every or max(1, total // 5))
        due = s % every == 0 or last
        pause = self._until is not None and self._global_step() >= self._until
        if due or pause:
            self._save_checkpoint(offline_end=phase == "offline" and last and run.online_steps > 0)
            self._last_good_step = self._global_step()
        if pause:
            raise _Pause

    def _offline_phase(self) -> None:
        run = self.run
        if self.offline_step == 0 and run.steps > 0:
            self.agent.start_phase(self._phase("offline"))
        while self.offline_step < run.steps:
            metrics = self._gradient_step()
            self.offline_step += 1
            self._track_finite(metrics)
            self._after_step("offline", self.offline_step, run.steps, metrics)

    def _online_phase(self) -> None:
        run, loop = self.run, self.loop
        if self.online_step >= run.online_steps:
            return
        if self.online_step == 0:
            self.agent.start_phase(self._phase("online"))
        S = run.seeds
        collector = self._collector = OnlineCollector(self.env_id, S, self.time_feature,
                                                      run.seed * 1_000_003 + 7_000_000, self.device, self.online_episodes)
        collector.start(self.agent, self._saved_online_env)
        random_steps = loop.random_steps if run.steps == 0 else 0
        try:
            while self.online_step < run.online_steps:
                if self.online_step < random_steps:
                    actions = self.np_rng.uniform(-1, 1, (S, self.spec.act_dim)).astype(np.float32)
                else:
                    obs = torch.as_tensor(collector.obs, device=self.device)
                    actions = self.agent.act(obs[:, None], deterministic=False)[:, 0].cpu().numpy()
                collector.step(actions, self.agent, self.buffer, self._global_step())
                self.online_step += 1
                metrics = None
                if self.online_step > random_steps or run.steps > 0:
                    for _ in range(loop.utd):
                        metrics = self._gradient_step()
                    self._track_finite(metrics)
                self._after_step("online", self.online_step, run.online_steps, metrics)
        finally:
            collector.close()
            self._collector = None

    PROBE_STATES = 1024

    def _diagnostics(self) -> dict[str, dict[str, Any]] | None:
        """The agent's `diagnostics` at K probe states (evenly spaced dataset rows, the same at every
        evaluation), summarised per seed; None for agents without any (nothing is computed or drawn)."""
        if type(self.agent).diagnostics is Agent.diagnostics or self.dataset is None:
            return None
        obs = self.dataset.observations
        rows = np.linspace(0, len(obs) - 1, min(self.PROBE_STATES, len(obs))).round().astype(int)
        probe = torch.as_tensor(obs[rows], dtype=torch.float32, device=self.device).expand(self.run.seeds, -1, -1)
        with torch.no_grad():
            values = self.agent.diagnostics(probe)
        return {name: summarize_distribution(v.float().cpu().numpy()) for name, v in values.items()} or None

    def _final(self, wall: float) -> RunRecord:
        run = self.run
        out = RunRecord(run.agent, run.dataset, self.env_id, run.seeds, run.eval_episodes, run.steps, run.online_steps,
                        self.ref[0], self.ref[1], self.ref_source, round(wall, 2), label=run.label or run.agent,
                        evaluations=list(self.evals), wall_seconds=round(self.wall_before + wall, 2),
                        dataset_hash=self.dataset_hash)
        if not self.evals:
            return out
        returns = np.array([e.returns for e in self.evals])          # [n_evals, S]
        pack = lambda r: Scores(r.tolist(), None if self._normalized(r) is None else self._normalized(r).tolist())
        out.final = pack(returns[-1])
        out.best = pack(returns.max(0))
        offline = [e for e in self.evals if e.phase == "offline"]
        if run.online_steps > 0 and offline:
            out.offline_final = pack(np.array(offline[-1].returns))
        out.final_episode_returns = self.evals[-1].episode_returns
        out.diagnostics = self.evals[-1].diagnostics
        out.risk = Risk([risk_metrics(np.array(r), thresholds=run.risk_thresholds) for r in out.final_episode_returns],
                        run.eval_episodes)
        if run.eval_episodes < 100:
            out.risk.warning = (f"only {run.eval_episodes} episodes per seed; tail statistics need ≥100 "
                                "(set eval_episodes)")
        return out


def load_run_agent(run_dir: str | Path, device: str = "cpu") -> tuple[Agent, Assembly]:
    """The agent of a run directory with the weights of its checkpoint (e.g. a policy to guide or roll out)."""
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoint.pt").is_file():
        raise OffrlError(f"{run_dir} holds no checkpoint.pt; give a run directory written by `offrl train`")
    run = run_from_config_file(run_dir / "config.json")
    run.device, run.sources = device, {}
    agent_cls = check_run(run)
    a = assemble(run, agent_cls)
    agent = agent_cls(a.spec, a.cfg, run.seeds, device)
    agent.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=False, map_location=device)["agent"])
    return agent, a


def run_from_config_file(path: str | Path) -> RunConfig:
    """The RunConfig of a run directory's config.json, with the agent config pinned to what it resolved to."""
    d = json.loads(Path(path).read_text())
    run = RunConfig.from_dict(d["run"])
    run.agent_config = {**d["agent"], **d.get("loop", {})}
    return run

"""Run a suite: one run directory per task under `out/<label>/<dataset>`; finished runs (final.json,
written atomically) are skipped, unfinished ones resume from their checkpoints.

Launchers give identical numbers because every task fixes its own torch thread count and seeds:
  local  — in this process, one task after another (`workers=1`), or a pool of spawned processes;
  ray    — Ray tasks with CPU/GPU resources (fractional GPUs allowed), retried on failure. Without
           `address`, a local Ray instance is started on loopback only.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from offrl import OffrlError
from offrl.bench.suite import Suite, Task
from offrl.record import RunRecord
from offrl.utils import plural


def run_task(run: dict[str, Any], out: str) -> str:
    """Train (or finish) one task; importable by worker processes and Ray."""
    import torch

    from offrl.trainer import RunConfig, Trainer

    cfg = RunConfig.from_dict(run)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    Trainer(cfg, out, resume=True, progress=False).train()
    return out


def build_missing(suite: Suite, progress: bool | None = None, log: Callable[[str], None] = print) -> None:
    """Build the suite's missing zoo datasets: from the behaviour policies shipped with the package, or (the
    maze zoo) with the scripted waypoint controller."""
    from offrl.bench.suite import make_command
    from offrl.maze import make_maze_dataset, parse_maze_env
    from offrl.zoo import make_datasets

    for env_id, levels in suite.missing.items():
        command = make_command(env_id, levels, shipped=True)
        log(f"suite {suite.name}: building missing datasets first: {command}")
        if parse_maze_env(env_id):
            make_maze_dataset(env_id, "standard", log=log, command=command)
            continue
        make_datasets(env_id, levels, "standard", from_policies="shipped", progress=progress, log=log, command=command)
    suite.missing = {}


def task_dir(out: Path, task: Task) -> Path:
    return out / task.key


def run_suite(suite: Suite, out: str | Path, workers: int = 1, launcher: str = "local", address: str | None = None,
              gpus_per_task: float = 0.0, force: bool = False, progress: bool | None = None,
              log: Callable[[str], None] = functools.partial(print, flush=True)) -> list[Path]:
    """Run every unfinished task of `suite`; returns the run directories of all tasks."""
    from tqdm import tqdm

    out = Path(out)
    if launcher not in ("local", "ray"):
        raise OffrlError(f"unknown launcher {launcher!r}; use local or ray")
    if workers < 1:
        raise OffrlError("--workers must be ≥ 1")
    dirs = [task_dir(out, t) for t in suite.tasks]
    if force:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    todo = [(t, d) for t, d in zip(suite.tasks, dirs) if not (d / "final.json").exists()]
    log(f"suite {suite.name}: {plural(len(suite.tasks), 'run')} ({len(suite.tasks) - len(todo)} finished), "
        f"{plural(suite.settings['seeds'], 'seed')} each, launcher {launcher}"
        + (f", {plural(workers, 'worker')}" if launcher == "local" else ""))
    payload, waits = _fork_plan(todo, out)
    bar = tqdm(total=len(suite.tasks), initial=len(suite.tasks) - len(todo), unit="run", desc=suite.name,
               disable=None if progress is None else not progress)
    started, finished = time.time(), 0

    def done(run_dir: str) -> None:
        """A line per finished run (through the bar when it shows, so the two do not tangle)."""
        nonlocal finished
        finished += 1
        bar.update(1)
        record = RunRecord.load(run_dir)
        elapsed = time.time() - started
        eta = elapsed / finished * (len(todo) - finished)
        score = "no evaluation" if record.final is None else f"final {record.scores('final').mean():.1f}"
        line = (f"[{len(suite.tasks) - len(todo) + finished}/{len(suite.tasks)}] {record.label} on {record.name}: "
                f"{score} (mean over {record.seeds} seed{'s' * (record.seeds > 1)}), run {record.run_seconds:.0f} s"
                f" | elapsed {elapsed:.0f} s, ETA {eta:.0f} s")
        (bar.write if not bar.disable else log)(line)

    try:
        if launcher == "ray":
            _run_ray(payload, waits, address, gpus_per_task, done)
        elif workers == 1:                      # in order, lazily: a fork's source comes before it in the suite
            _dispatch(payload, waits, lambda run, d: (run, d),
                      lambda pending: ([run_task(*pending[0])], pending[1:]), done)
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=die_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                def first_done(pending: list[Future]) -> tuple[list[str], list[Future]]:
                    finished, rest = wait(pending, return_when=FIRST_COMPLETED)
                    return [f.result() for f in finished], list(rest)
                _dispatch(payload, waits, lambda run, d: pool.submit(run_task, run, d), first_done, done)
    finally:
        bar.close()
    return dirs


def _fork_plan(todo: list[tuple[Task, Path]], out: Path) -> tuple[list[tuple[dict, str]], dict[str, str]]:
    """The tasks' run settings (fork_from filled in) and, for each fork whose source has not yet written its
    end-of-offline state, the source's run directory to wait for. A source that cannot provide that state
    (finished without it, or not part of this sweep) is an error before anything runs."""
    from offrl.trainer import OFFLINE_STATE

    running = {str(d) for _, d in todo}
    payload, waits = [], {}
    for t, d in todo:
        run = _with_checkpoints(t.run)
        if t.fork:
            src = out / t.fork_key
            run = dataclasses.replace(run, fork_from=str(src))
            if not (d / "checkpoint.pt").exists() and not (src / OFFLINE_STATE).exists():   # (a started fork resumes itself)
                if (src / "final.json").exists():
                    raise OffrlError(f"{t.label} on {t.dataset} forks {src}, which finished without its end-of-offline "
                                     f"state ({OFFLINE_STATE}: runs before offrl kept it); rerun it with --force")
                if str(src) not in running:
                    raise OffrlError(f"{t.label} on {t.dataset} forks {t.fork}'s offline phase, which has not run; "
                                     f"run both: --agents {t.fork},{t.label}")
                waits[str(d)] = str(src)
        payload.append((dataclasses.asdict(run), str(d)))
    return payload, waits


def _dispatch(payload: list[tuple[dict, str]], waits: dict[str, str], submit: Callable[[dict, str], Any],
              wait_one: Callable[[list[Any]], tuple[list[str], list[Any]]], done: Callable[[str], None]) -> None:
    """Start every task not waiting on a fork source; start each fork when its source's run is done.
    submit(run, dir) → a handle; wait_one(handles) → (run dirs finished, handles still running)."""
    held = [(run, d) for run, d in payload if d in waits]
    pending = [submit(run, d) for run, d in payload if d not in waits]
    while pending:
        finished, pending = wait_one(pending)
        for run_dir in finished:
            done(run_dir)
            ready = [(run, d) for run, d in held if waits[d] == run_dir]
            held = [x for x in held if x not in ready]
            pending += [submit(run, d) for run, d in ready]


def die_with_parent(parent: int, period: float = 0.5) -> None:
    """Worker initializer: end this process as soon as `parent` (the sweep) is gone, even when it was
    killed with SIGKILL and could not stop its workers, so a killed `offrl bench` leaves nothing training
    (the run directory's lock dies with the worker; the rerun resumes from the last checkpoint)."""
    def watch() -> None:
        while True:
            if os.getppid() != parent:             # re-parented: the sweep died
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(period)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _with_checkpoints(run: Any) -> Any:
    """Checkpoint at every evaluation (or 5 times a run) so a killed sweep loses little."""
    total = run.steps + run.online_steps
    return dataclasses.replace(run, checkpoint_every=max(1, run.eval_every or total // 5))


def ray_init_loopback(address: str | None = None) -> Any:
    """Connect to `address`, or start a local Ray whose every socket listens on 127.0.0.1.

    By default Ray binds to the host's network address; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes it
    pick 127.0.0.1 for the node, GCS, raylet and workers (checked with `ss -ltnp`)."""
    if not address:
        # Read by Ray when it is imported and by the processes it starts: set it first.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # Ray starts workers at niceness 15; next to any other busy process on a small machine they
        # starve (measured: a 4 s task took 78 s beside two training processes). Our tasks are the work.
        os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        import ray
    except ImportError:
        raise OffrlError("the ray launcher needs Ray: pip install 'offrl[ray]'") from None
    if ray.is_initialized():
        return ray
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}})
    return ray


def _run_ray(payload: list[tuple[dict, str]], waits: dict[str, str], address: str | None, gpus: float,
             done: Callable[[str], None]) -> None:
    ray = ray_init_loopback(address)
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2, retry_exceptions=True)(run_task)

    def first_done(pending: list[Any]) -> tuple[list[str], list[Any]]:
        ready, rest = ray.wait(pending, num_returns=1)
        return ray.get(ready), rest
    _dispatch(payload, waits, lambda run, d: remote.options(num_cpus=max(1, run["threads"])).remote(run, d),
              first_done, done)

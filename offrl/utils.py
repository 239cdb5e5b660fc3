"""Small shared helpers: atomic writes, JSON, name suggestions."""
from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write a file through `write(fileobj)` into a temp file beside `path`, then rename it over `path`.

    A reader never sees a half-written file, and a crash leaves the previous version intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=False, default=_json_default))


def _json_default(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def slug(text: str) -> str:
    """A file-name-safe form of a dataset id, path or label ('offrl/hopper/medium-v0' → 'offrl_hopper_medium-v0')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_")


def closest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the valid choice closest to `name`, or '' when none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_device(device: str) -> None:
    """Raise before any work if `device` is not a torch device this machine has (cpu, cuda, cuda:N)."""
    import torch

    from offrl import OffrlError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise OffrlError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise OffrlError(f"--device {device!r}: {build} (torch {torch.__version__}); use --device cpu, or "
                             "install a CUDA build of torch on a machine with a GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OffrlError(f"--device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type != "cpu":
        raise OffrlError(f"--device {device!r}: offrl runs on cpu or cuda")


def busy_cores(interval: float = 0.2) -> float:
    """How many of the cores this process may run on were busy over the next `interval` seconds
    (/proc/stat's per-CPU counters; elsewhere the 1-minute load average)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))

    def sample() -> tuple[int, int]:
        total = idle = 0
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    vals = [int(x) for x in fields[:8]]        # user nice system idle iowait irq softirq steal
                    total, idle = total + sum(vals), idle + vals[3] + vals[4]
        return total, idle

    try:
        t0, i0 = sample()
        time.sleep(interval)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return min(float(len(cpus)), os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    return len(cpus) * (1 - (i1 - i0) / max(t1 - t0, 1))


_TORCH_DEFAULT_THREADS: int | None = None


def auto_threads() -> tuple[int, str]:
    """The torch CPU thread count for a process that was not told one: the cores that are free now.

    Threads that share a busy core with another process spin and wait on each other: on the 2-core
    machine with both cores busy, 400 IQL updates took 40 s with 2 threads and 8 s with 1. Results do not
    depend on the count (tests/test_cli.py checks every built-in agent).
    Returns (count, why)."""
    import torch

    global _TORCH_DEFAULT_THREADS
    if _TORCH_DEFAULT_THREADS is None:                # torch's own choice (physical cores), before anyone set it
        _TORCH_DEFAULT_THREADS = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = busy_cores()
    n = max(1, min(_TORCH_DEFAULT_THREADS, cores, int(cores - busy + 0.5)))
    return n, f"auto: {busy:.1f} of {cores} cores busy; --threads N sets it"

"""Small shared helpers: atomic writes, JSON, name suggestions, temp-file hygiene, quiet env construction."""
from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write a file through `write(fileobj)` into a temp file beside `path`, then rename it over `path`.

    A reader never sees a half-written file, and a crash leaves the previous version intact (a kill
    can leave the temp file `.NAME.*.tmp`; `remove_stale_temps` clears them). The file gets the
    permissions of an ordinary new file under the user's umask, not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files that killed `atomic_write`s left in `folder` (call it only while holding
    the folder's lock); returns them."""
    stale = sorted(Path(folder).glob(".*.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=False, default=_json_default))


def _json_default(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def plural(n: int, word: str) -> str:
    """'1 run', '3 runs'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


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


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with n torch CPU threads, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class DirectoryLock:
    """An exclusive lock on a run directory (`.lock`, flock): a second trainer of the same directory, in
    this process or another, is refused with the holder's pid. The OS drops the lock when its holder
    dies, even by SIGKILL, so a killed run never leaves a stale lock."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:                # (no flock on this OS: runs are not locked there)
            return
        from offrl import OffrlError

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OffrlError(f"{self.path.parent} is being trained by process {holder} (it holds {self.path}); "
                             "wait for it to finish or stop it, then resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)             # closing the descriptor drops the flock
            self._fd = None

    def check(self) -> None:
        """Fail now, naming the holder, if someone else holds the lock (does not keep it)."""
        if self.path.exists():
            self.acquire()
            self.release()


def check_writable_dir(folder: str | os.PathLike, flag: str = "--out") -> None:
    """Raise before any work unless `folder` can be created and written: not below a file, not on a
    read-only or forbidden place (probed with a temp file in its nearest existing parent)."""
    from offrl import OffrlError

    path = Path(folder).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is below the file {existing}"
        raise OffrlError(f"{flag} {folder} {where}, not a folder; choose another {flag}")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise OffrlError(f"{flag} {folder}: cannot write in {existing} ({e.strerror}); choose another {flag}") from None


def remove_maze_xml(env: Any) -> None:
    """Delete the maze XML that Gymnasium-Robotics' maze envs (AntMaze, PointMaze) write to the temp
    directory on every construction and never remove (`Maze.make_maze`: `<tmp>/ant_maze<time>.xml`;
    a maze sweep left thousands in /tmp). MuJoCo compiled the model from it in the constructor and
    nothing reads it again. Any other env: nothing happens."""
    path = getattr(getattr(env, "unwrapped", env), "tmp_xml_file_path", None)
    if isinstance(path, str) and os.path.dirname(os.path.abspath(path)) == os.path.abspath(tempfile.gettempdir()):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


class MujocoWarning(UserWarning):
    """A warning from MuJoCo's C library, which by default prints each one to stdout, every time."""


def route_mujoco_warnings() -> None:
    """Make MuJoCo's C-level warnings Python `MujocoWarning`s (unless a handler is installed already),
    so Python's filters apply: each distinct message shows once per process, and `gym_make` silences
    the deprecated `settotalmass` attribute of Gymnasium's own HalfCheetah XML, which MuJoCo 3.3+
    otherwise prints on every model compile. Simulation-instability warnings still show."""
    try:
        import mujoco
    except ImportError:
        return
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_mujoco_warning)


def _mujoco_warning(message: str) -> None:
    try:
        warnings.warn(f"MuJoCo: {message}", MujocoWarning, stacklevel=2)
    except Exception:     # e.g. under -W error: an exception crossing MuJoCo's C frames aborts the process
        print(f"MuJoCo warning: {message}", file=sys.stderr)


def gym_make(env: Any, **kwargs: Any) -> Any:
    """`gymnasium.make(env, **kwargs)` (an id or an EnvSpec) with MuJoCo's compile-time noise silenced
    (see `route_mujoco_warnings`) and a maze's temp XML removed (`remove_maze_xml`). offrl makes
    every env here (evaluation, dataset writers, scripted behaviours, the dynamics simulator; the risky
    ids' entry point runs inside it), so none prints the HalfCheetah deprecation."""
    import gymnasium as gym

    route_mujoco_warnings()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*settotalmass.*", category=MujocoWarning)
        made = gym.make(env, **kwargs)
    remove_maze_xml(made)
    return made

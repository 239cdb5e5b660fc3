"""D4RL `.hdf5` files, read directly with h5py (never through the dead `d4rl`/`mujoco-py` packages).

Layout: flat arrays with one row per step — observations [N, O], actions [N, A], rewards [N],
terminals [N], timeouts [N], optional next_observations [N, O] and infos/*.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from offrl.data.dataset import Dataset, DatasetError, flat_episodes
from offrl.envs import d4rl_reference_scores, find_task

REQUIRED = ("observations", "actions", "rewards", "terminals")


_BASE = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
_LOCOMOTION = ("hopper", "halfcheetah", "walker2d", "ant")
_ANTMAZE = {"umaze": "u-maze_noisy_multistart_False_multigoal_False", "umaze-diverse": "u-maze_noisy_multistart_True_multigoal_True",
            "medium-play": "big-maze_noisy_multistart_True_multigoal_False", "medium-diverse": "big-maze_noisy_multistart_True_multigoal_True",
            "large-play": "hardest-maze_noisy_multistart_True_multigoal_False",
            "large-diverse": "hardest-maze_noisy_multistart_True_multigoal_True"}
_KITCHEN = {"complete": "mini_kitchen_microwave_kettle_light_slider", "partial": "kitchen_microwave_kettle_light_slider",
            "mixed": "kitchen_microwave_kettle_bottomburner_light"}


def _d4rl_urls() -> dict[str, str]:
    """D4RL's dataset names → download addresses (d4rl/infos.py), for the tasks offrl knows."""
    urls = {}
    for env in _LOCOMOTION:
        for level in ("random", "medium", "expert", "medium-replay", "full-replay", "medium-expert"):
            for v in (1, 2):
                urls[f"{env}-{level}-v{v}"] = f"{_BASE}/gym_mujoco_v{v}/{env}_{level.replace('-', '_')}-v{v}.hdf5"
            if level != "full-replay":        # v0: medium-replay was called 'mixed' (walker2d's 'walker_mixed')
                v0 = {"medium-replay": "mixed"}.get(level, level.replace("-", "_"))
                urls[f"{env}-{level}-v0"] = f"{_BASE}/gym_mujoco/{'walker' if v0 == 'mixed' and env == 'walker2d' else env}_{v0}.hdf5"
    for level, stem in _ANTMAZE.items():
        urls[f"antmaze-{level}-v0"] = f"{_BASE}/ant_maze_new/Ant_maze_{stem}_sparse.hdf5"
        urls[f"antmaze-{level}-v2"] = f"{_BASE}/ant_maze_v2/Ant_maze_{stem}_sparse_fixed.hdf5"
    for maze in ("umaze", "medium", "large"):
        urls[f"maze2d-{maze}-v1"] = f"{_BASE}/maze2d/maze2d-{maze}-sparse-v1.hdf5"
        urls[f"maze2d-{maze}-dense-v1"] = f"{_BASE}/maze2d/maze2d-{maze}-dense-v1.hdf5"
    for task in ("pen", "door", "hammer", "relocate"):
        for level in ("human", "cloned", "expert"):
            urls[f"{task}-{level}-v1"] = f"{_BASE}/hand_dapg_v1/{task}-{level}-v1.hdf5"
        urls[f"{task}-human-v0"] = f"{_BASE}/hand_dapg/{task}-v0_demos_clipped.hdf5"
        urls[f"{task}-cloned-v0"] = f"{_BASE}/hand_dapg/{task}-demos-v0-bc-combined.hdf5"
        urls[f"{task}-expert-v0"] = f"{_BASE}/hand_dapg/{task}-v0_expert_clipped.hdf5"
    for level, stem in _KITCHEN.items():
        urls[f"kitchen-{level}-v0"] = f"{_BASE}/kitchen/{stem}-v0.hdf5"
    return urls


D4RL_URLS = _d4rl_urls()
D4RL_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*-v\d+$")


def d4rl_dir() -> Path:
    """D4RL's download folder: $D4RL_DATASET_DIR, else ~/.d4rl/datasets (where `d4rl` itself keeps them)."""
    env = os.environ.get("D4RL_DATASET_DIR")
    return Path(env) if env else Path.home() / ".d4rl" / "datasets"


def is_d4rl_name(source: str) -> bool:
    """Whether `source` reads as a D4RL dataset name ('hopper-medium-v2'), not a path or a Minari id."""
    return bool(D4RL_NAME.match(str(source))) and not Path(source).exists()


def d4rl_file(name: str, download: bool = False) -> Path:
    """The local .hdf5 file of a D4RL dataset name, in `d4rl_dir()` under the file name D4RL's own download
    gives it; downloaded there first with `download` (atomically). Clear errors for an unknown name or
    a missing file."""
    url = D4RL_URLS.get(name)
    if url is None:
        close = sorted(k for k in D4RL_URLS if k.split("-")[0] == name.split("-")[0])
        raise DatasetError(f"{name!r} is not a D4RL dataset name offrl knows (its reference table: d4rl/infos.py's "
                           "names for the locomotion, antmaze, maze2d, adroit and kitchen tasks)"
                           + (f"; of that task it knows {', '.join(close)}" if close else "")
                           + ". For a file of your own, pass its path")
    path = d4rl_dir() / url.rsplit("/", 1)[1]
    if path.is_file():
        return path
    if not download:
        raise DatasetError(f"D4RL dataset {name!r}: its file {path.name} is not in {path.parent} (D4RL's download "
                           "folder; set D4RL_DATASET_DIR to another one). Pass --download to fetch it from "
                           f"{url}, or copy the file there")
    import tempfile
    import urllib.request

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        urllib.request.urlretrieve(url, tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise DatasetError(f"downloading D4RL dataset {name!r} from {url} to {path.parent} failed ({e}); "
                           "check the network, or copy the file there by hand") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_d4rl(path: str | Path, env_id: str | None = None, name: str | None = None) -> Dataset:
    """Load a D4RL-layout hdf5 file into a `Dataset` with D4RL's reference scores.

    env_id: the Gymnasium env to evaluate on; by default the Gymnasium env of the task named in `name`
    (the D4RL dataset name; default the file name).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; check the path or download the D4RL file first")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: the file is empty (0 bytes); the download or copy was cut, fetch it again")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not a readable HDF5 file ({e}); the file is truncated or corrupted, "
                           "fetch it again") from None
    with f:
        missing = [k for k in REQUIRED if k not in f]
        if missing:
            raise DatasetError(f"{path}: missing field(s) {missing}; a D4RL file needs {list(REQUIRED)} "
                               "and 'timeouts' (or 'next_observations')")
        try:
            arrays = {k: f[k][()] for k in (*REQUIRED, "timeouts", "next_observations") if k in f}
        except OSError as e:
            raise DatasetError(f"{path}: reading the arrays failed ({e}); the file is truncated, fetch it again") from None
    N = len(arrays["actions"])
    if N == 0:
        raise DatasetError(f"{path}: 'actions' is empty; the file holds no steps")
    if arrays["observations"].ndim != 2 or arrays["actions"].ndim != 2:
        raise DatasetError(f"{path}: 'observations' and 'actions' must be 2-d [N, dim], got "
                           f"{arrays['observations'].shape} and {arrays['actions'].shape}")
    for k, v in arrays.items():
        if len(v) != N:
            raise DatasetError(f"{path}: field '{k}' has {len(v)} rows but 'actions' has {N}; "
                               "every field needs one row per step")
        if v.dtype.kind not in "biuf":
            raise DatasetError(f"{path}: field '{k}' has non-numeric dtype {v.dtype}")
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise DatasetError(f"{path}: field '{k}' holds non-finite values (first at row "
                               f"{int(np.argwhere(~np.isfinite(v))[0][0])}); repair or drop those rows")
    if "timeouts" not in arrays:
        if "next_observations" not in arrays:
            raise DatasetError(f"{path}: has neither 'timeouts' nor 'next_observations', so time-limit ends cannot "
                               "be told from terminations; add a 'timeouts' field")
        arrays["timeouts"] = np.zeros(N, bool)
    episodes = flat_episodes(arrays["observations"], arrays["actions"], arrays["rewards"],
                             arrays["terminals"], arrays["timeouts"], arrays.get("next_observations"))
    name = name or path.stem
    task = find_task(name)
    ref = d4rl_reference_scores(name)
    return Dataset.from_episodes(
        episodes, where=str(path), name=name,
        env_id=env_id or (task.env_id if task else None),
        ref_min_score=ref[0] if ref else None, ref_max_score=ref[1] if ref else None,
        ref_source="D4RL infos.py table" if ref else "none",
        source=str(path), metadata={"format": "d4rl-hdf5"},
    )

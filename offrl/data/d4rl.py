"""D4RL `.hdf5` files, read directly with h5py (never through the dead `d4rl`/`mujoco-py` packages).

Layout: flat arrays with one row per step — observations [N, O], actions [N, A], rewards [N],
terminals [N], timeouts [N], optional next_observations [N, O] and infos/*.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from offrl.data.dataset import Dataset, DatasetError, flat_episodes
from offrl.envs import d4rl_reference_scores, find_task

REQUIRED = ("observations", "actions", "rewards", "terminals")


def load_d4rl(path: str | Path, env_id: str | None = None) -> Dataset:
    """Load a D4RL-layout hdf5 file into a `Dataset` with D4RL's reference scores.

    env_id: the Gymnasium env to evaluate on; by default the v5 env of the task named in the file name.
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
    name = path.stem
    task = find_task(name)
    ref = d4rl_reference_scores(name)
    return Dataset.from_episodes(
        episodes, where=str(path), name=name,
        env_id=env_id or (task.env_id if task else None),
        ref_min_score=ref[0] if ref else None, ref_max_score=ref[1] if ref else None,
        ref_source="D4RL infos.py table" if ref else "none",
        source=str(path), metadata={"format": "d4rl-hdf5"},
    )

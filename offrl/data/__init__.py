"""Datasets: one way in for offline data (`load_dataset`), whatever the source."""
from __future__ import annotations

from pathlib import Path

from offrl.data.d4rl import load_d4rl
from offrl.data.dataset import Dataset, DatasetError, Episode, flat_episodes, reward_transform
from offrl.data.minari_io import datasets_root, load_minari, write_minari

__all__ = ["Dataset", "DatasetError", "Episode", "load_dataset", "load_d4rl", "load_minari",
           "write_minari", "datasets_root", "flat_episodes", "reward_transform"]


def load_dataset(source: str, download: bool = False, env_id: str | None = None) -> Dataset:
    """A D4RL `.hdf5` path, a Minari dataset folder, or a Minari dataset id."""
    if str(source).endswith((".hdf5", ".h5")):
        return load_d4rl(source, env_id=env_id)
    if Path(source).is_file():
        raise DatasetError(f"{source}: a file offrl cannot read; give a D4RL .hdf5 file, a Minari dataset "
                           "folder or a Minari dataset id")
    return load_minari(source, download=download, env_id=env_id)

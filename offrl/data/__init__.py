"""Datasets: one way in for offline data (`load_dataset`), whatever the source."""
from __future__ import annotations

from pathlib import Path

from offrl.data.d4rl import d4rl_file, is_d4rl_name, load_d4rl
from offrl.data.dataset import Dataset, DatasetError, Episode, flat_episodes, reward_transform
from offrl.data.minari_io import datasets_root, load_minari, write_minari

__all__ = ["EMBEDDED_ROOT", "embedded_ids", "local_metadata", "ids_under", "dataset_exists", "dataset_shapes", "Dataset", "DatasetError", "Episode", "load_dataset", "load_d4rl", "load_minari",
           "write_minari", "datasets_root", "flat_episodes", "reward_transform"]


EMBEDDED_ROOT = Path(__file__).parent / "embedded" / "minari"


def ids_under(root: Path) -> list[str]:
    """Ids of the Minari datasets stored under a datasets root."""
    return sorted(str(p.parent.parent.relative_to(root)) for p in root.glob("**/data/metadata.json")) if root.exists() else []


def embedded_ids() -> list[str]:
    """Ids of the small datasets shipped inside the package (usable with no generation step)."""
    return ids_under(EMBEDDED_ROOT)


def _minari_folder(source: str) -> Path | None:
    """Where a Minari id or folder lives: a folder path, the local root, or the embedded sets (in that order)."""
    for folder in (Path(source), datasets_root() / str(source), EMBEDDED_ROOT / str(source)):
        if (folder / "data" / "metadata.json").is_file():
            return folder
    return None


def local_metadata(dataset_id: str) -> dict | None:
    """The metadata.json of a Minari dataset found locally (root, then embedded), or None."""
    import json

    folder = _minari_folder(dataset_id)
    return None if folder is None else json.loads((folder / "data" / "metadata.json").read_text())


def dataset_exists(source: str) -> bool:
    """Whether `load_dataset(source)` finds something without downloading (used to validate suites)."""
    p = Path(source)
    if is_d4rl_name(source) and _minari_folder(source) is None:
        from offrl.data.d4rl import D4RL_URLS, d4rl_dir
        return source in D4RL_URLS and (d4rl_dir() / D4RL_URLS[source].rsplit("/", 1)[1]).is_file()
    return (p.is_file() and str(source).endswith((".hdf5", ".h5"))) or _minari_folder(source) is not None


def dataset_shapes(source: str) -> tuple[int, int] | None:
    """(observation size, action size) of a local dataset read from its metadata or hdf5 headers, without
    loading it (None where it cannot tell): lets a suite check its env against every dataset up front."""
    import json

    try:
        if is_d4rl_name(source) and _minari_folder(source) is None:
            source = str(d4rl_file(source))
        if str(source).endswith((".hdf5", ".h5")):
            import h5py
            with h5py.File(source, "r") as f:
                return int(f["observations"].shape[-1]), int(f["actions"].shape[-1])
        folder = _minari_folder(source)
        if folder is None:
            return None
        meta = json.loads((folder / "data" / "metadata.json").read_text())
        import gymnasium as gym
        from minari.serialization import deserialize_space

        size = lambda space: int(gym.spaces.flatdim(deserialize_space(meta[space])))   # Dict ones flattened
        return size("observation_space"), size("action_space")
    except (OSError, KeyError, ValueError, TypeError, IndexError, DatasetError):
        return None


def load_dataset(source: str, download: bool = False, env_id: str | None = None) -> Dataset:
    """A D4RL `.hdf5` path, a D4RL dataset name ('hopper-medium-v2': its file in D4RL's download folder,
    fetched there with `download`), a Minari dataset folder, a Minari dataset id (local root first), or
    the id of a dataset embedded in the package."""
    if str(source).endswith((".hdf5", ".h5")):
        return load_d4rl(source, env_id=env_id)
    if is_d4rl_name(source) and _minari_folder(source) is None:
        return load_d4rl(d4rl_file(source, download), env_id=env_id, name=source)
    if Path(source).is_file():
        raise DatasetError(f"{source}: a file offrl cannot read; give a D4RL .hdf5 file, a Minari dataset "
                           "folder or a Minari dataset id")
    folder = _minari_folder(source)
    if folder is not None and folder.is_relative_to(EMBEDDED_ROOT):
        ds = load_minari(str(folder), env_id=env_id)
        ds.source = str(source)                 # reports name the id, not the install path
        return ds
    return load_minari(source, download=download, env_id=env_id)

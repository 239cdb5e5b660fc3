"""Datasets: one way in for offline data (`load_dataset`), whatever the source."""
from __future__ import annotations

from pathlib import Path

from offrl.data.d4rl import load_d4rl
from offrl.data.dataset import Dataset, DatasetError, Episode, flat_episodes, reward_transform
from offrl.data.minari_io import datasets_root, load_minari, write_minari

__all__ = ["EMBEDDED_ROOT", "embedded_ids", "Dataset", "DatasetError", "Episode", "load_dataset", "load_d4rl", "load_minari",
           "write_minari", "datasets_root", "flat_episodes", "reward_transform"]


EMBEDDED_ROOT = Path(__file__).parent / "embedded" / "minari"


def embedded_ids() -> list[str]:
    """Ids of the small datasets shipped inside the package (usable with no generation step)."""
    return sorted(str(p.parent.parent.relative_to(EMBEDDED_ROOT)) for p in EMBEDDED_ROOT.glob("**/data/metadata.json"))


def load_dataset(source: str, download: bool = False, env_id: str | None = None) -> Dataset:
    """A D4RL `.hdf5` path, a Minari dataset folder, a Minari dataset id (local root first), or the id of
    a dataset embedded in the package."""
    if str(source).endswith((".hdf5", ".h5")):
        return load_d4rl(source, env_id=env_id)
    if Path(source).is_file():
        raise DatasetError(f"{source}: a file offrl cannot read; give a D4RL .hdf5 file, a Minari dataset "
                           "folder or a Minari dataset id")
    local = datasets_root() / str(source) / "data" / "metadata.json"
    embedded = EMBEDDED_ROOT / str(source)
    if not local.exists() and (embedded / "data" / "metadata.json").exists():
        ds = load_minari(str(embedded), env_id=env_id)
        ds.source = str(source)
        return ds
    return load_minari(source, download=download, env_id=env_id)

"""Minari datasets: offrl's own on-disk format.

Reading goes through `minari.load_dataset(id, download=...)` (or a dataset folder path); writing
through `minari.create_dataset_from_buffers`, which needs no JAX. Writes are staged in a hidden
folder and renamed into place, so no partial dataset is ever visible under its final id.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from offrl.data.dataset import Dataset, DatasetError, Episode
from offrl.utils import gym_make
from offrl.envs import OFFRL_V5_REF_SCORES, d4rl_reference_scores, find_task
from offrl.envs.robotics import (dataset_env_id, flatten_observations, is_robotics_env, register_dataset_env,
                                 require_robotics, spec_differs, unflatten_observations)


def datasets_root() -> Path:
    """Minari's datasets root: $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def load_minari(dataset_id_or_path: str, download: bool = False, env_id: str | None = None) -> Dataset:
    """Load a Minari dataset by id (from the local root; `download=True` fetches it when absent) or by
    the path of its folder (the one holding `data/metadata.json`)."""
    import minari

    path = Path(dataset_id_or_path)
    where = str(dataset_id_or_path)
    try:
        if (path / "data" / "metadata.json").is_file():
            mds = minari.MinariDataset(path / "data")
        elif (path / "metadata.json").is_file():
            mds = minari.MinariDataset(path)
        else:
            local = datasets_root() / dataset_id_or_path / "data"
            if not local.exists() and not download:
                raise DatasetError(
                    f"dataset {where!r} not found: not a file, not a folder, and not a Minari dataset under "
                    f"{datasets_root()} (set MINARI_DATASETS_PATH). List local ones with `offrl datasets list`; "
                    "pass --download to fetch a Minari dataset from its remote")
            mds = minari.load_dataset(dataset_id_or_path, download=download)
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"{where}: the Minari dataset could not be read ({type(e).__name__}: {e}); it is "
                           "corrupted or written by an unsupported Minari version: regenerate or download it again") from None
    meta: dict[str, Any] = dict(mds.storage.metadata)
    episodes = []
    try:
        for ep in mds.iterate_episodes():
            if isinstance(ep.observations, tuple):
                raise DatasetError(f"{where}: observations are a Tuple space; offrl agents take Box or Dict "
                                   "observations: flatten them when making the dataset")
            # Dict observations (mazes, kitchen) flattened in the documented order (offrl.envs.robotics)
            episodes.append(Episode(flatten_observations(ep.observations, leading=1), np.asarray(ep.actions),
                                    np.asarray(ep.rewards), np.asarray(ep.terminations),
                                    np.asarray(ep.truncations)))
    except (OSError, KeyError) as e:
        raise DatasetError(f"{where}: reading episodes failed ({type(e).__name__}: {e}); the hdf5 file is "
                           "truncated or corrupted: regenerate or download it again") from None
    dataset_id = meta.get("dataset_id", where)
    spec_env = _recorded_env(dataset_id, meta, where, env_id)
    task = find_task(dataset_id) or (find_task(spec_env) if spec_env else None)
    ref_min, ref_max = meta.get("ref_min_score"), meta.get("ref_max_score")
    ref_source = "dataset metadata" if ref_min is not None and ref_max is not None else "none"
    if ref_source == "none" and task is not None and task.name in OFFRL_V5_REF_SCORES:
        # Minari's mujoco/* datasets ship without references: use offrl's own v5 ones, and say so.
        ref_min, ref_max, how = OFFRL_V5_REF_SCORES[task.name]
        ref_source = f"offrl v5 reference table ({how})"
    if ref_source == "none" and str(dataset_id).startswith("D4RL/") and d4rl_reference_scores(dataset_id):
        ref_min, ref_max = d4rl_reference_scores(dataset_id)      # a D4RL re-creation without its own
        ref_source = "D4RL infos.py table (the dataset's metadata has none)"
    return Dataset.from_episodes(
        episodes, where=where, name=dataset_id,
        env_id=env_id or spec_env or (task.env_id if task else None),
        ref_min_score=None if ref_min is None else float(ref_min),
        ref_max_score=None if ref_max is None else float(ref_max),
        ref_source=ref_source,
        source=where, metadata=meta,
    )


def _recorded_env(dataset_id: str, meta: dict[str, Any], where: str, override: str | None) -> str | None:
    """The env a dataset evaluates on, as an id `make_env` takes: the plain Gymnasium id when the recorded
    spec (`eval_env_spec`, else `env_spec`) has that id's default settings, else the dataset-namespaced id
    carrying them (registered here; see offrl.envs.robotics). An `override` (--env) of the same env at
    another version is refused: its observations or dynamics differ from the data's."""
    import json

    spec_json = meta.get("eval_env_spec") or meta.get("env_spec")
    if not spec_json:
        return None
    recorded = json.loads(spec_json)["id"]
    if override is not None:
        name, _, version = recorded.rpartition("-v")
        o_name, _, o_version = override.split("/")[-1].rpartition("-v")
        if name and o_name == name.split("/")[-1] and o_version != version:
            raise DatasetError(f"{where}: recorded on {recorded}, but --env {override} is another version of that env "
                               "(its observations or dynamics differ from the data's); pass --env "
                               f"{recorded} or leave --env out to use the dataset's own env")
        return override
    if not (is_robotics_env(recorded) or spec_differs(spec_json)):
        return recorded
    env = dataset_env_id(str(dataset_id), spec_json)
    register_dataset_env(env, spec_json)
    return env


def write_minari(dataset_id: str, episodes: Sequence[Episode], env_id: Any = None, *,
                 observation_space: Any = None, action_space: Any = None,
                 ref_min_score: float | None = None, ref_max_score: float | None = None,
                 algorithm_name: str | None = None, description: str | None = None,
                 root: str | Path | None = None, overwrite: bool = False,
                 extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write episodes as a Minari dataset `<root>/<dataset_id>` atomically; returns its folder.

    `env_id`: the env the data was collected on and is evaluated on, an id or a Gymnasium `EnvSpec` (one
    with settings of its own, e.g. a maze map: the dataset records them). Spaces default to the env's; a
    Dict observation space stores the episodes' flat observations as its dict entries (split in the
    order `offrl.envs.robotics` documents, so loading flattens them back unchanged). Reference scores are
    stored when both are given. `extra_metadata` (JSON-serialisable) is added to the dataset's metadata.json.
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    root = Path(root) if root is not None else datasets_root()
    final = root / dataset_id
    if final.exists() and not overwrite:
        raise DatasetError(f"dataset {dataset_id!r} already exists at {final}; delete it or pass overwrite")
    Dataset.from_episodes(episodes, where=dataset_id)          # validate before writing anything
    if env_id is not None and observation_space is None:
        observation_space, action_space = _env_spaces(env_id, action_space)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        buffers = [EpisodeBuffer(id=i, observations=unflatten_observations(ep.observations, observation_space),
                                 actions=ep.actions,
                                 rewards=ep.rewards, terminations=ep.terminations.astype(bool),
                                 truncations=ep.truncations.astype(bool))
                   for i, ep in enumerate(episodes)]
        with _minari_root(staging), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # Minari nags about optional metadata fields
            created = minari.create_dataset_from_buffers(
                dataset_id, buffer=buffers, env=env_id,
                observation_space=observation_space, action_space=action_space,
                ref_min_score=ref_min_score if ref_max_score is not None else None,
                ref_max_score=ref_max_score, algorithm_name=algorithm_name, description=description,
                author="offrl", code_permalink="offrl")
            if ref_min_score is not None and ref_max_score is not None:
                # Minari drops reference scores when no env spec is given; store them regardless.
                created.storage.update_metadata({"ref_min_score": float(ref_min_score),
                                                 "ref_max_score": float(ref_max_score)})
            if extra_metadata:
                created.storage.update_metadata(extra_metadata)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging / dataset_id, final)
        # Keep Minari's namespace listing in step with the dataset just moved in.
        for ns_meta in staging.rglob("namespace_metadata.json"):
            dest = root / ns_meta.relative_to(staging)
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(ns_meta, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _env_spaces(env: Any, action_space: Any) -> tuple[Any, Any]:
    """The observation and action spaces of an env id or EnvSpec, as Minari will record them."""
    env_name = env if isinstance(env, str) else env.id
    if is_robotics_env(env_name):
        require_robotics(f"writing a dataset of {env_name}")
    probe = gym_make(env)
    try:
        return probe.observation_space, action_space or probe.action_space
    finally:
        probe.close()

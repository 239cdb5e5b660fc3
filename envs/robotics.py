"""Gymnasium-Robotics tasks (PointMaze, AntMaze, Adroit, FrankaKitchen): the optional import, the one
Dict-observation flattening shared by datasets and envs, and env ids that carry a dataset's env settings.

Flattening order. Every Dict observation, from a dataset or an env, is flattened by the same rule as
Gymnasium's `FlattenObservation` (whose `spaces.flatten` follows the Dict space's key order, and Gymnasium
sorts a Dict's keys): keys in alphabetical order at every level, leaves raveled and concatenated. For the
goal-conditioned mazes that is [achieved_goal (2), desired_goal (2), observation (4 PointMaze / 27 AntMaze)];
for FrankaKitchen, [achieved_goal per task (alphabetical task names), desired_goal per task, observation (59)].
A policy trained on the flattened data therefore acts on `make_env`'s env (which applies `FlattenObservation`)
unchanged.

Dataset env ids. A Minari dataset records the env it was collected on and the one to evaluate on
(`env_spec`, `eval_env_spec`) with their keyword arguments (AntMaze's `continuing_task`, `reset_target`,
maze map, ...). When those differ from the registered defaults, offrl names the env
`D4RL__antmaze__umaze-v1/AntMaze_UMaze-v4`: Gymnasium's namespace is the dataset id with '__' for '/'
(a namespace admits only letters, digits, '_', '-' and ':', and `gym.make` reads ':' as 'module:env'),
the name is the env's. `register_dataset_env` registers it when the dataset is loaded; a fresh process
(a resumed run, an evaluation worker) resolves it from the dataset's metadata on disk
(`resolve_dataset_env`), so the id alone is enough to remake the exact env.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping

import numpy as np

from offrl import OffrlError

ROBOTICS_PREFIXES = ("PointMaze_", "AntMaze_", "AdroitHand", "FrankaKitchen")
INSTALL_HINT = "pip install 'offrl[robotics]'  (gymnasium-robotics>=1.4.2,<1.5)"
SEP = "__"                 # stands for '/' of a dataset id in the namespace of the env id it records


def is_robotics_env(env_id: str) -> bool:
    """Whether an env id (plain or dataset-namespaced) is one of Gymnasium-Robotics'."""
    return env_id.split("/")[-1].startswith(ROBOTICS_PREFIXES)


_registered = False


def require_robotics(what: str) -> None:
    """Import gymnasium-robotics and register its envs once; a clear error naming `what` needs it."""
    global _registered
    if _registered:
        return
    try:
        import contextlib
        import io

        # on import it prints (to stderr) a notice about the Dense-v1 Adroit rewards, which offrl does not use
        with contextlib.redirect_stderr(io.StringIO()):
            import gymnasium_robotics
    except ImportError:
        raise OffrlError(f"{what} needs gymnasium-robotics, which is not installed: {INSTALL_HINT}") from None
    import gymnasium as gym

    gym.register_envs(gymnasium_robotics)
    _fix_joint_accessors()
    _registered = True


def _fix_joint_accessors() -> None:
    """gymnasium-robotics ≤1.4.2 compares `model.jnt_type[i]` (a numpy integer) with MuJoCo's joint enums;
    under MuJoCo 4 those enums no longer equal numpy integers, so FrankaKitchen fails at construction
    (`assert joint_type in (mjJNT_HINGE, mjJNT_SLIDE)`) and free/ball joints would get width 1. When that
    mismatch is present, its four joint accessors are replaced by ones comparing plain ints (same
    signatures, same results under MuJoCo 3)."""
    import mujoco
    from gymnasium_robotics.utils import mujoco_utils

    if mujoco.mjtJoint.mjJNT_HINGE == np.int32(int(mujoco.mjtJoint.mjJNT_HINGE)):
        return                                                  # the library's own comparison works
    qpos_width = {int(mujoco.mjtJoint.mjJNT_FREE): 7, int(mujoco.mjtJoint.mjJNT_BALL): 4}
    qvel_width = {int(mujoco.mjtJoint.mjJNT_FREE): 6, int(mujoco.mjtJoint.mjJNT_BALL): 3}

    def span(model: Any, name: str, widths: dict[int, int], address: np.ndarray) -> slice:
        joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if joint == -1:
            raise ValueError(f"Joint with name '{name}' is not part of the model!")
        start = int(address[joint])
        return slice(start, start + widths.get(int(model.jnt_type[joint]), 1))

    def get_joint_qpos(model: Any, data: Any, name: str) -> np.ndarray:
        return data.qpos[span(model, name, qpos_width, model.jnt_qposadr)].copy()

    def get_joint_qvel(model: Any, data: Any, name: str) -> np.ndarray:
        return data.qvel[span(model, name, qvel_width, model.jnt_dofadr)].copy()

    def set_joint_qpos(model: Any, data: Any, name: str, value: Any) -> None:
        s = span(model, name, qpos_width, model.jnt_qposadr)
        data.qpos[s] = np.asarray(value).reshape(s.stop - s.start)

    def set_joint_qvel(model: Any, data: Any, name: str, value: Any) -> None:
        s = span(model, name, qvel_width, model.jnt_dofadr)
        data.qvel[s] = np.asarray(value).reshape(s.stop - s.start)

    for fn in (get_joint_qpos, get_joint_qvel, set_joint_qpos, set_joint_qvel):
        setattr(mujoco_utils, fn.__name__, fn)


def flatten_observations(obs: Any, leading: int = 0) -> np.ndarray:
    """A (possibly nested) dict of arrays → one array, keys alphabetical at every level (Gymnasium's
    `spaces.flatten` order), each leaf raveled after its `leading` axes. leaves: [*lead, *leaf_shape]
    (lead = [T+1] for an episode of a dataset with leading=1; none for one env observation)
    → [*lead, sum of leaf sizes]. A plain array passes through."""
    if not isinstance(obs, Mapping):
        return np.asarray(obs)
    leaves: list[np.ndarray] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key in sorted(node):
                walk(node[key])
        else:
            leaves.append(np.asarray(node))

    walk(obs)
    if not leaves:
        raise OffrlError("a Dict observation with no entries cannot be flattened")
    return np.concatenate([leaf.reshape(*leaf.shape[:leading], -1) for leaf in leaves], axis=-1)


def unflatten_observations(flat: np.ndarray, space: Any) -> Any:
    """The inverse of `flatten_observations` for a Gymnasium Dict `space` of Boxes (nested Dicts allowed):
    flat [T, D] → {key: [T, *leaf_shape]} in the leaves' dtypes, keys consumed in alphabetical order.
    A non-Dict space returns `flat` unchanged."""
    import gymnasium as gym

    if not isinstance(space, gym.spaces.Dict):
        return flat
    col = 0

    def build(node: Any) -> Any:
        nonlocal col
        if isinstance(node, gym.spaces.Dict):
            return {key: build(node[key]) for key in sorted(node.spaces)}
        if not isinstance(node, gym.spaces.Box):
            raise OffrlError(f"cannot write a {type(node).__name__} observation entry; offrl writes Box entries")
        size = int(np.prod(node.shape))
        leaf = flat[:, col:col + size].reshape(len(flat), *node.shape).astype(node.dtype)
        col += size
        return leaf

    out = build(space)
    if col != flat.shape[1]:
        raise OffrlError(f"observations have {flat.shape[1]} columns, the Dict space {col}")
    return out


# --- dataset-namespaced env ids -------------------------------------------------------------------------

def dataset_env_id(dataset_id: str, spec_json: str) -> str:
    """The id of the env a dataset records: '<dataset id, '__' for '/'>/<env id>'."""
    spec = json.loads(spec_json)
    return f"{dataset_id.replace('/', SEP)}/{spec['id'].split('/')[-1]}"


def spec_differs(spec_json: str) -> bool:
    """Whether a recorded env spec's settings differ from its id's registered defaults (so the plain id
    would make a different env)."""
    import gymnasium as gym

    spec = json.loads(spec_json)
    if is_robotics_env(spec["id"]):
        require_robotics(f"the env {spec['id']}")
    try:
        registered = gym.spec(spec["id"])
    except gym.error.Error:
        return True
    kwargs = {k: v for k, v in (spec.get("kwargs") or {}).items() if k != "render_mode"}
    return (json.loads(json.dumps(registered.kwargs)) != kwargs
            or registered.max_episode_steps != spec.get("max_episode_steps"))


def register_dataset_env(env_id: str, spec_json: str) -> None:
    """Register a dataset's recorded env spec (Gymnasium's JSON) under `env_id` (idempotent)."""
    import gymnasium as gym
    from gymnasium.envs.registration import EnvSpec

    if env_id in gym.registry:
        return
    spec = EnvSpec.from_json(spec_json)      # registering imports nothing: gymnasium-robotics is needed at make time
    gym.register(env_id, entry_point=spec.entry_point, max_episode_steps=spec.max_episode_steps,
                 kwargs=dict(spec.kwargs), reward_threshold=spec.reward_threshold,
                 nondeterministic=spec.nondeterministic, order_enforce=spec.order_enforce,
                 disable_env_checker=spec.disable_env_checker)


def resolve_dataset_env(env_id: str, find_metadata: Callable[[str], dict[str, Any] | None]) -> None:
    """Before making `env_id`: register Gymnasium-Robotics for its ids, and a dataset-namespaced id from
    the dataset's metadata (`find_metadata(dataset_id)` → its metadata.json, or None when not on disk)."""
    import gymnasium as gym

    namespace = env_id.split("/", 1)[0] if "/" in env_id else ""
    if SEP in namespace and env_id not in gym.registry:
        dataset_id = namespace.replace(SEP, "/")
        meta = find_metadata(dataset_id)
        if meta is None:
            raise OffrlError(f"env {env_id!r} is the env recorded by the Minari dataset {dataset_id!r}, which is not "
                             "on disk (set MINARI_DATASETS_PATH to the root holding it, or pass --env with a plain "
                             "Gymnasium id)")
        spec_json = meta.get("eval_env_spec") or meta.get("env_spec")
        if not spec_json:
            raise OffrlError(f"dataset {dataset_id!r} records no env spec, so env {env_id!r} cannot be made; pass --env")
        register_dataset_env(env_id, spec_json)
    if is_robotics_env(env_id):
        require_robotics(f"the env {env_id}")

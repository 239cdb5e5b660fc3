"""Task catalogue: which Gymnasium env a dataset belongs to, its domain, and reference scores.

Installed as `offrl.envs`. Domains select per-domain hyper-parameters of agents
(`Agent.DOMAIN_DEFAULTS`); reference scores turn returns into normalised scores.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str                 # short name used in dataset ids: hopper, halfcheetah, ...
    env_id: str | None        # Gymnasium id used for evaluation and online steps (None: not available)
    domain: str               # locomotion | antmaze | maze | adroit | kitchen | classic
    behaviour_env_id: str | None = None   # env the zoo's SAC trains on when not env_id (a risky task's mean-reward twin)


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("hopper", "Hopper-v5", "locomotion"),
    Task("halfcheetah", "HalfCheetah-v5", "locomotion"),
    Task("walker2d", "Walker2d-v5", "locomotion"),
    Task("ant", "Ant-v5", "locomotion"),
    Task("invertedpendulum", "InvertedPendulum-v5", "classic"),
    Task("riskyinvertedpendulum", "offrl/RiskyInvertedPendulum-v5", "classic",     # envs/risky.py
         behaviour_env_id="offrl/RiskyInvertedPendulumMeanReward-v5"),
    Task("inverteddoublependulum", "InvertedDoublePendulum-v5", "classic"),
    Task("reacher", "Reacher-v5", "classic"),
    # Gymnasium-Robotics tasks (optional dependency, envs/robotics.py). The maze and kitchen envs come from the
    # dataset (its recorded env spec: which maze, which kitchen tasks); D4RL's own .hdf5 files of those record
    # observations in mujoco-py's layout, which no Gymnasium-Robotics env reproduces (see `env_note`).
    Task("antmaze", None, "antmaze"),
    Task("pointmaze", None, "maze"),
    Task("maze2d", None, "maze"),
    Task("kitchen", None, "kitchen"),
    Task("pen", "AdroitHandPen-v1", "adroit"),
    Task("door", "AdroitHandDoor-v1", "adroit"),
    Task("hammer", "AdroitHandHammer-v1", "adroit"),
    Task("relocate", "AdroitHandRelocate-v1", "adroit"),
]}

# Other spellings of a task in env ids and dataset names (keys as `_key` writes them).
ALIASES: dict[str, str] = {"adroithandpen": "pen", "adroithanddoor": "door", "adroithandhammer": "hammer",
                           "adroithandrelocate": "relocate", "frankakitchen": "kitchen"}

# Why a D4RL .hdf5 file of a task cannot be evaluated on a Gymnasium env (its observation layout).
ENV_NOTES: dict[str, str] = {
    "antmaze": "D4RL's antmaze files hold mujoco-py's 29-dim qpos+qvel observations; Gymnasium-Robotics' AntMaze "
               "observes a Dict (31 flattened). Use the Minari re-creation D4RL/antmaze/<level>-v1",
    "maze2d": "D4RL's maze2d files hold 4-dim observations; Gymnasium-Robotics' PointMaze observes a Dict (8 "
              "flattened). Use the Minari re-creation D4RL/pointmaze/<level>-v2 or offrl's maze zoo",
    "kitchen": "D4RL's kitchen files hold 60-dim observations; Gymnasium-Robotics' FrankaKitchen observes a Dict. "
               "Use the Minari re-creation D4RL/kitchen/<level>-v2",
}

# D4RL reference returns (d4rl/infos.py; identical for every dataset version and type of an env):
# normalised = 100 · (return − min) / (max − min).
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
    "kitchen": (0.0, 4.0),
    "maze2d-umaze": (23.85, 161.86),
    "maze2d-medium": (13.13, 277.39),
    "maze2d-large": (6.7, 273.99),
}


# offrl's own references for Gymnasium v5 envs, used when a Minari dataset has none (Minari's
# `mujoco/*` sets, Minari issue #323): (uniform random policy, expert) mean returns over 100 episodes,
# measured by `offrl datasets make` (its metadata says which run).
OFFRL_V5_REF_SCORES: dict[str, tuple[float, float, str]] = {
    "invertedpendulum": (4.20, 1000.0, "offrl datasets make InvertedPendulum-v5 --budget quick --seed 0"),
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_task(name: str) -> Task | None:
    """The task of a dataset id, D4RL name or env id: 'hopper-medium-v2', 'offrl/hopper/medium-v0',
    'mujoco/halfcheetah/expert-v0', 'Walker2d-v5', 'D4RL/antmaze/umaze-v1', and D4RL's own file names
    such as 'hopper_medium_replay-v2'. None when unknown."""
    parts = [p for p in re.split(r"[/]", name) if p]
    candidates = []
    for p in parts:
        candidates.append(_key(p.split("-")[0]))
        candidates.append(_key(re.split(r"[-_]", p)[0]))
        candidates.append(_key(re.sub(r"-v\d+$", "", p)))
    for c in candidates:
        c = ALIASES.get(c, c)
        if c in TASKS:
            return TASKS[c]
    return None


def dataset_level(name: str) -> str | None:
    """'task-level' of a dataset id, D4RL name or file, the key of an agent's DATASET_DEFAULTS:
    'hopper-medium-v2', 'hopper_medium-v2.hdf5', 'offrl/hopper/medium-v0' and 'mujoco/hopper/medium-v0'
    → 'hopper-medium'; an env id ('Hopper-v5') → 'hopper'. None when the task is unknown."""
    task = find_task(name)
    if task is None:
        return None
    last = re.sub(r"\.(hdf5|h5)$", "", [p for p in name.split("/") if p][-1])
    words = [w for w in re.split(r"[-_]", re.sub(r"-v\d+$", "", last)) if w]
    if words and _key(words[0]) == task.name:
        words = words[1:]                       # D4RL style: the task's name leads
    return "-".join([task.name] + [w.lower() for w in words])


def d4rl_reference_scores(dataset_name: str) -> tuple[float, float] | None:
    """D4RL's (ref_min, ref_max) for a D4RL dataset name such as 'hopper-medium-replay-v2', or for a Minari
    re-creation 'D4RL/antmaze/umaze-v1' (read as 'antmaze-umaze'; the fallback when its metadata has none).
    PointMaze has none: Gymnasium-Robotics' PointMaze is not D4RL's maze2d, so maze2d's numbers do not apply."""
    parts = [p for p in dataset_name.lower().split("/") if p]
    base = "-".join(parts[1:]) if len(parts) == 3 and parts[0] == "d4rl" else parts[-1]
    for key in sorted(D4RL_REF_SCORES, key=len, reverse=True):   # maze2d-umaze before a shorter key
        if base.startswith(key):
            return D4RL_REF_SCORES[key]
    return None


# --- generation recipes: how `offrl datasets make` builds the D4RL-style ladder for a task ---
@dataclass(frozen=True)
class Recipe:
    train_steps: int          # SAC env steps for the behaviour (expert) policy
    eval_every: int           # env steps between evaluations; each one keeps a policy snapshot
    eval_episodes: int        # deterministic episodes per evaluation (picks the medium policy)
    transitions: int          # transitions per level (medium-expert holds two levels' worth)
    ref_episodes: int = 100   # episodes behind ref_min_score (uniform random) and ref_max_score (expert)
    hidden: tuple[int, ...] = (256, 256)
    random_steps: int = 5000  # SAC's uniform-random warm-up steps
    measured: str = "not measured yet"   # wall time of a full `datasets make` on the project's 2-core CPU


# The zoo's dataset levels, D4RL's ladder plus the full replay (offrl.zoo builds them).
LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert", "full-replay")

# InvertedPendulum's returns are nearly all-or-nothing, so its "medium" (first snapshot at ≥1/3 of the
# expert's return) already balances the pole; the graded ladder is a property of the locomotion tasks.
_SMALL = {   # InvertedPendulum, InvertedDoublePendulum, Reacher
    "test": Recipe(600, 200, 2, 1500, 100, (64, 64), 200),
    "quick": Recipe(15_000, 1_000, 5, 20_000, 100, (256, 256), 1_000,
                    "InvertedPendulum-v5: 5 min 15 s wall, 2-core CPU shared with a test run (2026-11-23)"),
    "standard": Recipe(50_000, 2_500, 10, 100_000, measured=(
        "offrl/RiskyInvertedPendulum-v5: 9 min 53 s wall (SAC 504 s on the mean-reward twin), 2-core CPU, the "
        "other core busy (2026-11-23)")),
    "full": Recipe(100_000, 5_000, 10, 100_000),
}
_LOCOMOTION = {   # Hopper, HalfCheetah, Walker2d, Ant: D4RL's 1M transitions per level at "full"
    "test": Recipe(600, 200, 2, 1500, 100, (64, 64), 200),
    "quick": Recipe(50_000, 5_000, 5, 50_000),
    "standard": Recipe(200_000, 10_000, 10, 1_000_000, measured=(
        "hopper / halfcheetah / walker2d trained at once on the 2-core CPU (~0.67 core each, 2026-11-23): SAC 1.23 / "
        "1.20 / 1.22 h, whole make 1 h 44 / 1 h 24 / 1 h 45 min; from the shipped policies (--from-policies shipped) "
        "halfcheetah's medium + expert levels took 193 s")),
    "full": Recipe(1_000_000, 10_000, 10, 1_000_000),
}
RECIPES: dict[str, dict[str, Recipe]] = {
    **{name: _LOCOMOTION for name in ("hopper", "halfcheetah", "walker2d", "ant")},
    **{name: _SMALL for name in ("invertedpendulum", "riskyinvertedpendulum", "inverteddoublependulum", "reacher")},
}


from offrl.envs import risky as _risky  # noqa: E402  (registers the risky Gymnasium ids)

_risky.register()

"""`offrl datasets make`: D4RL-style datasets made by offrl itself, on Gymnasium v5 envs.

Recipe (D4RL's, with the differences stated):
1. Train a behaviour policy with offrl's SAC (`Trainer`, resumable), keeping the networks of every
   evaluation (`snapshots/`), the initial random networks as step 0.
2. expert = the final policy; medium = the first evaluated snapshot whose mean deterministic return
   reaches one third of the expert's final evaluation return (D4RL: "early-stopped at about 1/3 of
   expert performance").
3. Levels, each a Minari dataset `offrl/<task>/<level>-v0` written atomically:
   random (the random-init policy), medium, expert: stochastic rollouts of that policy;
   medium-replay: rollouts of every snapshot up to and including medium, an equal share each;
   full-replay: the same over every snapshot; medium-expert: medium's episodes then expert's.
   Difference from D4RL: the replay levels are rollouts of saved snapshots, not the literal SAC replay
   buffer, so they can be regenerated bit-exactly from committed policies (`--from-policies`) without
   storing gigabytes of buffers; the snapshot spacing (`eval_every`) sets their granularity.
   A risky task (envs/risky.py) trains SAC on its mean-reward twin (`Task.behaviour_env_id`: the rare
   penalty replaced by its expectation; same expected return, so the same risk-neutral optimum) and
   rolls out, scores and evaluates on the risky env itself; on the risky env SAC never learnt the
   high-mean strategy, so its data held only the safe one.
4. ref_min_score: mean return of a uniform random policy, ref_max_score: mean deterministic return of
   the expert, each over `ref_episodes` (≥100) episodes.
"""
from __future__ import annotations

import copy
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from offrl import OffrlError, __version__
from offrl.data.dataset import Dataset, DatasetError, Episode
from offrl.data.minari_io import datasets_root, write_minari
from offrl.envs import LEVELS, RECIPES, Recipe, Task, find_task
from offrl.evaluate import EnvBatch, rollout_episodes
from offrl.nets import TanhGaussianActor
from offrl.record import Evaluation
from offrl.utils import closest, write_json

MEDIUM_FRACTION = 1 / 3
ACTION_GRID = 2.0 ** -16       # behaviour actions are rounded to this grid (see actor_policy)


def recipe_for(env_id: str, budget: str) -> tuple[Task, Recipe]:
    task = find_task(env_id)
    if task is None or task.name not in RECIPES:
        known = sorted(t for t in RECIPES)
        raise OffrlError(f"no generation recipe for {env_id!r}; `offrl datasets make` knows {', '.join(known)} "
                         "(e.g. Hopper-v5)")
    if budget not in RECIPES[task.name]:
        raise OffrlError(f"unknown budget {budget!r}{closest(budget, RECIPES[task.name])}; choose "
                         f"{', '.join(RECIPES[task.name])}")
    return task, RECIPES[task.name][budget]


# --- policies: actor weights + what is needed to rebuild them ---
def _actor_from_nets(nets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Actor weights stored as float16: half the bytes to commit (a 256×256 locomotion actor is 145 KB
    instead of 290 KB), and harmless, because every rollout and reference score — of the original run
    too — uses the weights as stored (`load_policy` widens them to float32), so data and policies agree."""
    return {k[len("actor."):]: v.to(torch.float16) if v.is_floating_point() else v.clone()
            for k, v in nets.items() if k.startswith("actor.")}


def load_policy(path: Path) -> tuple[TanhGaussianActor, dict[str, Any]]:
    state = torch.load(path, weights_only=True)
    info = state["info"]
    actor = TanhGaussianActor(info["obs_dim"], info["act_dim"], (1,), tuple(info["hidden"]),
                              info["log_std_min"], info["log_std_max"])
    actor.load_state_dict(state["actor"])
    actor.eval()
    return actor, info


def export_policies(behaviour_dir: Path, policies_dir: Path, evals: list[Evaluation], run_cfg: dict[str, Any],
                    obs_dim: int, act_dim: int) -> dict[str, Any]:
    """Actor weights of random-init, every evaluated snapshot, medium and expert, plus index.json."""
    evaluated = [(e.step, float(np.mean(e.returns)), e.snapshot) for e in evals]
    if not evaluated:
        raise DatasetError(f"{behaviour_dir}: the behaviour run has no evaluations to pick policies from")
    expert_step, expert_return, _ = evaluated[-1]
    if expert_return <= 0:
        raise DatasetError(f"the behaviour policy's final return is {expert_return:.1f}; the medium rule "
                           "(1/3 of the expert's return) needs a positive return: train longer (--budget)")
    medium = next(e for e in evaluated if e[1] >= MEDIUM_FRACTION * expert_return)
    agent_cfg = run_cfg["agent"]
    base = {"obs_dim": obs_dim, "act_dim": act_dim, "hidden": list(agent_cfg["hidden"]),
            "log_std_min": agent_cfg["log_std_min"], "log_std_max": agent_cfg["log_std_max"],
            "env_id": run_cfg["env"]}
    snapshots = [(0, None, "snapshots/step_000000000.pt")] + evaluated
    # Training wall time from the snapshot files' times (first = step 0, last = the final evaluation):
    # it survives resumes, and includes any pause between a kill and the resume.
    times = [(behaviour_dir / rel).stat().st_mtime for _, _, rel in snapshots]
    index: dict[str, Any] = {"env_id": run_cfg["env"], "train_steps": expert_step,
                             "train_wall_seconds": round(times[-1] - times[0], 1),
                             "expert": f"step_{expert_step:09d}", "medium": f"step_{medium[0]:09d}",
                             "random-init": "step_000000000", "medium_rule":
                             f"first snapshot with mean eval return ≥ {MEDIUM_FRACTION:.4f} × expert final return "
                             f"({expert_return:.2f})", "snapshots": []}
    for step, ret, rel in snapshots:
        name = f"step_{step:09d}"
        nets = torch.load(behaviour_dir / rel, weights_only=True)
        info = {**base, "step": step, "eval_return": ret}
        torch.save({"actor": _actor_from_nets(nets), "info": info}, policies_dir / f"{name}.pt")
        index["snapshots"].append({"name": name, "step": step, "eval_return": ret})
    write_json(policies_dir / "index.json", index)
    return index


SHIPPED_POLICIES = Path(__file__).parent / "data" / "policies"


def shipped_policy_dirs() -> list[Path]:
    """Every policies folder committed with the package (<task>-<budget>-seed<k>)."""
    return sorted(p for p in SHIPPED_POLICIES.glob("*") if (p / "index.json").exists())


def shipped_policies(task_name: str, budget: str, seed: int) -> Path:
    """The behaviour policies committed with the package for (task, budget, seed)."""
    folder = SHIPPED_POLICIES / f"{task_name}-{budget}-seed{seed}"
    if not (folder / "index.json").exists():
        have = [p.name for p in shipped_policy_dirs()]
        raise OffrlError(f"--from-policies shipped: no policies for {task_name} at budget {budget!r}, seed {seed}; "
                         f"the package ships {', '.join(have) or 'none'}")
    return folder


# --- rollouts ---
def _to_env_units(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return (low + (actions + 1.0) * 0.5 * (high - low)).astype(np.float32)


def rollout(env_id: str, policy: Callable[[np.ndarray], np.ndarray], transitions: int, seed: int,
            n_envs: int = 10) -> list[Episode]:
    """Episodes of `policy` (obs [n, O] → actions [n, A] in [-1, 1]) until exactly `transitions` steps;
    the last episode is cut there and marked truncated. Actions are stored in the env's own units."""
    envs = EnvBatch(env_id, n_envs)
    raw = envs.envs[0].unwrapped.action_space
    low, high = np.asarray(raw.low, np.float64), np.asarray(raw.high, np.float64)
    next_seed = iter(range(seed * 1_000_003, seed * 1_000_003 + 10**9))
    cur = [{"obs": [e.reset(seed=next(next_seed))[0]], "act": [], "rew": [], "term": [], "trunc": []} for e in envs.envs]
    episodes: list[Episode] = []
    total = 0
    try:
        while total < transitions:
            obs = np.stack([c["obs"][-1] for c in cur]).astype(np.float32)
            actions = policy(obs)
            for i, env in enumerate(envs.envs):
                a = _to_env_units(actions[i], low, high)
                o, r, term, trunc, _ = env.step(actions[i])
                c = cur[i]
                c["obs"].append(o); c["act"].append(a); c["rew"].append(r); c["term"].append(term); c["trunc"].append(trunc)
                if term or trunc:
                    episodes.append(Episode(np.array(c["obs"]), np.array(c["act"]), np.array(c["rew"]),
                                            np.array(c["term"]), np.array(c["trunc"])))
                    total += len(c["act"])
                    cur[i] = {"obs": [env.reset(seed=next(next_seed))[0]], "act": [], "rew": [], "term": [], "trunc": []}
                    if total >= transitions:
                        break
    finally:
        envs.close()
    excess = total - transitions
    if excess > 0:                                   # cut the last episode to land on exactly `transitions`
        episodes[-1] = episodes[-1].cut(len(episodes[-1].actions) - excess)
    return episodes


def actor_policy(actor: TanhGaussianActor, deterministic: bool, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """obs [n, O] → actions [n, A] in [-1, 1] of a behaviour policy, the same on every CPU.

    A float32 forward pass rounds differently per CPU (GEMM kernel, vector width, thread split), and one
    differing last bit of an action sends a MuJoCo episode elsewhere: the zoo's levels came out different
    on every machine. So the actor runs here in float64, and its action (tanh(μ + σ·ε), or tanh(μ) when
    deterministic) is rounded to a grid of ACTION_GRID, exact in float32: two CPUs' float64 results differ
    by ~1e-14, and both round to the same grid point unless one lies that close to a grid midpoint
    (chance ~1e-9 per action element). ε comes from NumPy's PCG64 stream seeded with `seed`, which NumPy
    keeps identical across platforms (torch's CPU normal sampler has vectorised paths)."""
    actor64 = copy.deepcopy(actor).double()
    rng = np.random.default_rng(seed)

    @torch.no_grad()
    def policy(obs: np.ndarray) -> np.ndarray:
        mean, raw = actor64.net(torch.as_tensor(obs, dtype=torch.float64)[None])[0].split(actor.act_dim, -1)
        u = mean.numpy()
        if not deterministic:
            u = u + np.exp(actor64._log_std(raw).numpy()) * rng.standard_normal(u.shape)
        return (np.round(np.tanh(u) / ACTION_GRID) * ACTION_GRID).astype(np.float32)
    return policy


def uniform_policy(act_dim: int, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-1, 1, (len(obs), act_dim)).astype(np.float32)


def mean_return(env_id: str, policy: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> float:
    envs = EnvBatch(env_id, episodes)
    try:
        returns, _ = rollout_episodes(envs, policy, [seed + i for i in range(episodes)])
    finally:
        envs.close()
    return float(returns.mean())


def _versions() -> dict[str, str]:
    import gymnasium
    import minari
    import mujoco

    return {"offrl": __version__, "torch": torch.__version__, "gymnasium": gymnasium.__version__,
            "mujoco": mujoco.__version__, "minari": minari.__version__, "numpy": np.__version__}


def make_datasets(env_id: str, levels: list[str] | None = None, budget: str = "quick", out: str | Path | None = None,
                  root: str | Path | None = None, seed: int = 0, from_policies: str | Path | None = None,
                  force: bool = False, progress: bool | None = None, log: Callable[[str], None] = print,
                  command: str | None = None) -> dict[str, Path]:
    """Build the requested levels for `env_id`; returns {level: dataset folder}. Rerunning resumes:
    a killed behaviour run continues from its checkpoint and finished levels are kept."""
    from offrl.trainer import RunConfig, Trainer

    task, recipe = recipe_for(env_id, budget)
    task_name = task.name
    levels = list(levels or LEVELS)
    for lv in levels:
        if lv not in LEVELS:
            raise OffrlError(f"unknown level {lv!r}{closest(lv, LEVELS)}; levels: {', '.join(LEVELS)}")
    root = Path(root) if root is not None else datasets_root()
    out = Path(out) if out is not None else Path("runs") / "datasets" / f"{task_name}-{budget}-seed{seed}"
    ids = {lv: f"offrl/{task_name}/{lv}-v0" for lv in levels}
    todo = [lv for lv in levels if force or not (root / ids[lv] / "data" / "metadata.json").exists()]
    if not todo:
        log(f"all requested levels already exist under {root} (pass --force to rebuild)")
        return {lv: root / ids[lv] for lv in levels}
    command = command or ("offrl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and "offrl" in sys.argv[0]
                          else f"offrl datasets make {env_id} --budget {budget} --seed {seed}")

    if from_policies is not None:
        policies_dir = shipped_policies(task_name, budget, seed) if str(from_policies) == "shipped" else Path(from_policies)
        if not (policies_dir / "index.json").exists():
            raise OffrlError(f"--from-policies {policies_dir}: no index.json; give a folder written by "
                             "`offrl datasets make` (its policies/ sub-folder)")
        index = json.loads((policies_dir / "index.json").read_text())
    else:
        train_env = task.behaviour_env_id or env_id
        run = RunConfig(agent="sac", env=train_env, domain=task.domain, steps=0, online_steps=recipe.train_steps,
                        eval_every=recipe.eval_every, eval_episodes=recipe.eval_episodes,
                        checkpoint_every=recipe.eval_every, seed=seed, snapshots=True,
                        agent_config={"hidden": ",".join(map(str, recipe.hidden)), "random_steps": recipe.random_steps})
        behaviour = out / "behaviour"
        log(f"[1/3] behaviour policy: SAC, {recipe.train_steps} env steps on {train_env} → {behaviour}")
        trainer = Trainer(run, behaviour, resume=True, progress=progress)
        trainer.train()
        policies_dir = out / "policies"
        policies_dir.mkdir(parents=True, exist_ok=True)
        index = export_policies(behaviour, policies_dir, trainer.evals,
                                json.loads((behaviour / "config.json").read_text()) | {"env": env_id},
                                trainer.spec.obs_dim, trainer.spec.act_dim)
    # Rollouts run the policies in float64 with rounded actions (actor_policy), so the levels are the
    # same on every CPU and at any thread count. Levels built before that rule (no `offrl_rollout` in
    # their metadata; results/datasets.md's among them) differ per machine: README, "The dataset zoo".
    actors = {s["name"]: load_policy(policies_dir / f"{s['name']}.pt")[0] for s in index["snapshots"]}
    act_dim = next(iter(actors.values())).act_dim
    log(f"[2/3] reference scores over {recipe.ref_episodes} episodes each")
    ref_min = mean_return(env_id, uniform_policy(act_dim, seed + 11), recipe.ref_episodes, 50_000 + seed * 1000)
    ref_max = mean_return(env_id, actor_policy(actors[index["expert"]], True), recipe.ref_episodes, 60_000 + seed * 1000)
    log(f"      ref_min_score {ref_min:.2f} (uniform random), ref_max_score {ref_max:.2f} (expert, deterministic)")

    names = [s["name"] for s in index["snapshots"]]
    upto_medium = names[:names.index(index["medium"]) + 1]
    sources = {"random": [index["random-init"]], "medium": [index["medium"]], "expert": [index["expert"]],
               "medium-replay": upto_medium, "full-replay": names}
    cache: dict[str, list[Episode]] = {}

    def episodes_of(level: str) -> list[Episode]:
        if level == "medium-expert":
            return episodes_of("medium") + episodes_of("expert")
        if level not in cache:
            pols = sources[level]
            share = [recipe.transitions // len(pols) + (i < recipe.transitions % len(pols)) for i in range(len(pols))]
            eps: list[Episode] = []
            for k, (name, n) in enumerate(zip(pols, share)):
                level_seed = seed * 100 + LEVELS.index(level) * 10_000 + k
                eps += rollout(env_id, actor_policy(actors[name], False, level_seed), n, level_seed)
            cache[level] = eps
        return cache[level]

    log(f"[3/3] levels {', '.join(todo)} → {root}")
    written = {}
    for lv in todo:
        eps = episodes_of(lv)
        ds = Dataset.from_episodes(eps, where=ids[lv])
        meta = {"offrl_level": lv, "offrl_budget": budget, "offrl_seed": seed, "offrl_command": command,
                "offrl_behaviour_policies": sources.get(lv, sources["medium"] + sources["expert"]),
                "offrl_medium_rule": index["medium_rule"], "offrl_versions": _versions(),
                "offrl_rollout": f"float64 forward, actions rounded to {ACTION_GRID:g} (CPU-independent)",
                "offrl_content_hash": ds.content_hash(),
                "offrl_ref_scores": f"ref_min: uniform random policy, ref_max: expert ({index['expert']}) "
                                    f"deterministic; {recipe.ref_episodes} episodes each"}
        written[lv] = write_minari(ids[lv], eps, env_id, ref_min_score=ref_min, ref_max_score=ref_max,
                                   algorithm_name="SAC (offrl)", root=root, overwrite=True, extra_metadata=meta,
                                   description=f"offrl {lv} level of {env_id}, budget {budget}; see offrl.zoo")
        returns = ds.episode_returns()
        log(f"      {ids[lv]}: {len(ds)} transitions, {ds.num_episodes} episodes, mean return "
            f"{returns.mean():.1f} (normalised {100 * (returns.mean() - ref_min) / (ref_max - ref_min):.1f})")
    return {lv: root / ids[lv] for lv in levels}


# --- the zoo's summary: results/datasets.md ---
LADDER = ("random", "medium-replay", "medium", "medium-expert", "expert")


def zoo_report(policies_dirs: list[Path], root: Path) -> str:
    """Markdown: per task, the behaviour training (steps, wall time), reference scores, and per level the
    transitions, episodes and normalised mean return of the data, with the ladder check
    random < medium-replay < medium < medium-expert < expert, 25 ≤ medium ≤ 50, expert ≥ 90."""
    from offrl.data import load_dataset

    out = []
    for pdir in policies_dirs:
        index = json.loads((pdir / "index.json").read_text())
        # index.json written before env_id/train_steps were recorded: read them from the policies
        index.setdefault("env_id", torch.load(pdir / f"{index['expert']}.pt", weights_only=True)["info"]["env_id"])
        index.setdefault("train_steps", int(index["expert"].split("_")[1]))
        task_name = find_task(index["env_id"]).name
        rows, norm = [], {}
        ref = None
        for level in LEVELS:
            folder = Path(root) / f"offrl/{task_name}/{level}-v0"
            if not (folder / "data" / "metadata.json").exists():
                rows.append(f"| {level} | missing | | | |")
                continue
            ds = load_dataset(str(folder))
            ref = (ds.ref_min_score, ds.ref_max_score)
            returns = ds.episode_returns()
            norm[level] = float(ds.normalized_score(returns.mean()))
            rows.append(f"| {level} | {len(ds):,} | {ds.num_episodes:,} | {returns.mean():.1f} | {norm[level]:.1f} |")
        ladder = [lv for lv in LADDER if lv in norm]
        problems = [f"{a} ({norm[a]:.1f}) ≥ {b} ({norm[b]:.1f})" for a, b in zip(ladder, ladder[1:]) if norm[a] >= norm[b]]
        if "medium" in norm and not 25 <= norm["medium"] <= 50:
            problems.append(f"medium {norm['medium']:.1f} is outside [25, 50]")
        if "expert" in norm and norm["expert"] < 90:
            problems.append(f"expert {norm['expert']:.1f} < 90")
        if len(ladder) < len(LADDER):
            problems.append("levels missing")
        wall = index.get("train_wall_seconds")
        out += [f"## {index['env_id']}", "",
                f"Behaviour policy: SAC, {index['train_steps']:,} env steps"
                + (f", {wall / 3600:.2f} h wall" if wall is not None else "") + f"; medium rule: {index['medium_rule']}; "
                f"medium = {index['medium']}, expert = {index['expert']}. Policies: `{pdir.name}` "
                f"({len(index['snapshots'])} snapshots).",
                "", f"ref_min_score {ref[0]:.2f}, ref_max_score {ref[1]:.2f}." if ref else "", "",
                "| level | transitions | episodes | mean return | normalised |", "|---|---|---|---|---|", *rows, "",
                "Ladder (random < medium-replay < medium < medium-expert < expert, medium in [25, 50], expert ≥ 90): "
                + ("**holds**." if not problems else "**fails**: " + "; ".join(problems) + "."), ""]
    return "\n".join(out)

"""The `offrl` command: train, agents, datasets."""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import sys
from pathlib import Path

from offrl import OffrlError
from offrl.fields import check_fields
from offrl.runconfig import RUN_FLAGS, RunConfig, parse_source
from offrl.envs import LEVELS
from offrl.utils import slug


def _train(args: argparse.Namespace) -> int:
    from offrl.agent import parse_overrides
    from offrl.trainer import Trainer, run_from_config_file

    saved = Path(args.out) / "config.json" if args.out else None
    if args.config:
        run = run_from_config_file(args.config)
    elif args.resume and not args.agent and saved is not None and saved.exists():
        run = RunConfig.from_dict(json.loads(saved.read_text())["run"])    # resume by directory: its own settings
    else:
        if not args.agent:
            raise OffrlError("offrl train needs --agent NAME (or --config RUN_DIR/config.json, or --out RUN_DIR "
                             "--resume to continue a run from its own config.json)")
        run = RunConfig(agent=args.agent)
    for key in RUN_FLAGS:
        value = getattr(args, key)
        if value is not None:
            setattr(run, key, value)
    if args.download:
        run.download = True
    if args.compile_mode:
        run.compile_mode = args.compile_mode
    if args.risk_threshold:
        run.risk_thresholds = list(args.risk_threshold)
    run.plugins = list(run.plugins) + [str(Path(p).resolve()) for p in args.plugin]
    run.agent_config = {**run.agent_config, **parse_overrides(args.set)}
    run.sources = {**run.sources, **dict(parse_source(s) for s in args.source)}
    out = args.out or Path("runs") / "train" / f"{run.agent}-{slug(Path(run.dataset).stem if str(run.dataset).endswith('.hdf5') else run.dataset or run.env or 'online')}-seed{run.seed}"
    lines = args.no_progress or not sys.stdout.isatty()       # no bar to watch: a line per evaluation instead
    trainer = Trainer(run, out, resume=args.resume, progress=False if args.no_progress else None,
                      log=(lambda line: print(line, flush=True)) if lines else None)
    print(f"torch threads: {trainer.threads} ({trainer.threads_why})", flush=True)
    if trainer.fork_source is not None:
        print(f"starting from {trainer.fork_source}'s end-of-offline state (step {trainer.resumed_from}): "
              "training the online phase", flush=True)
    elif trainer.resumed:
        print(f"resuming {out} from its checkpoint at step {trainer.resumed_from} of "
              f"{run.steps + run.online_steps}" if trainer.resumed_from is not None else f"{out} is already finished",
              flush=True)
    elif args.resume:
        print(f"{out} has no checkpoint yet: starting from step 0", flush=True)
    result = trainer.train()
    print(f"run directory: {out}")
    for stat in ("final", "best"):
        if stat in result:
            norm = result[stat]["normalized"]
            shown = norm if norm is not None else result[stat]["return"]
            label = "normalised score" if norm is not None else "return"
            print(f"{stat:>5} {label} per seed ({result['eval_episodes']} episodes each): "
                  + ", ".join(f"{x:.1f}" for x in shown))
    return 0


def _agents(args: argparse.Namespace) -> int:
    from offrl.agent import REGISTRY, load_builtins, load_plugin

    load_builtins()
    for p in args.plugin:
        load_plugin(p)
    width = max(len(n) for n in REGISTRY)
    for name in sorted(REGISTRY):
        print(f"{name:<{width}}  {REGISTRY[name].summary}")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from offrl.data import EMBEDDED_ROOT, datasets_root, embedded_ids, ids_under, load_dataset

    if args.action == "list":
        from offrl.data.d4rl import D4RL_URLS, d4rl_dir
        from offrl.envs import d4rl_reference_scores, find_task

        root = datasets_root()
        found = ids_under(root)
        rows = []
        for ds_id, base, kind in ([(i, root, "local") for i in found] + [(i, EMBEDDED_ROOT, "embedded") for i in embedded_ids()]):
            meta = json.loads((base / ds_id / "data" / "metadata.json").read_text())
            ref = (meta.get("ref_min_score"), meta.get("ref_max_score"))
            if None in ref and ds_id.startswith("D4RL/"):
                ref = d4rl_reference_scores(ds_id) or ref
            rows.append((ds_id, kind, meta.get("total_episodes", "?"), meta.get("total_steps", "?"), ref))
        d4rl = [(name, d4rl_dir() / url.rsplit("/", 1)[1]) for name, url in sorted(D4RL_URLS.items())]
        rows += [(name, "d4rl", "?", "?", d4rl_reference_scores(name) or (None, None)) for name, f in d4rl if f.is_file()]
        if not found:
            print(f"(no local Minari datasets under {root}; set MINARI_DATASETS_PATH)")
        width = max([len(r[0]) for r in rows] + [7])
        print(f"{'dataset':<{width}}  {'where':<8}  {'domain':<10}  {'episodes':>8}  {'steps':>9}  reference scores (min, max)")
        for ds_id, kind, episodes, steps, ref in rows:
            task = find_task(ds_id)
            refs = "none" if None in ref else f"{float(ref[0]):.6g}, {float(ref[1]):.6g}"
            print(f"{ds_id:<{width}}  {kind:<8}  {task.domain if task else '?':<10}  {episodes:>8}  {steps:>9}  {refs}")
        return 0
    if not args.id:
        raise OffrlError("offrl datasets info needs a dataset id or path")
    ds = load_dataset(args.id)
    returns = ds.episode_returns()
    from offrl.envs import find_task

    task = find_task(ds.name or args.id)
    info = {"dataset": ds.name, "source": ds.source, "env": ds.env_id, "domain": task.domain if task else "?",
            "transitions": len(ds),
            "episodes": ds.num_episodes, "terminals": int(ds.terminals.sum()), "timeouts": int(ds.timeouts.sum()),
            "obs_dim": ds.obs_dim, "act_dim": ds.act_dim,
            "return_min": float(returns.min()), "return_mean": float(returns.mean()), "return_max": float(returns.max()),
            "ref_min_score": ds.ref_min_score, "ref_max_score": ds.ref_max_score, "ref_source": ds.ref_source}
    if ds.ref_min_score is not None and ds.ref_max_score is not None:
        info["normalized_mean_return"] = float(ds.normalized_score(returns.mean()))
    for key in ("algorithm_name", "description", "offrl_level", "offrl_budget", "offrl_behaviour_policies",
                "offrl_medium_rule", "offrl_command", "offrl_seed", "offrl_content_hash", "offrl_ref_scores",
                "offrl_source"):
        if ds.metadata.get(key) not in (None, "", []):
            info[key.removeprefix("offrl_")] = ds.metadata[key]
    for k, v in info.items():
        print(f"{k:<24} {v}")
    return 0


def _bench_speed(args: argparse.Namespace) -> int:
    from offrl.bench.speed import run_speed, speed_table
    from offrl.utils import atomic_write

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        raise OffrlError(f"--seeds expects a comma-separated list of integers, got {args.seeds!r}") from None
    agents = args.agents.split(",")
    from offrl.agent import get_agent
    for a in agents:
        get_agent(a)                        # unknown names fail before any timing
    precisions = ["highest", *_names(args.matmul_precision or "")]
    for prec in precisions:                 # RunConfig's own check of the field, before any timing
        check_fields(RunConfig(matmul_precision=prec), lambda name: "--matmul-precision")
    variants, env = run_speed(agents, seeds, args.batch, args.obs_dim, args.act_dim, args.rounds, args.updates,
                              device=args.device, d3rlpy=not args.no_d3rlpy,
                              modes=["none"] + ([args.compile_mode] if args.compile_mode else []),
                              profile=args.profile, precisions=precisions)
    table = speed_table(variants, env)
    print(table)
    if args.out:
        command = shlex.join(["offrl", *_with_bench_run(sys.argv[1:])]).replace("offrl bench run", "offrl bench")
        import importlib.util
        peer = ("d3rlpy was timed in the same rounds (install it without its dependencies: it pins "
                "gymnasium==1.0.0: `pip install --no-deps d3rlpy==2.8.1 gym click structlog colorama dataclasses-json "
                "'marshmallow<4' typing-inspect scikit-learn joblib threadpoolctl scipy`)" if importlib.util.find_spec("d3rlpy") and not args.no_d3rlpy
                else "d3rlpy was not installed, so it has no column")
        atomic_write(args.out, lambda f: f.write(f"# Update speed\n\nRegenerate: `{command}`\n\n{peer}.\n\n{table}\n"))
        print(f"written to {args.out}")
    return 0


def _datasets_make(args: argparse.Namespace) -> int:
    from offrl.maze import make_maze_dataset, parse_maze_env
    from offrl.zoo import make_datasets

    if parse_maze_env(args.env):           # the maze zoo: a scripted controller, no levels, no policies
        for flag, value in (("--levels", args.levels), ("--from-policies", args.from_policies), ("--out", args.out)):
            if value:
                raise OffrlError(f"{flag} does not apply to {args.env}: the maze zoo's data comes from a scripted "
                                 "waypoint controller (offrl.maze), one dataset per env id; leave it out")
        make_maze_dataset(args.env, args.budget, args.root, args.seed, args.force)
        return 0
    levels = args.levels.split(",") if args.levels else None
    make_datasets(args.env, levels, args.budget, args.out, args.root, args.seed, args.from_policies, args.force,
                  progress=False if args.no_progress else None)
    return 0


def _datasets_report(args: argparse.Namespace) -> int:
    from offrl.zoo import shipped_policy_dirs, zoo_report
    from offrl.data.minari_io import datasets_root
    from offrl.utils import atomic_write

    dirs = [Path(p) for p in args.policies] or shipped_policy_dirs()
    for d in dirs:
        if not (d / "index.json").exists():
            raise OffrlError(f"--policies {d}: no index.json; give a policies/ folder written by `offrl datasets make`")
    if not dirs:
        raise OffrlError("no policies to report on: pass --policies DIR (a `datasets make` policies/ folder)")
    root = Path(args.root) if args.root else datasets_root()
    command = shlex.join(["offrl", *sys.argv[1:]])
    text = (f"# The offrl dataset zoo\n\nRegenerate: `{command}` (after `offrl datasets make ENV --budget standard "
            f"--from-policies shipped` for each env).\n\n" + zoo_report(dirs, root))
    print(text)
    if args.out:
        atomic_write(args.out, lambda f: f.write(text))
        print(f"written to {args.out}")
    return 0


def _datasets_convert(args: argparse.Namespace) -> int:
    from offrl.data import load_d4rl, write_minari
    from offrl.evaluate import make_env

    ds = load_d4rl(args.file, env_id=args.env)
    stem = Path(args.file).stem
    m = re.match(r"([a-z0-9]+)-(.+?)(-v\d+)?$", stem.lower())
    dataset_id = args.id or (f"d4rl/{m.group(1)}/{m.group(2)}{m.group(3) or '-v0'}" if m else f"d4rl/{stem}-v0")
    env_id = ds.env_id
    spaces = {}
    if env_id is not None:
        env = make_env(env_id).unwrapped
        if env.observation_space.shape != (ds.obs_dim,) or env.action_space.shape != (ds.act_dim,):
            print(f"note: {env_id} has observation shape {env.observation_space.shape}, the file {ds.obs_dim}; "
                  "the dataset is written without an env (pass --env with a matching one)")
            env_id = None
    if env_id is None:
        import gymnasium as gym
        import numpy as np
        spaces = {"observation_space": gym.spaces.Box(-np.inf, np.inf, (ds.obs_dim,), np.float32),
                  "action_space": gym.spaces.Box(-1.0, 1.0, (ds.act_dim,), np.float32)}
    folder = write_minari(dataset_id, ds.to_episodes(), env_id, ref_min_score=ds.ref_min_score,
                          ref_max_score=ds.ref_max_score, algorithm_name="D4RL", root=args.root,
                          overwrite=args.force, description=f"converted from {args.file} by offrl",
                          extra_metadata={"offrl_source": str(args.file), "offrl_ref_scores": ds.ref_source,
                                          "offrl_content_hash": ds.content_hash()}, **spaces)
    print(f"{args.file} → {dataset_id} ({len(ds)} transitions, {ds.num_episodes} episodes) at {folder}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import time

    from offrl.bench.report import build_report, collect
    from offrl.bench.suite import load_suite
    from offrl.bench.sweep import build_missing, run_suite, task_dir

    started = time.time()
    whole = load_suite(args.suite, build_missing=True)   # every error before any run starts
    suite = whole.select(_names(args.agents), _names(args.datasets))
    if args.threads is not None:
        suite = suite.with_threads(args.threads)
    build_missing(suite, progress=False if args.no_progress else None)
    out = Path(args.out or Path("runs") / suite.name)
    run_suite(suite, out, args.workers, args.launcher, args.address, args.gpus_per_task, args.force,
              progress=False if args.no_progress else None)
    # the report covers every finished run of the whole suite in `out`, so a table grows row by row
    dirs = [task_dir(out, t) for t in whole.tasks if (task_dir(out, t) / "final.json").exists()]
    report_dir = Path(args.report_dir or Path("results") / suite.name)
    # the regenerate line: the same command whether or not progress bars were shown
    command = shlex.join(a for a in ["offrl", *_with_bench_run(sys.argv[1:])] if a != "--no-progress").replace(
        "offrl bench run", "offrl bench")
    print(f"building the report in {report_dir} (bootstrap confidence intervals and plots) ...", flush=True)
    # a NOTES.md kept in the report folder (what the numbers mean, orderings investigated) stays in the report
    notes_file = report_dir / "NOTES.md"
    notes = notes_file.read_text() if notes_file.is_file() else ""
    report = build_report(collect(dirs), report_dir, title=f"Suite `{suite.name}`", command=command,
                          compare=suite.compare, wall_time=bool(suite.settings["report_wall_time"]), notes=notes)
    text = report.read_text()
    print(text[text.index("## Per dataset, final"):text.index("## Per dataset, best")].strip())
    print(f"\nreport: {report}  (wall time {time.time() - started:.0f} s, this command from start to end)")
    return 0


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def _pgd_train(args: argparse.Namespace) -> int:
    import torch

    from offrl.data import load_dataset
    from offrl.diffusion import EDMConfig
    from offrl.diffusion.pgd import train_diffusion

    cfg = EDMConfig(features=args.features, n_blocks=args.blocks, length=args.length, stride=args.stride,
                    train_steps=args.steps, batch_size=args.batch)
    cfg.check()
    if args.threads:
        torch.set_num_threads(args.threads)
    from offrl.evaluate import fit_to_env

    ds = load_dataset(args.dataset, download=args.download, env_id=args.env)
    env_id = args.env or ds.env_id
    if env_id:                          # the data in the units the agents will see (actions in [-1, 1])
        ds = fit_to_env(ds, env_id)
    out = args.out or Path("runs") / "pgd" / slug(args.dataset)
    model = train_diffusion(ds, out, cfg, seed=args.seed, device=args.device, resume=args.resume,
                            checkpoint_every=args.checkpoint_every, log=lambda line: print(line, flush=True))
    print(f"diffusion model: {Path(out) / 'diffusion.pt'} ({sum(p.numel() for p in model.net.parameters()) / 1e6:.2f}M "
          f"parameters, {model.step} steps, {len(model.windows.train)} training windows)")
    return 0


def _pgd_dynamics(args: argparse.Namespace) -> int:
    import torch

    from offrl.data import load_dataset
    from offrl.diffusion.pgd import dynamics_report
    from offrl.evaluate import fit_to_env
    from offrl.trainer import load_run_agent

    if args.threads:
        torch.set_num_threads(args.threads)
    agent = None
    if args.policy:
        agent, a = load_run_agent(args.policy)
        ds, env_id = a.dataset, a.env_id
    else:
        if not args.dataset:
            raise OffrlError("offrl pgd dynamics-error needs --policy RUN_DIR or --dataset ID")
        ds = load_dataset(args.dataset)
        env_id = args.env or ds.env_id
        ds = fit_to_env(ds, env_id)
    if args.coef > 0 and agent is None:
        raise OffrlError("--coef > 0 guides with a policy: pass --policy RUN_DIR (a run of `offrl train`)")
    report = dynamics_report(ds, env_id, args.model, agent, args.trajectories, args.coef, args.sample_steps,
                             args.length, args.world_model_steps if agent is not None else 0, args.seed,
                             log=lambda line: print(line, flush=True))
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def _pgd_speed(args: argparse.Namespace) -> int:
    import torch

    from offrl.diffusion.pgd import speed

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = speed([int(f) for f in args.features.split(",")], args.dim, args.length, args.batch, args.trajectories,
                 args.sample_steps, args.train_steps, args.device)
    lines = [f"# Diffusion speed\n\nRegenerate: `offrl pgd speed {' '.join(sys.argv[3:]) if len(sys.argv) > 3 else ''}`".rstrip() + "\n",
             f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; EDM training: batch "
             f"{args.batch} windows × {args.length} steps × {args.dim} features, the rate over {args.train_steps} timed "
             f"steps after 3 warm-up; sampling: {args.trajectories} trajectories of {args.length + 1} steps, "
             f"{args.sample_steps} Heun steps (2 denoiser calls each, 1 on the last).\n",
             "| U-Net features | parameters (M) | EDM train steps/s | sampled trajectories/s |", "|---|---|---|---|"]
    lines += [f"| {r['features']} | {r['parameters_M']} | {r['train_steps_per_s']} | {r['sample_trajectories_per_s']} |" for r in rows]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return 0


def _report(args: argparse.Namespace) -> int:
    from offrl.bench.report import build_report, collect

    out = Path(args.out).parent if args.out and args.out.endswith(".md") else Path(args.out or "report")
    notes = ""
    if args.notes:
        try:
            notes = Path(args.notes).read_text()
        except OSError as e:
            raise OffrlError(f"--notes {args.notes}: {(e.strerror or str(e)).lower()}; give a Markdown file") from None
    runs = collect(args.dirs)
    compare = None
    if args.compare is not None:
        labels = sorted({r.label for r in runs})
        pairs = [tuple(x.strip() for x in pair.split(":")) for pair in _names(args.compare)]
        for pair in pairs or [("",)]:
            if len(pair) != 2 or not all(x in labels for x in pair):
                raise OffrlError(f"--compare {args.compare!r}: give pairs X:Y of agent labels found in the runs "
                                 f"({', '.join(labels)}), comma-separated, e.g. {labels[-1]}:{labels[0]}")
        compare = pairs
    report = build_report(runs, out, title=args.title, command=shlex.join(["offrl", "report", *sys.argv[2:]]),
                          compare=compare, wall_time=args.wall_time, notes=notes)
    if args.out and args.out.endswith(".md") and Path(args.out) != report:
        report.rename(args.out)
        report = Path(args.out)
    print(f"report: {report}")
    return 0


def _speed_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--compile", dest="compile_mode", action="store_const", const="compile",
                   help="torch.compile each update step (offrl.fast; same results to float tolerance)")
    g.add_argument("--cuda-graphs", dest="compile_mode", action="store_const", const="cuda-graphs",
                   help="torch.compile with CUDA graphs (CUDA devices only)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="offrl", description="Offline and offline-to-online RL for continuous control.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an agent on a dataset (and optionally online)")
    t.add_argument("--agent", help="registered agent name (see `offrl agents`)")
    t.add_argument("--dataset", help="Minari dataset id, Minari dataset folder, or D4RL .hdf5 file")
    t.add_argument("--env", help="Gymnasium env id for evaluation/online steps (default: the dataset's)")
    t.add_argument("--domain", help="hyper-parameter domain (auto|locomotion|antmaze|adroit|classic)")
    t.add_argument("--seeds", type=int, help="number of seeds trained at once (member axis)")
    t.add_argument("--seed", type=int, help="base random seed")
    t.add_argument("--steps", type=int, help="offline gradient steps")
    t.add_argument("--online-steps", type=int, help="online env steps per seed after the offline phase")
    t.add_argument("--online-capacity", type=int, help="online buffer rows per seed (default: online steps)")
    t.add_argument("--eval-every", type=int, help="evaluate every k steps")
    t.add_argument("--eval-episodes", type=int, help="evaluation episodes per seed")
    t.add_argument("--risk-threshold", type=float, action="append", default=[], metavar="THETA",
                   help="report P(G ≥ THETA) in final.json's risk block (repeatable)")
    t.add_argument("--log-every", type=int, help="log metrics every k steps")
    t.add_argument("--checkpoint-every", type=int, help="checkpoint every k steps")
    t.add_argument("--device", help="cpu | cuda")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: auto, the cores free at start)")
    t.add_argument("--matmul-precision", help="float32 matmuls: highest (exact) | high (TF32 on GPUs) | medium "
                   "(bfloat16 products: faster on AMX CPUs and GPUs, ~0.5%% error per product)")
    _speed_flags(t)
    t.add_argument("--download", action="store_true", help="download a missing Minari dataset")
    t.add_argument("--plugin", action="append", default=[], help="Python file registering extra agents")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="agent config override")
    t.add_argument("--source", action="append", default=[], metavar="NAME:KEY=VALUE,…",
                   help="a further buffer source, e.g. pgd:model=runs/pgd/hopper,coef=0.1,every=10000")
    t.add_argument("--out", help="run directory (default runs/train/<agent>-<dataset>-seed<seed>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--fork-from", metavar="RUN_DIR", help="start from RUN_DIR's end-of-offline state (its offline.pt) "
                   "and train only the online phase: for online variants (--set of the agent's online settings) of "
                   "one offline-trained run; every other setting must match RUN_DIR's")
    t.add_argument("--config", help="rerun from a run directory's config.json")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.set_defaults(func=_train)
    run_defaults = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING}
    for action in t._actions:                 # flags left unset take RunConfig's defaults: show those
        default = run_defaults.get(action.dest) if action.dest != "agent" else None     # --agent has none
        if action.default is None and default not in (None, "") and "default" not in (action.help or ""):
            action.help += f" (default: {default:,})" if isinstance(default, int) else f" (default: {default})"

    a = sub.add_parser("agents", help="list registered agents")
    a.add_argument("--plugin", action="append", default=[], help="Python file registering extra agents")
    a.set_defaults(func=_agents)

    d = sub.add_parser("datasets", help="list, describe, make or convert datasets")
    dsub = d.add_subparsers(dest="action", required=True)
    dl = dsub.add_parser("list", help="local Minari datasets and D4RL files, with domain and reference scores")
    dl.set_defaults(func=_datasets)
    di = dsub.add_parser("info", help="size, episodes, returns and scores of a dataset")
    di.add_argument("id", help="dataset id, folder or .hdf5 file")
    di.set_defaults(func=_datasets)
    dm = dsub.add_parser("make", help="generate the D4RL-style levels for an env (SAC behaviour policy), "
                         "or a maze zoo set (PointMaze_{UMaze,Medium,Large}[Dense]-v3, waypoint controller)")
    dm.add_argument("env", help="Gymnasium id, e.g. Hopper-v5, InvertedPendulum-v5 or PointMaze_Medium-v3")
    dm.add_argument("--levels", help=f"comma-separated subset of {','.join(LEVELS)}")
    dm.add_argument("--budget", default="quick", help="test | quick | standard | full (see offrl.envs.RECIPES; "
                    "mazes: offrl.maze.TRANSITIONS)")
    dm.add_argument("--out", help="work folder for the behaviour run and policies")
    dm.add_argument("--root", help="Minari datasets root to write to (default $MINARI_DATASETS_PATH)")
    dm.add_argument("--seed", type=int, default=0, help="seed of the behaviour run and the rollouts")
    dm.add_argument("--from-policies", help="skip training: roll out the policies in this folder "
                    "('shipped': the ones committed with the package for this env and budget)")
    dm.add_argument("--force", action="store_true", help="rebuild levels that already exist")
    dm.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    dm.set_defaults(func=_datasets_make)
    dr = dsub.add_parser("report", help="the zoo's summary table (results/datasets.md) with the ladder check")
    dr.add_argument("--policies", action="append", default=[], help="policies/ folder (default: the shipped ones)")
    dr.add_argument("--root", help="Minari datasets root holding the levels (default $MINARI_DATASETS_PATH)")
    dr.add_argument("--out", help="write the Markdown here")
    dr.set_defaults(func=_datasets_report)
    dc = dsub.add_parser("convert", help="a D4RL .hdf5 file → a Minari dataset with D4RL's reference scores")
    dc.add_argument("file", help="a D4RL .hdf5 file, e.g. hopper-medium-v2.hdf5")
    dc.add_argument("--id", help="Minari id to write (default d4rl/<task>/<name>-vN from the file name)")
    dc.add_argument("--env", help="Gymnasium env id to record (default: the task's v5 env when shapes match)")
    dc.add_argument("--root", help="Minari datasets root to write to")
    dc.add_argument("--force", action="store_true", help="overwrite a dataset of that id")
    dc.set_defaults(func=_datasets_convert)

    from offrl.bench import SUITES_DIR

    suites = ", ".join(sorted(x.stem for x in SUITES_DIR.glob("*.yaml")))
    b = sub.add_parser("bench", help="benchmarks: run a suite and write its report (`bench run`), or time updates (`bench speed`)",
                       description="`offrl bench [run] [SUITE]` runs a suite (default quick) and writes its report; "
                                   "`offrl bench speed` times gradient updates. `offrl bench run --help` and "
                                   "`offrl bench speed --help` list their options.",
                       epilog=f"built-in suites: {suites}")
    bsub = b.add_subparsers(dest="bench_command", metavar="{run,speed}")
    b.set_defaults(func=_bench, suite="quick", workers=2, launcher="local", address=None, gpus_per_task=0.0, out=None,
                   report_dir=None, force=False, no_progress=False, agents=None, datasets=None, threads=None)
    br = bsub.add_parser("run", help="run a suite (the default: `offrl bench SUITE` means `offrl bench run SUITE`)",
                         epilog=f"built-in suites: {suites}",
                         )
    br.add_argument("suite", nargs="?", default="quick", help="suite name (offrl/bench/suites) or YAML file")
    br.add_argument("--workers", type=int, default=2, help="parallel processes for the local launcher")
    br.add_argument("--launcher", default="local", choices=["local", "ray"], help="local processes or Ray tasks")
    br.add_argument("--address", help="Ray cluster address (default: a local Ray on loopback only)")
    br.add_argument("--gpus-per-task", type=float, default=0.0, help="Ray GPUs per task (fractions allowed)")
    br.add_argument("--out", help="run directories (default runs/<suite>)")
    br.add_argument("--report-dir", help="report folder (default results/<suite>)")
    br.add_argument("--agents", help="run only these agent labels of the suite (comma-separated); the report "
                                     "still covers every finished run in --out")
    br.add_argument("--datasets", help="run only these datasets of the suite (comma-separated)")
    br.add_argument("--threads", type=int, help="torch threads per run, in place of the suite's threads: (scores do "
                                                 "not depend on it; 2 for one run alone on a 2-core machine)")
    br.add_argument("--force", action="store_true", help="rerun finished runs")
    br.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    br.set_defaults(func=_bench)

    r = sub.add_parser("report", help="a comparison report from run directories")
    r.add_argument("dirs", nargs="+", help="folders holding run directories (final.json)")
    r.add_argument("--out", help="report folder, or a .md path")
    r.add_argument("--title", default="offrl report", help="the report's heading")
    r.add_argument("--wall-time", action="store_true", help="add each agent's run wall times (a Compute table)")
    r.add_argument("--notes", metavar="FILE", help="a Markdown file placed under '## Notes' in the report")
    r.add_argument("--compare", metavar="X:Y,...", help="probability-of-improvement pairs P(X > Y) (default: each "
                                                    "agent against the first); a suite's compare: list")
    r.set_defaults(func=_report)

    pg = sub.add_parser("pgd", help="policy-guided diffusion: train a trajectory model for the `pgd` source")
    pgsub = pg.add_subparsers(dest="pgd_command", required=True)
    pt = pgsub.add_parser("train", help="train (or --resume) the diffusion model of a dataset")
    pt.add_argument("--dataset", required=True, help="Minari id, folder or D4RL .hdf5 file")
    pt.add_argument("--out", help="model folder (default runs/pgd/<dataset>)")
    pt.add_argument("--env", help="Gymnasium env id (default: the dataset's), for the action units runs use")
    pt.add_argument("--steps", type=int, default=20_000, help="EDM gradient steps")
    pt.add_argument("--features", type=int, default=64, help="U-Net width (official 1024; 64–128 on a CPU)")
    pt.add_argument("--blocks", type=int, default=3, help="U-Net levels")
    pt.add_argument("--length", type=int, default=32, help="training window (timesteps)")
    pt.add_argument("--stride", type=int, default=8, help="window start every k steps")
    pt.add_argument("--batch", type=int, default=32, help="windows per step")
    pt.add_argument("--seed", type=int, default=0, help="random seed")
    pt.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    pt.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    pt.add_argument("--checkpoint-every", type=int, default=1000, help="write diffusion.pt every k steps")
    pt.add_argument("--resume", action="store_true", help="continue the model in --out")
    pt.add_argument("--download", action="store_true", help="download a missing Minari dataset")
    pt.set_defaults(func=_pgd_train)
    pd = pgsub.add_parser("dynamics-error", help="dynamics error by horizon of real, unguided, PGD and world-model data")
    pd.add_argument("--model", required=True, help="folder of `offrl pgd train`")
    pd.add_argument("--policy", help="run directory of the target policy (guidance, world-model rollouts, log π)")
    pd.add_argument("--dataset", help="dataset (without --policy; with it, the run's)")
    pd.add_argument("--env", help="Gymnasium env id (default: the dataset's)")
    pd.add_argument("--coef", type=float, default=0.0, help="PGD guidance c (needs --policy)")
    pd.add_argument("--trajectories", type=int, default=64, help="trajectories per policy seed")
    pd.add_argument("--length", type=int, default=0, help="timesteps per trajectory (0: the training window + 1)")
    pd.add_argument("--sample-steps", type=int, default=0, help="sampler steps N (0: the model's 256)")
    pd.add_argument("--world-model-steps", type=int, default=5000, help="training steps of the world model")
    pd.add_argument("--seed", type=int, default=0, help="random seed")
    pd.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    pd.add_argument("--out", help="also write the JSON here")
    pd.set_defaults(func=_pgd_dynamics)
    ps = pgsub.add_parser("speed", help="EDM training steps/s and sampling trajectories/s per U-Net width")
    ps.add_argument("--features", default="64,128", help="comma-separated U-Net widths")
    ps.add_argument("--dim", type=int, default=25, help="timestep vector size (Hopper: 11 + 3 + 2 = 16; Walker2d/HalfCheetah 25)")
    ps.add_argument("--length", type=int, default=32, help="training window")
    ps.add_argument("--batch", type=int, default=32, help="windows per training step")
    ps.add_argument("--trajectories", type=int, default=64, help="trajectories sampled at once")
    ps.add_argument("--sample-steps", type=int, default=32, help="sampler steps N")
    ps.add_argument("--train-steps", type=int, default=20, help="timed training steps")
    ps.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ps.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ps.add_argument("--out", help="also write the Markdown table here")
    ps.set_defaults(func=_pgd_speed)

    sp = bsub.add_parser("speed", help="updates/s per agent and seed count (d3rlpy side by side when installed)",
                         description="updates/s per agent and seed count (d3rlpy side by side when installed)")
    sp.add_argument("--agents", default="td3_bc,iql", help="comma-separated agent names")
    sp.add_argument("--seeds", default="1,4", help="comma-separated seed counts")
    sp.add_argument("--batch", type=int, default=256, help="transitions per seed per update")
    sp.add_argument("--obs-dim", type=int, default=17, help="observation size of the synthetic batches (Hopper's is 11)")
    sp.add_argument("--act-dim", type=int, default=6, help="action size of the synthetic batches")
    sp.add_argument("--rounds", type=int, default=15, help="round-robin rounds")
    sp.add_argument("--updates", type=int, default=40, help="updates per variant per round")
    sp.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    sp.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    sp.add_argument("--matmul-precision", metavar="P,…", help="also time every eager variant with float32 matmuls "
                    "at these precisions: high (TF32 on GPUs), medium (bfloat16 products)")
    _speed_flags(sp)
    sp.add_argument("--no-d3rlpy", action="store_true", help="skip d3rlpy even when it is installed")
    sp.add_argument("--profile", action="store_true",
                    help="also profile every offrl variant: matmul vs other operator time per update")
    sp.add_argument("--out", help="also write the table (with its command) to this Markdown file")
    sp.set_defaults(func=_bench_speed)
    for parser in parsers(p):
        parser.formatter_class = _Help
    return p


class _Help(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and "%(default)" not in text and "default" not in text and \
                action.default not in (None, False, [], argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and all its subcommands' parsers."""
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                out += parsers(sub)
    return out


BENCH_COMMANDS = ("run", "speed")


def _with_bench_run(argv: list[str]) -> list[str]:
    """`offrl bench SUITE …` is short for `offrl bench run SUITE …` (and `offrl bench` for `bench run quick`)."""
    if argv[:1] == ["bench"] and len(argv) > 1 and argv[1] not in BENCH_COMMANDS + ("-h", "--help"):
        return ["bench", "run", *argv[1:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(_with_bench_run(argv))
    try:
        return args.func(args)
    except OffrlError as e:
        print(f"offrl: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Policy-guided diffusion as a data source any agent can use (reference §3.6).

Train a trajectory diffusion model once per dataset (`offrl pgd train`, resumable; `diffusion.pt` in its
folder), then give any agent's run a `pgd` source: `offrl train --agent td3_bc --source pgd:model=DIR,coef=0.1`.
The source holds `capacity` synthetic transitions per seed, a `share` of every batch (official 240 of 256);
it is filled before the first gradient step without guidance (there is no policy yet) and regenerated
every `every` gradient steps with each seed's current policy guiding that seed's trajectories (coef = 0:
unguided, the SynthER-like baseline)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from offrl import OffrlError
from offrl.buffer import SyntheticSource, register_source
from offrl.data.dataset import Dataset
from offrl.diffusion.edm import Diffusion, EDMConfig
from offrl.diffusion.windows import decode, make_windows
from offrl.utils import atomic_write

CHECKPOINT = "diffusion.pt"


def train_diffusion(ds: Dataset, out: str | Path, cfg: EDMConfig, seed: int = 0, device: str = "cpu",
                    resume: bool = False, checkpoint_every: int = 1000, log: Callable[[str], None] | None = None) -> Diffusion:
    """Train (or, with `resume`, continue) the diffusion model of `ds` in folder `out`: `diffusion.pt` (the
    model, its EMA, optimiser and RNG; written atomically every `checkpoint_every` steps and at the end) and
    `log.jsonl` (training loss, validation loss of the EMA model)."""
    out = Path(out)
    path = out / CHECKPOINT
    if path.exists() and not resume:
        raise OffrlError(f"{path} exists; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    model = Diffusion(make_windows(ds, cfg.length, cfg.stride, seed=seed), cfg, seed, device)
    if path.exists():
        state = torch.load(path, weights_only=False, map_location=model.device)
        if state["config"] != asdict(cfg):
            changed = sorted(k for k in state["config"] if state["config"][k] != asdict(cfg).get(k))
            raise OffrlError(f"{path} was trained with other settings ({', '.join(changed)}); resume with the same ones")
        model.load_state_dict(state)
    started, losses = time.time(), []
    with open(out / "log.jsonl", "a") as f:
        while model.step < cfg.train_steps:
            losses.append(model.train_step())
            if model.step % checkpoint_every == 0 or model.step == cfg.train_steps:
                record = {"step": model.step, "loss": float(np.mean(losses)), "valid_loss": model.validation_loss(),
                          "seconds": round(time.time() - started, 1)}
                f.write(json.dumps(record) + "\n")
                f.flush()
                losses = []
                atomic_write(path, lambda fh: torch.save(model.state_dict(), fh), binary=True)
                if log:
                    log(f"diffusion step {model.step}/{cfg.train_steps}: loss {record['loss']:.4f}, "
                        f"validation {record['valid_loss']}")
    return model


def load_diffusion(model_dir: str | Path, ds: Dataset, device: str | torch.device = "cpu") -> Diffusion:
    """The trained model in `model_dir` for dataset `ds` (refused when it was trained on other data)."""
    path = Path(model_dir) / CHECKPOINT
    if not path.is_file():
        raise OffrlError(f"no diffusion model at {path}; train one with `offrl pgd train --dataset ... --out {model_dir}`")
    state = torch.load(path, weights_only=False, map_location=device)
    cfg = EDMConfig(**state["config"])
    model = Diffusion(make_windows(ds, cfg.length, cfg.stride), cfg, device=device)
    model.load_state_dict(state)
    return model


@register_source("pgd")
def pgd_source(buffer, agent, model: str, share: float = 240 / 256, every: int = 10_000, capacity: int = 65_536,
               coef: float = 0.0, cos_coef: float = 0.3, sample_steps: int = 0, length: int = 0,
               seed: int = 0) -> SyntheticSource:
    """The `pgd` source: `model` a folder trained by `offrl pgd train` on this run's dataset; `coef` the
    guidance c (0: unguided); `sample_steps` the sampler's N (0: the model's 256); `length` the generated
    trajectories' timesteps (0: the training window + 1; the official code generates 129)."""
    ds = buffer.dataset
    if ds is None:
        raise OffrlError("the pgd source needs the run's offline dataset (its diffusion model is trained on it)")
    diffusion = load_diffusion(model, ds, buffer.device)
    L = length or diffusion.cfg.length + 1
    longest = int(np.bincount(ds.episode).max())
    if L > longest + 1:
        raise OffrlError(f"pgd length {L} is longer than the dataset's episodes (longest {longest} steps); "
                         f"use length <= {longest + 1}")
    if coef < 0:
        raise OffrlError(f"pgd coef (the guidance c) must be >= 0, got {coef}")
    if coef > 0:                      # fail before any work when the agent cannot guide
        probe = torch.zeros(agent.seeds, 1, ds.obs_dim, device=buffer.device)
        agent.action_log_likelihood(probe, torch.zeros(agent.seeds, 1, ds.act_dim, device=buffer.device))
    w = diffusion.windows

    def generate(source: SyntheticSource, agent: Any, n: int) -> dict[str, torch.Tensor]:
        per_traj = L - 1
        guided = coef > 0 and source.refills > 0          # the first set: no policy yet
        x = diffusion.sample(agent.seeds, math.ceil(n / per_traj), L, generator=source.generator,
                             log_likelihood=agent.action_log_likelihood if guided else None,
                             coef=coef if guided else 0.0, cos_coef=cos_coef, steps=sample_steps or None)
        tr = decode(x.cpu().numpy(), w.normalizer, w.obs_dim, w.act_dim)      # [S, traj, L − 1, ...]
        flat = {k: torch.as_tensor(v.reshape(agent.seeds, -1, *v.shape[3:])[:, :n], device=buffer.device)
                for k, v in tr.items()}
        return {"obs": flat["obs"], "action": flat["action"], "reward": flat["reward"], "next_obs": flat["next_obs"],
                "not_done": 1.0 - flat["terminal"].float()}

    return SyntheticSource(buffer, generate, share, every, capacity, seed=seed)


def dynamics_report(ds: Dataset, env_id: str, model_dir: str | Path, agent: Any | None, trajectories: int = 64,
                    coef: float = 0.0, sample_steps: int = 0, length: int = 0, world_model_steps: int = 5000,
                    seed: int = 0, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Dynamics error by horizon (one-step and open-loop, `offrl.diffusion.dynamics`) of: real dataset
    windows (the simulator-reset sanity check, ≈ 0), unguided diffusion samples, PGD samples guided by
    `agent` with `coef`, and a world model's rollouts with the agent's policy; plus the agent's mean
    log π of each set's actions. `trajectories` per seed of the agent (1 group without an agent)."""
    from offrl.diffusion.dynamics import one_step_error, open_loop_error
    from offrl.diffusion.world_model import EnsembleDynamics, WorldModelConfig

    diffusion = load_diffusion(model_dir, ds)
    w, L = diffusion.windows, length or diffusion.cfg.length + 1
    G = agent.seeds if agent is not None else 1
    gen = torch.Generator().manual_seed(seed)
    sets: dict[str, dict[str, np.ndarray]] = {}
    real = decode(w.train[np.random.default_rng(seed).choice(len(w.train), min(trajectories * G, len(w.train)), replace=False)],
                  w.normalizer, w.obs_dim, w.act_dim)
    sets["real data"] = real
    sets["unguided diffusion"] = decode(diffusion.sample(G, trajectories, L, gen, steps=sample_steps or None).numpy(),
                                        w.normalizer, w.obs_dim, w.act_dim)
    if agent is not None and coef > 0:
        sets[f"PGD (c = {coef})"] = decode(diffusion.sample(G, trajectories, L, gen, agent.action_log_likelihood, coef,
                                                            steps=sample_steps or None).numpy(), w.normalizer, w.obs_dim, w.act_dim)
    if agent is not None and world_model_steps > 0:
        wm = EnsembleDynamics(ds, WorldModelConfig(steps=world_model_steps), seed)
        wm.fit(gen, log)
        starts = torch.as_tensor(real["obs"][:, 0][np.arange(G * trajectories) % len(real["obs"])])

        def policy(s: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return agent.act(s.reshape(G, -1, s.shape[-1]), deterministic=False).reshape(len(s), -1)
        roll = wm.rollout(starts, policy, L - 1, gen)
        sets["world model"] = {"obs": roll["obs"][:, :-1].numpy(), "next_obs": roll["obs"][:, 1:].numpy(),
                               "action": roll["action"].numpy(), "reward": roll["reward"].numpy()}
    out: dict[str, Any] = {"env": env_id, "length": L, "trajectories": {}, "one_step": {}, "open_loop": {}, "log_pi": {}}
    for name, tr in sets.items():
        obs = tr["obs"].reshape(-1, *tr["obs"].shape[-2:])
        nxt = tr["next_obs"].reshape(obs.shape)
        act = tr["action"].reshape(*obs.shape[:2], -1)
        out["trajectories"][name] = len(obs)
        out["one_step"][name] = one_step_error(env_id, obs, act, nxt).to_json()
        out["open_loop"][name] = open_loop_error(env_id, np.concatenate([obs, nxt[:, -1:]], 1), act).to_json()
        if agent is not None:
            k = len(obs) // G * G
            with torch.no_grad():
                ll = agent.action_log_likelihood(torch.as_tensor(obs[:k]).reshape(G, -1, obs.shape[-1]),
                                                 torch.as_tensor(act[:k]).reshape(G, -1, act.shape[-1]))
            out["log_pi"][name] = float(ll.mean())
        if log:
            log(f"{name}: one-step MSE {np.nanmean([x for x in out['one_step'][name]['mse'] if x is not None]):.4g}")
    return out


def speed(features: list[int], dim: int = 25, length: int = 32, batch: int = 32, trajectories: int = 64,
          sample_steps: int = 32, train_steps: int = 20, device: str = "cpu", seed: int = 0) -> list[dict[str, Any]]:
    """EDM training steps/s (batch windows of `length` × `dim`) and sampling trajectories/s (`trajectories`
    of length + 1 with `sample_steps` Heun steps) per U-Net width, on synthetic windows."""
    from offrl.diffusion.windows import Normalizer, Windows

    rng = np.random.default_rng(seed)
    data = rng.normal(size=(512, length, dim)).astype(np.float32)
    w = Windows(data, data[:0], Normalizer(np.zeros(dim), np.ones(dim)), dim - 5, 3, length, "speed")
    rows = []
    for f in features:
        model = Diffusion(w, EDMConfig(features=f, length=length, batch_size=batch, train_steps=10 * train_steps), seed, device)
        sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
        for _ in range(3):                                        # warm-up
            model.train_step()
        sync()
        t = time.perf_counter()
        for _ in range(train_steps):
            model.train_step()
        sync()
        train_rate = train_steps / (time.perf_counter() - t)
        t = time.perf_counter()
        model.sample(1, trajectories, length + 1, steps=sample_steps)
        sync()
        rows.append({"features": f, "parameters_M": round(sum(p.numel() for p in model.net.parameters()) / 1e6, 2),
                     "train_steps_per_s": round(train_rate, 2),
                     "sample_trajectories_per_s": round(trajectories / (time.perf_counter() - t), 2)})
    return rows

"""The pgd source end to end: `offrl pgd train` (resumable), then an agent run whose batches mix in
synthetic transitions, regenerated with its policy guiding; and the bad input refused before any work."""
import json

import numpy as np
import pytest
import torch

from conftest import EMBEDDED_MIXED, run_cli
from offrl import OffrlError
from offrl.data import load_dataset
from offrl.runconfig import parse_source
from offrl.trainer import RunConfig, Trainer

MODEL = ["--features", "16", "--length", "8", "--stride", "4", "--steps", "60", "--checkpoint-every", "30"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pgd") / "model"
    r = run_cli("pgd", "train", "--dataset", EMBEDDED_MIXED, "--out", out, *MODEL)
    assert r.returncode == 0, r.stderr
    return out


def _run(model_dir, out, agent="td3_bc", **source):
    settings = {"factory": "pgd", "model": str(model_dir), "coef": 0.1, "every": 10, "capacity": 300,
                "sample_steps": 6, "share": 0.5, **source}
    run = RunConfig(agent=agent, dataset=EMBEDDED_MIXED, seeds=2, steps=25, eval_every=0, eval_episodes=1,
                    log_every=5, agent_config={"hidden": "16,16", "batch_size": "32"}, sources={"pgd": settings})
    return Trainer(run, out, progress=False)


def test_pgd_train_writes_a_resumable_model(model_dir, tmp_path):
    log = [json.loads(x) for x in (model_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [30, 60] and all(np.isfinite(r["loss"]) for r in log)
    r = run_cli("pgd", "train", "--dataset", EMBEDDED_MIXED, "--out", model_dir, *MODEL)
    assert r.returncode == 2 and "--resume" in r.stderr
    longer = [*MODEL[:-4], "--steps", "90", "--checkpoint-every", "30"]
    r = run_cli("pgd", "train", "--dataset", EMBEDDED_MIXED, "--out", model_dir, *longer, "--resume")
    assert r.returncode == 2 and "other settings" in r.stderr and "train_steps" in r.stderr   # the lr schedule spans them


def test_a_run_mixes_in_guided_synthetic_transitions(model_dir, tmp_path):
    trainer = _run(model_dir, tmp_path / "run")
    trainer.train()
    source = trainer.buffer.sources["pgd"]
    assert source.refills == 3 and source.size() == 300              # before updates 0, 10 and 20
    rows = source.data[:, :source.size()]
    action = rows[..., trainer.buffer.layout[1]]
    assert rows.shape[0] == 2 and (action.abs() <= 1).all() and torch.isfinite(rows).all()
    assert not torch.equal(rows[0], rows[1])                          # each seed's own trajectories


def test_the_source_flag_parses():
    assert parse_source("pgd:model=runs/m,coef=0.1,every=1000,share=0.9375") == (
        "pgd", {"model": "runs/m", "coef": 0.1, "every": 1000, "share": 0.9375})
    with pytest.raises(OffrlError, match="NAME:key=value"):
        parse_source(":coef=1")


def test_bad_input_is_refused_before_any_work(model_dir, tmp_path):
    with pytest.raises(OffrlError, match="policy log-likelihood"):
        _run(model_dir, tmp_path / "bc", agent="bc")                 # bc's policy has no log-likelihood
    assert not (tmp_path / "bc" / "metrics.jsonl").exists()
    with pytest.raises(OffrlError, match="longer than the dataset's episodes"):
        _run(model_dir, tmp_path / "long", length=10_000)
    other = tmp_path / "other"
    ds = load_dataset(EMBEDDED_MIXED)
    from offrl.diffusion.pgd import load_diffusion
    from offrl.data import Dataset
    small = Dataset.from_episodes(ds.to_episodes()[:5], name="five")
    with pytest.raises(OffrlError, match="another dataset"):
        load_diffusion(model_dir, small)
    with pytest.raises(OffrlError, match="no diffusion model"):
        _run(other, tmp_path / "none")


def _hopper_episodes(n=30, seed=0):
    import gymnasium as gym
    from offrl.data.dataset import Episode
    env, rng, eps = gym.make("Hopper-v5"), np.random.default_rng(seed), []
    for i in range(n):
        obs, _ = env.reset(seed=seed + i)
        o, a, r, term = [obs], [], [], []
        for t in range(60):
            act = rng.uniform(-1, 1, 3).astype(np.float32) * 0.5
            obs, rew, done, trunc, _ = env.step(act)
            o.append(obs), a.append(act), r.append(rew), term.append(done)
            if done:
                break
        T = len(a)
        eps.append(Episode(np.array(o, np.float32), np.array(a), np.array(r, np.float32), np.array(term),
                           np.arange(T) == T - 1 if not term[-1] else np.zeros(T, bool)))
    return eps


def test_dynamics_error_of_real_data_is_zero_and_every_set_is_measured(minari_root, tmp_path):
    from offrl.data.minari_io import write_minari
    from offrl.diffusion import EDMConfig
    from offrl.diffusion.pgd import dynamics_report, train_diffusion
    from offrl.evaluate import fit_to_env
    from offrl.trainer import load_run_agent

    write_minari("test/hopper/random-v0", _hopper_episodes(), "Hopper-v5", ref_min_score=0.0, ref_max_score=100.0,
                 root=minari_root)
    ds = fit_to_env(load_dataset("test/hopper/random-v0"), "Hopper-v5")
    train_diffusion(ds, tmp_path / "model", EDMConfig(features=16, length=8, stride=4, train_steps=40), checkpoint_every=40)
    run = RunConfig(agent="td3_bc", dataset="test/hopper/random-v0", seeds=2, steps=20, eval_episodes=0,
                    agent_config={"hidden": "16,16", "batch_size": "32"})
    Trainer(run, tmp_path / "policy", progress=False).train()
    agent, _ = load_run_agent(tmp_path / "policy")
    report = dynamics_report(ds, "Hopper-v5", tmp_path / "model", agent, trajectories=4, coef=0.1, sample_steps=6,
                             world_model_steps=100)
    assert set(report["one_step"]) == {"real data", "unguided diffusion", "PGD (c = 0.1)", "world model"}
    real = report["one_step"]["real data"]["mse"] + report["open_loop"]["real data"]["mse"]
    assert max(x for x in real if x is not None) < 1e-12                # the simulator reset is exact
    for name in ("unguided diffusion", "PGD (c = 0.1)", "world model"):
        assert len(report["open_loop"][name]["mse"]) == 8 and report["open_loop"][name]["counts"][0] > 0
        assert np.isfinite(report["log_pi"][name])
    r = run_cli("pgd", "dynamics-error", "--model", tmp_path / "model", "--dataset", "test/hopper/random-v0", "--coef", "1")
    assert r.returncode == 2 and "--policy" in r.stderr


def test_the_speed_command_reports_both_rates(tmp_path):
    r = run_cli("pgd", "speed", "--features", "16", "--dim", "7", "--length", "8", "--batch", "4", "--trajectories", "2",
                "--sample-steps", "2", "--train-steps", "2", "--out", tmp_path / "speed.md")
    assert r.returncode == 0, r.stderr
    row = (tmp_path / "speed.md").read_text().splitlines()[-1].split("|")
    assert row[1].strip() == "16" and float(row[3]) > 0 and float(row[4]) > 0

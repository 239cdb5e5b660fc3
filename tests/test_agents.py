"""The generic agent test: every registered agent (built-ins and a plug-in loaded from a file) goes
through update, act, save, load, resume-equals-uninterrupted, and member independence."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import PLUGIN, PLUGIN_EXT
from offrl import OffrlError
from offrl.agent import REGISTRY, Spec, load_builtins, load_plugin, resolve_config, resolve_loop
from offrl.buffer import Buffer
from offrl.trainer import NonFiniteError, RunConfig, Trainer

load_builtins()
load_plugin(PLUGIN)
load_plugin(PLUGIN_EXT)
AGENTS = sorted(REGISTRY)
SMALL = {"hidden": "32,32", "batch_size": "16"}


def test_the_plugin_and_builtins_share_one_registry():
    assert {"bc", "td3_bc", "iql", "sac", "plugin_bcq", "plugin_ext"} <= set(AGENTS)


def test_every_agent_is_listed_with_its_own_docstring():
    firsts = {name: " ".join(cls.__doc__.split()).split(". ", 1)[0] for name, cls in REGISTRY.items()}
    assert all(REGISTRY[n].summary.rstrip(".") == first.rstrip(".") for n, first in firsts.items())
    assert len({REGISTRY[n].summary for n in ("td3", "td3_bc", "rebrac", "cql", "cal_ql", "sac_n", "edac")}) == 7


def _make(name, spec, seeds, **over):
    cls = REGISTRY[name]
    cfg = resolve_config(cls, "classic", False, {**SMALL, **over})
    return cls(spec, cfg, seeds, "cpu")


@pytest.fixture(scope="module")
def fitted(pendulum_dataset):
    import gymnasium as gym
    env = gym.make("InvertedPendulum-v5")
    return pendulum_dataset.fit_to_env(env.observation_space, env.action_space)


@pytest.mark.parametrize("name", AGENTS)
def test_update_act_save_load(name, fitted, tmp_path):
    torch.manual_seed(0)
    spec = Spec.from_dataset(fitted, "classic")
    agent = _make(name, spec, seeds=2)
    buf = Buffer(fitted, 2, seed=0, columns=agent.columns(), gamma=agent.cfg.gamma)
    for _ in range(3):
        metrics = agent.update(buf.sample(16))
    assert metrics and all(v.shape == (2,) and torch.isfinite(v).all() for v in metrics.values())
    obs = torch.as_tensor(fitted.observations[:10]).view(2, 5, -1)
    for det in (True, False):
        a = agent.act(obs, deterministic=det)
        assert a.shape == (2, 5, 1) and a.abs().max() <= 1.0
    torch.save(agent.state_dict(), tmp_path / "a.pt")
    clone = _make(name, spec, seeds=2)
    clone.load_state_dict(torch.load(tmp_path / "a.pt", weights_only=True))
    assert clone.num_updates == 3
    torch.testing.assert_close(clone.act(obs), agent.act(obs), rtol=0, atol=0)
    # wrong agent or seed count: a clear error
    other = _make("bc" if name != "bc" else "td3_bc", spec, seeds=2)
    with pytest.raises(OffrlError, match="checkpoint holds agent"):
        other.load_state_dict(agent.state_dict())
    with pytest.raises(OffrlError, match="seeds"):
        _make(name, spec, seeds=3).load_state_dict(agent.state_dict())


def _train_records(out):
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], {k: v for k, v in r.items() if k not in ("step", "phase", "kind")})
            for r in lines if r["kind"] == "train"]


@pytest.mark.parametrize("name", AGENTS)
def test_resume_equals_uninterrupted(name, pendulum_dataset, tmp_path):
    def run_cfg():
        return RunConfig(agent=name, dataset="pendulum", env="InvertedPendulum-v5", seeds=2, seed=3, steps=8,
                         eval_episodes=0, log_every=1, checkpoint_every=100, agent_config=dict(SMALL),
                         plugins=[str(PLUGIN), str(PLUGIN_EXT)])
    straight = Trainer(run_cfg(), tmp_path / "straight", progress=False, dataset=pendulum_dataset)
    straight.train()
    first = Trainer(run_cfg(), tmp_path / "resumed", progress=False, dataset=pendulum_dataset)
    assert first.train(until=4) is None
    assert not (tmp_path / "resumed" / "final.json").exists()
    with pytest.raises(OffrlError, match="--resume"):
        Trainer(run_cfg(), tmp_path / "resumed", progress=False, dataset=pendulum_dataset)
    second = Trainer(run_cfg(), tmp_path / "resumed", resume=True, progress=False, dataset=pendulum_dataset)
    second.train()
    assert _train_records(tmp_path / "straight") == _train_records(tmp_path / "resumed")
    a, b = straight.agent.state_dict(), second.agent.state_dict()
    for k in a["nets"]:
        assert torch.equal(a["nets"][k], b["nets"][k]), k
    for opt in a["optimizers"]:
        for pid, st in a["optimizers"][opt]["state"].items():
            for key, t in st.items():
                assert torch.equal(t, b["optimizers"][opt]["state"][pid][key]), (opt, pid, key)


def test_runs_record_the_data_they_trained_on_and_refuse_to_resume_on_another_build(pendulum_dataset, tmp_path):
    """The dataset's sha256 goes into config.json and final.json; a half-done run whose dataset was rebuilt
    (here: one reward moved by one float32 step) stops with an error instead of mixing the two."""
    import dataclasses

    import numpy as np

    from offrl.record import RunRecord

    run = RunConfig(agent="td3_bc", dataset="pendulum", env="InvertedPendulum-v5", seeds=1, steps=6, eval_episodes=1,
                    eval_every=6, checkpoint_every=100, agent_config=dict(SMALL))
    rewards = pendulum_dataset.rewards.copy()
    rewards[7] = np.nextafter(rewards[7], np.float32(np.inf))
    rebuilt = dataclasses.replace(pendulum_dataset, rewards=rewards)
    assert rebuilt.content_hash() != pendulum_dataset.content_hash()
    Trainer(run, tmp_path / "r", progress=False, dataset=pendulum_dataset).train(until=3)
    with pytest.raises(OffrlError, match="another build of pendulum"):
        Trainer(run, tmp_path / "r", resume=True, progress=False, dataset=rebuilt)
    Trainer(run, tmp_path / "r", resume=True, progress=False, dataset=pendulum_dataset).train()
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["dataset"]["content_hash"] == pendulum_dataset.content_hash()
    assert RunRecord.load(tmp_path / "r").dataset_hash == pendulum_dataset.content_hash()


def test_a_run_keeps_its_matmul_precision_and_reports_name_it(pendulum_dataset, tmp_path):
    """matmul_precision=medium (bfloat16 products) is set for the run's updates, recorded in config.json,
    kept on resume (another precision is refused) and listed by reports; runs at exact float32 are not."""
    import dataclasses

    from offrl.bench.report import build_report
    from offrl.record import RunRecord

    run = RunConfig(agent="td3_bc", dataset="pendulum", env="InvertedPendulum-v5", seeds=1, steps=6, eval_episodes=1,
                    eval_every=6, checkpoint_every=100, matmul_precision="medium", agent_config=dict(SMALL))
    try:
        Trainer(run, tmp_path / "bf16", progress=False, dataset=pendulum_dataset).train(until=3)
        assert torch.get_float32_matmul_precision() == "medium"
        with pytest.raises(OffrlError, match="started with matmul_precision 'medium'"):
            Trainer(dataclasses.replace(run, matmul_precision="highest"), tmp_path / "bf16", resume=True,
                    progress=False, dataset=pendulum_dataset)
        Trainer(run, tmp_path / "bf16", resume=True, progress=False, dataset=pendulum_dataset).train()
        exact = dataclasses.replace(run, matmul_precision="highest", label="td3_bc-exact")
        Trainer(exact, tmp_path / "exact", progress=False, dataset=pendulum_dataset).train()
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision("highest")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["run"]["matmul_precision"] == "medium"
    records = [RunRecord.load(tmp_path / d) for d in ("bf16", "exact")]
    assert [r.matmul_precision for r in records] == ["medium", "highest"]
    text = build_report(records, tmp_path / "report").read_text()
    section = text[text.index("## Matmul precision"):].split("\n\n## ")[0]
    assert "| td3_bc | pendulum | medium |" in section and "td3_bc-exact" not in section
    assert "## Matmul precision" not in build_report(records[1:], tmp_path / "report2").read_text()


@pytest.mark.parametrize("name,key", [("td3_bc", "actor_loss"), ("famo2o_iql", "balance_loss")])
def test_metrics_of_periodic_sub_steps_reach_every_train_line_and_survive_resume(name, key, pendulum_dataset, tmp_path):
    """A sub-step that runs every k updates (TD3's delayed actor, k = 2; FamO2O's balance model, k = 5) is logged
    with its latest value even when the log step falls between its updates (here always: update i runs it when i % k
    == 0 and the log lines come after updates 4, 9, 14, 19), and a resume from a checkpoint taken between
    two log lines logs the same values as the uninterrupted run."""
    def run_cfg():
        return RunConfig(agent=name, dataset="pendulum", env="InvertedPendulum-v5", seeds=2, seed=3, steps=20,
                         eval_episodes=0, log_every=5, checkpoint_every=7, agent_config=dict(SMALL))
    straight = Trainer(run_cfg(), tmp_path / "straight", progress=False, dataset=pendulum_dataset)
    straight.train()
    records = _train_records(tmp_path / "straight")
    assert [step for step, _ in records] == [5, 10, 15, 20]
    assert all(key in r and all(map(math.isfinite, r[key])) for _, r in records), records
    assert len({tuple(r[key]) for _, r in records}) == 4                   # a fresh value each line, not a stale one
    first = Trainer(run_cfg(), tmp_path / "resumed", progress=False, dataset=pendulum_dataset)
    assert first.train(until=7) is None                                    # checkpoint after update 6: update 5 carried
    Trainer(run_cfg(), tmp_path / "resumed", resume=True, progress=False, dataset=pendulum_dataset).train()
    assert _train_records(tmp_path / "resumed") == records


def _slice_state(state, k, S):
    """Member k of an S-seed agent's state, as a 1-seed agent's state."""
    def cut(x):
        if isinstance(x, torch.Tensor):
            return x[k:k + 1].clone() if x.dim() >= 1 and x.shape[0] == S else x
        if isinstance(x, dict):
            return {key: (v if key in ("obs_mean", "obs_std") else cut(v)) for key, v in x.items()}
        if isinstance(x, list):
            return [cut(v) for v in x]
        return x
    out = cut(state)
    out["seeds"] = 1
    return out


@pytest.mark.parametrize("name", AGENTS)
def test_member_k_takes_the_single_seed_step(name, fitted, monkeypatch):
    """Member k of a 3-seed agent, given member k's weights, batch and noise, steps exactly like a
    1-seed agent. Every random draw of the agents goes through torch.randn_like or torch.rand_like on
    [S, ...] tensors; the test records the 3-seed draws and replays member k's slices to the 1-seed agent.
    Equal up to float rounding (rtol 1e-5): autograd sums an ensemble's N > 2 per-member gradients in an
    order that may differ between S = 3 and S = 1; mixing members would differ by orders more."""
    S, k = 3, 1
    spec = Spec.from_dataset(fitted, "classic")
    torch.manual_seed(0)
    big = _make(name, spec, S)
    small = _make(name, spec, 1)
    small.load_state_dict(_slice_state(big.state_dict(), k, S))
    buf = Buffer(fitted, S, seed=1, columns=big.columns(), gamma=big.cfg.gamma)
    real = {"randn_like": torch.randn_like, "rand_like": torch.rand_like}
    for step in range(4):                           # covers delayed actor steps (policy_freq 2)
        batch = buf.sample(16)
        draws = []
        for fn, draw in real.items():
            monkeypatch.setattr(torch, fn, lambda x, draw=draw, **kw: draws.append(draw(x, **kw)) or draws[-1])
        m_big = big.update(batch)
        replay = iter(d[k:k + 1] for d in draws)
        for fn in real:
            monkeypatch.setattr(torch, fn, lambda x, **kw: next(replay))
        m_small = small.update(type(batch)(*(t[k:k + 1] for t in batch)))
        for fn, draw in real.items():
            monkeypatch.setattr(torch, fn, draw)
        assert m_big.keys() == m_small.keys()
        for key in m_big:
            torch.testing.assert_close(m_big[key][k:k + 1], m_small[key], rtol=1e-5, atol=1e-6, msg=f"{key} step {step}")
    big_nets, small_nets = big.state_dict()["nets"], small.state_dict()["nets"]
    for key, value in small_nets.items():
        expected = big_nets[key] if key in ("obs_mean", "obs_std") else big_nets[key][k:k + 1]
        torch.testing.assert_close(expected, value, rtol=1e-5, atol=1e-6, msg=key)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(pendulum_dataset, tmp_path):
    run = RunConfig(agent="plugin_bcq", dataset="pendulum", env="InvertedPendulum-v5", seeds=2, steps=20,
                    eval_episodes=0, log_every=5, checkpoint_every=5, plugins=[str(PLUGIN)],
                    agent_config={"nan_at_update": "7"})
    trainer = Trainer(run, tmp_path / "nan", progress=False, dataset=pendulum_dataset)
    # update 8 (index 7) steps with a NaN loss, so the reported losses are NaN from step 9 on
    with pytest.raises(NonFiniteError, match="non-finite at step 9") as e:
        trainer.train()
    assert "bc_loss" in str(e.value) and "checkpoint" in str(e.value)
    state = torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=True)
    assert state["offline_step"] == 5
    assert all(torch.isfinite(v).all() for v in state["agent"]["nets"].values())
    assert not (tmp_path / "nan" / "final.json").exists()


def test_config_overrides_are_typed_and_checked():
    cls = REGISTRY["td3_bc"]
    cfg = resolve_config(cls, "locomotion", False, {"alpha": "5", "policy_freq": "3", "hidden": "64,64"})
    assert cfg.alpha == 5.0 and cfg.policy_freq == 3 and cfg.hidden == (64, 64)
    with pytest.raises(OffrlError, match="did you mean 'alpha'"):
        resolve_config(cls, "locomotion", False, {"alpah": "1"})
    with pytest.raises(OffrlError, match="expects int"):
        resolve_config(cls, "locomotion", False, {"policy_freq": "two"})
    # loop settings take the same --set names but resolve into the run's LoopConfig, not the agent's
    with pytest.raises(OffrlError, match="mixing"):
        resolve_loop(cls, "locomotion", False, {"buffer_mixing": "blend"})
    loop = resolve_loop(cls, "locomotion", True, {"buffer_mixing": "fixed", "utd": "2", "alpha": "5"})
    assert (loop.buffer_mixing, loop.utd) == ("fixed", 2) and not hasattr(cfg, "buffer_mixing")
    assert resolve_loop(REGISTRY["sac"], "locomotion", False).random_steps == 5000
    iql = REGISTRY["iql"]
    assert resolve_config(iql, "antmaze", False).expectile == 0.9
    assert resolve_config(iql, "antmaze", False).reward_transform == "antmaze"
    assert resolve_config(iql, "locomotion", True).actor_lr_decay_steps == 0
    assert resolve_config(iql, "locomotion", False).actor_lr_decay_steps == 1_000_000


@pytest.mark.parametrize("name,offline_steps", [(n, 4) for n in AGENTS] + [("sac", 0)])
def test_online_resume_equals_uninterrupted(name, offline_steps, pendulum_dataset, tmp_path):
    """Paused in the middle of online episodes, a run resumes exactly: MuJoCo physics, time-limit
    counters and env RNGs are in the checkpoint, with the online buffer and all RNG states."""
    def run_cfg():
        return RunConfig(agent=name, dataset="pendulum" if offline_steps else None, env="InvertedPendulum-v5",
                         seeds=2, seed=5, steps=offline_steps, online_steps=40, eval_episodes=0, log_every=1,
                         checkpoint_every=1000, plugins=[str(PLUGIN), str(PLUGIN_EXT)],
                         agent_config={**SMALL, **({"random_steps": "10"} if name == "sac" else {})})
    data = pendulum_dataset if offline_steps else None
    straight = Trainer(run_cfg(), tmp_path / "straight", progress=False, dataset=data)
    straight.train()
    first = Trainer(run_cfg(), tmp_path / "resumed", progress=False, dataset=data)
    assert first.train(until=offline_steps + 23) is None
    second = Trainer(run_cfg(), tmp_path / "resumed", resume=True, progress=False, dataset=data)
    second.train()
    assert len(straight.online_episodes) >= 2                    # episodes ended and restarted on the way
    assert straight.online_episodes == second.online_episodes
    assert _train_records(tmp_path / "straight") == _train_records(tmp_path / "resumed")
    assert torch.equal(straight.buffer.online, second.buffer.online)
    a, b = straight.agent.state_dict()["nets"], second.agent.state_dict()["nets"]
    for k in a:
        assert torch.equal(a[k], b[k]), k

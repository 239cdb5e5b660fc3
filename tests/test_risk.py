"""Risk-aware evaluation: risky reward wrappers, the time feature, the stock-augmented agent's stock
bookkeeping, and the risk block of final.json."""
import json

import numpy as np
import pytest
import torch

from offrl import OffrlError
from offrl.agent import Spec, get_agent, resolve_config
from offrl.algorithms.stock_ac import lower_tail_mean
from offrl.data.scripted import PD_GAINS
from offrl.evaluate import make_env, restore_env_state, env_state
from offrl.risk import empirical_cvar
from offrl.trainer import RunConfig, Trainer

RISKY = "offrl/RiskyInvertedPendulum-v5"


def _drive_right(env, seed, steps=300):
    """The scripted PD controller balancing at cart position 0.5, inside the risky region."""
    obs, _ = env.reset(seed=seed)
    out = []
    for t in range(steps):
        a = np.clip(PD_GAINS @ (obs - np.array([0.5, 0, 0, 0])) / 3.0, -1, 1).astype(np.float32)[None]
        obs, r, term, trunc, info = env.step(a)
        out.append((r, info["risk_region"], info["risk_penalty"]))
        if term or trunc:
            break
    return out


def test_risky_wrapper_pays_a_bonus_and_rare_reproducible_penalties():
    env = make_env(RISKY)
    steps = _drive_right(env, seed=0)
    assert any(inside for _, inside, _ in steps)
    for r, inside, hit in steps:
        assert r == (1.0 + (1.0 - 60.0 * hit if inside else 0.0))
    again = _drive_right(make_env(RISKY), seed=0)
    assert again == steps                                   # the penalty draws follow the reset seed
    hits = [h for s in range(10) for _, inside, h in _drive_right(env, seed=s) if inside]
    assert 0 < sum(hits) < 0.2 * len(hits)
    # the mean-reward twin (what the zoo's SAC learns on): same states, the penalty's expectation, no draws
    mean = _drive_right(make_env("offrl/RiskyInvertedPendulumMeanReward-v5"), seed=0)
    assert [inside for _, inside, _ in mean] == [inside for _, inside, _ in steps]
    assert all(r == pytest.approx(1.0 + (1.0 - 60.0 * 0.01 if inside else 0.0)) and not hit for r, inside, hit in mean)


def test_time_feature_matches_between_dataset_and_env(pendulum_dataset):
    T = 1000
    ds = pendulum_dataset.with_time_feature(T)
    t = pendulum_dataset.steps_in_episode()
    assert ds.obs_dim == pendulum_dataset.obs_dim + 1
    np.testing.assert_allclose(ds.observations[:, -1], t / T, rtol=1e-6)
    np.testing.assert_allclose(ds.next_observations[:, -1], (t + 1) / T, rtol=1e-6)
    assert (ds.terminals[t + 1 == T]).all() and not ds.timeouts[t + 1 == T].any()
    with pytest.raises(OffrlError, match="longer than the env's time limit"):
        pendulum_dataset.with_time_feature(int(t.max()))
    env = make_env("InvertedPendulum-v5", time_feature=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (5,) and obs[-1] == 0
    for k in range(3):
        obs, *_ = env.step(np.zeros(1, np.float32))
    assert obs[-1] == pytest.approx(3 / T)
    snap = env_state(env)
    fresh = make_env("InvertedPendulum-v5", time_feature=True)
    fresh.reset(seed=1)
    restore_env_state(fresh, snap)
    assert fresh.step(np.zeros(1, np.float32))[0][-1] == pytest.approx(4 / T)


def test_cvar_of_atoms_is_the_fractional_empirical_cvar():
    atoms = torch.tensor([[3.0, 1.0, 4.0, 2.0]])
    for tau in (0.25, 0.3, 0.5, 1.0):
        assert lower_tail_mean(atoms, tau).item() == pytest.approx(float(empirical_cvar([1, 2, 3, 4], tau)))


def _agent(objective, **over):
    cls = get_agent("stock_ac")
    spec = Spec(3, 1, "classic", np.zeros(3, np.float32), np.ones(3, np.float32), (-50.0, 150.0))
    cfg = resolve_config(cls, "classic", False, {"objective": objective, "hidden": "16,16", **over})
    return cls(spec, cfg, 2)


def test_stock_follows_the_rewards_and_c0_follows_the_objective():
    obs = torch.zeros(2, 3, 3)
    start = torch.ones(2, 3, dtype=torch.bool)
    prob = _agent("prob", threshold=100.0, gamma=0.5, time_feature=False)
    prob.begin_episodes(obs, start)
    assert torch.allclose(prob.episode_state["stock"], torch.full((2, 3), -1.0))     # −θ·reward_scale
    prob.observe(torch.full((2, 3), 50.0))
    assert torch.allclose(prob.episode_state["stock"], torch.full((2, 3), -1.0))     # (−1 + 0.5)/0.5
    restart = torch.tensor([[True, False, False], [False, False, False]])
    prob.episode_state["stock"] = torch.full((2, 3), 7.0)
    prob.begin_episodes(obs, restart)
    assert prob.episode_state["stock"][0, 0] == -1.0 and (prob.episode_state["stock"].flatten()[1:] == 7.0).all()
    mean = _agent("mean")
    mean.begin_episodes(obs, start)
    assert (mean.episode_state["stock"] == 0).all()
    cvar = _agent("cvar")
    assert cvar.c_lo == pytest.approx(-1.7) and cvar.c_hi == pytest.approx(0.7)     # [−G_max, −G_min] ± 10 %
    cvar.begin_episodes(obs, start)
    c0 = cvar.episode_state["stock"]
    # c0 maximises J(c) = (1/N) Σ f(c + θ_i) − c over the grid, θ from Z_V(s_0, c) (in-sample target).
    grid = torch.linspace(cvar.c_lo, cvar.c_hi, cvar.cfg.c0_grid)
    with torch.no_grad():
        x = cvar._with_stock(torch.zeros(2, len(grid), 3), grid.repeat(2, 1))
        z = cvar.value(x)
        j = cvar.obj.utility(grid.repeat(2, 1).unsqueeze(-1) + z).mean(-1) - grid
    assert torch.allclose(c0, grid[j.argmax(-1)].unsqueeze(-1).expand(2, 3))
    with pytest.raises(OffrlError, match="unknown objective"):
        _agent("median")
    with pytest.raises(OffrlError, match="risk_level"):
        _agent("cvar", risk_level=0.0)


def test_n_step_rows_move_the_stock_and_discount_by_gamma_to_the_horizon(pendulum_dataset, tmp_path):
    agent = _agent("cvar", gamma=0.5, time_feature=False)
    c, r = torch.tensor([[0.1, -0.2, 0.3]]), torch.tensor([[0.2, 0.1, -0.1]])
    c2, discount = agent.next_stock(c, r, torch.tensor([[1.0, 2.0, 3.0]]))
    torch.testing.assert_close(discount, torch.tensor([[0.5, 0.25, 0.125]]))
    torch.testing.assert_close(c2, ((c + r) / discount).clamp(agent.c_lo, agent.c_hi))
    assert torch.equal(agent.next_stock(c, r, None)[0], agent.next_stock(c, r, torch.ones_like(r))[0])
    # trajectory relabelling: a row at step t after return P gets (c_0 + P·scale)/γ^t, clipped
    from offrl.buffer import batch_type
    z = torch.zeros(1, 3)
    rows = batch_type(("elapsed", "past_return"))(z, z, z, z, z, elapsed=torch.tensor([[0.0, 1.0, 2.0]]), past_return=torch.tensor([[0.0, 10.0, -5.0]]))
    expect = ((c + rows.past_return * 0.01) / 0.5 ** rows.elapsed).clamp(agent.c_lo, agent.c_hi)
    torch.testing.assert_close(agent.relabel(c, rows), expect)
    assert torch.equal(_agent("cvar", stock_relabel="uniform").relabel(c, rows), c)
    # through the trainer: n-step rows reach the agent (the buffer is built with the agent's n and γ)
    run = RunConfig(agent="stock_ac", dataset="pendulum", env="InvertedPendulum-v5", seeds=2, steps=4,
                    eval_episodes=0, agent_config={"hidden": "16,16", "batch_size": "64", "n_step": "4"})
    trainer = Trainer(run, tmp_path / "r", progress=False, dataset=pendulum_dataset)
    assert trainer.buffer.sample(64).horizon.max() == 4
    trainer.train()
    with pytest.raises(OffrlError, match="reward_transform"):
        _agent("cvar", n_step=3, reward_transform="antmaze")
    with pytest.raises(OffrlError, match="stock_relabel"):
        _agent("cvar", stock_relabel="sometimes")


def test_final_json_reports_risk_statistics(pendulum_dataset, tmp_path):
    run = RunConfig(agent="stock_ac", dataset="pendulum", env="InvertedPendulum-v5", seeds=2, steps=20,
                    eval_episodes=4, eval_every=0, risk_thresholds=[5.0], agent_config={"hidden": "16,16",
                                                                                       "batch_size": "16"})
    result = Trainer(run, tmp_path / "r", progress=False, dataset=pendulum_dataset).train()
    risk = result["risk"]
    assert risk["episodes_per_seed"] == 4 and "warning" in risk
    for seed, stats in enumerate(risk["per_seed"]):
        returns = result["final_episode_returns"][seed]
        assert stats["cvar_0.25"] == pytest.approx(min(returns))
        assert stats["worst"] == min(returns) and stats["mean"] == pytest.approx(np.mean(returns))
        assert stats["p_ge_5"] == np.mean(np.array(returns) >= 5)
    assert json.loads((tmp_path / "r" / "final.json").read_text())["risk"] == risk


def test_report_has_a_risk_table(pendulum_dataset, tmp_path):
    from offrl.bench.report import bootstrap_mean_ci, build_report, collect

    assert bootstrap_mean_ci(np.array([3.0, 3.0, 3.0])) == (3.0, 3.0)
    lo, hi = bootstrap_mean_ci(np.array([0.0, 10.0]))
    assert 0.0 <= lo < 5.0 < hi <= 10.0
    for label, objective in (("mean", "mean"), ("cvar", "cvar")):
        run = RunConfig(agent="stock_ac", label=label, dataset="pendulum", env="InvertedPendulum-v5", seeds=2,
                        steps=10, eval_episodes=3, eval_every=0, agent_config={"hidden": "16,16", "batch_size": "16",
                                                                              "objective": objective})
        Trainer(run, tmp_path / "runs" / label, progress=False, dataset=pendulum_dataset).train()
    text = build_report(collect([tmp_path / "runs"]), tmp_path / "report").read_text()
    assert "## Risk (final evaluation, raw returns)" in text
    rows = [line for line in text.splitlines() if line.startswith(("| pendulum | mean | 2 |", "| pendulum | cvar | 2 |"))]
    assert len(rows) == 2 and "cvar 0.1" in text and "fewer than 100 episodes" in text
    # with 3 episodes a seed, CVaR and VaR at α ≤ 1/3 are the worst episode: one column, saying so
    assert "| mean | worst (= cvar 0.05, cvar 0.1, cvar 0.25, var 0.1) |" in text
    assert "2 runs: 2 agents × 1 dataset, 2 seeds each, 3 evaluation episodes per seed" in text
    # notes from a file land under their own heading; a missing file is one line, and no report is written
    from conftest import run_cli

    (tmp_path / "notes.md").write_text("The cvar agent was run with 10 steps only.\n")
    done = run_cli("report", tmp_path / "runs", "--out", tmp_path / "with_notes", "--notes", tmp_path / "notes.md")
    assert done.returncode == 0, done.stderr
    assert "## Notes\n\nThe cvar agent was run with 10 steps only.\n" in (tmp_path / "with_notes" / "REPORT.md").read_text()
    bad = run_cli("report", tmp_path / "runs", "--out", tmp_path / "no_notes", "--notes", tmp_path / "missing.md")
    assert bad.returncode != 0 and "--notes" in bad.stderr and "no such file" in bad.stderr
    assert not (tmp_path / "no_notes").exists()


def test_run_record_is_what_the_trainer_wrote(pendulum_dataset, tmp_path):
    """One typed record for both sides: RunRecord.load(dir) gives back final.json and every evaluation line."""
    from offrl.record import RunRecord

    run = RunConfig(agent="bc", label="bc-small", dataset="pendulum", env="InvertedPendulum-v5", seeds=2,
                    steps=30, online_steps=10, eval_every=10, eval_episodes=2, agent_config={"hidden": "16,16"})
    result = Trainer(run, tmp_path / "r", progress=False, dataset=pendulum_dataset).train()
    record = RunRecord.load(tmp_path / "r")
    assert record.to_json() == result == json.loads((tmp_path / "r" / "final.json").read_text())
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    evals = [{k: v for k, v in x.items() if k != "kind"} for x in lines if x["kind"] == "eval"]
    assert [e.to_json() for e in record.evaluations] == evals and len(evals) == 4       # offline 10, 20, 30; online 40
    assert record.label == "bc-small" and record.name == "pendulum"
    assert record.scores("final").tolist() == result["final"]["normalized"]
    assert record.scores("offline_final").tolist() == evals[2]["normalized"]
    assert record.risk.column("worst").tolist() == [min(r) for r in result["final_episode_returns"]]
    (tmp_path / "r" / "final.json").write_text("{}")
    with pytest.raises(OffrlError, match="not a readable offrl run directory"):
        RunRecord.load(tmp_path / "r")

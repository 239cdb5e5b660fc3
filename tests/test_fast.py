"""The speed flags change no result beyond float tolerance (CPU): every registered agent, and the
online phase (samples from a growing FIFO), trained eagerly and with `--compile`."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import PLUGIN
from offrl import OffrlError
from offrl.agent import REGISTRY, load_builtins, load_plugin
from offrl.fast import check_mode
from offrl.trainer import RunConfig, Trainer

load_builtins()
load_plugin(PLUGIN)
SMALL = {"hidden": "32,32", "batch_size": "16"}


def _records(out):
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == "train"]


def _run(tmp_path, pendulum_dataset, mode, **over):
    run = RunConfig(**{"dataset": "pendulum", "env": "InvertedPendulum-v5", "seeds": 2, "seed": 5, "steps": 6,
                       "eval_episodes": 0, "log_every": 1, "checkpoint_every": 100, "agent_config": dict(SMALL),
                       "plugins": [str(PLUGIN)], "compile_mode": mode, **over})
    trainer = Trainer(run, tmp_path / mode, progress=False, dataset=pendulum_dataset)
    trainer.train()
    return trainer


def _assert_same(eager, compiled, tmp_path):
    a, b = eager.agent.state_dict()["nets"], compiled.agent.state_dict()["nets"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
    ra, rb = _records(tmp_path / "none"), _records(tmp_path / "compile")
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        assert x.keys() == y.keys()
        for key in x:
            if key not in ("step", "phase", "kind"):
                torch.testing.assert_close(torch.tensor(y[key]), torch.tensor(x[key]), rtol=1e-4, atol=1e-5)


# Agents whose update is another's plus a loss term run only with -m slow (CI time): cal_ql (cql's), td3
# (td3_bc's without BC), sac_n (edac's without its term), sac (edac's nets and losses with 2 critics and no
# diversity term), awac (iql's critic and AWR actor without V), rebrac (td3_bc's graph with LayerNorm and
# one more penalty), hybrid_ac (td3_bc's graph on an ensemble with a max over target actions), a2pr (td3's
# graph plus an MLP value net and an MLP VAE, ~40 s to compile), famo2o_iql, famo2o_awac, famo2o_cql (iql's,
# awac's and cql's graphs on a β-conditioned policy, plus a one-output balance net).
COVERED = {"cal_ql", "td3", "sac_n", "sac", "awac", "rebrac", "hybrid_ac", "a2pr", "famo2o_iql", "famo2o_awac",
           "famo2o_cql"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in COVERED else n
                                  for n in sorted(REGISTRY)])
def test_compile_changes_no_result(name, pendulum_dataset, tmp_path):
    """6 offline updates of 2 seeds (TD3-style delayed actor steps take both branches)."""
    eager = _run(tmp_path, pendulum_dataset, "none", agent=name)
    compiled = _run(tmp_path, pendulum_dataset, "compile", agent=name)
    _assert_same(eager, compiled, tmp_path)


@pytest.mark.parametrize("name", ["iql", pytest.param("rebrac", marks=pytest.mark.slow),
                                  pytest.param("hybrid_ac", marks=pytest.mark.slow)])
def test_compile_online_phase_changes_no_result(name, pendulum_dataset, tmp_path):
    """Offline then online: the online buffer grows every step, so sizes change under the graphs (IQL);
    ReBRAC's BC weight decays with the update count online; hybrid_ac switches critics (host side) at 2, 4, 8."""
    extra = {"first_switch": "2", "md_every": "3"} if name == "hybrid_ac" else {}
    over = {"agent": name, "steps": 3, "online_steps": 8, "agent_config": {**SMALL, "random_steps": "0", **extra}}
    eager = _run(tmp_path, pendulum_dataset, "none", **over)
    compiled = _run(tmp_path, pendulum_dataset, "compile", **over)
    _assert_same(eager, compiled, tmp_path)


def test_bad_speed_modes_fail_before_any_work(pendulum_dataset, tmp_path):
    with pytest.raises(OffrlError, match="needs a CUDA device"):
        _run(tmp_path, pendulum_dataset, "cuda-graphs", agent="td3_bc")
    with pytest.raises(OffrlError, match="unknown speed mode 'fast'"):
        _run(tmp_path, pendulum_dataset, "fast", agent="td3_bc")
    assert not any(tmp_path.iterdir())
    with pytest.raises(OffrlError, match="choose one of none, compile, cuda-graphs"):
        check_mode("jit", "cpu")

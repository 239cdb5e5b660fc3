"""Forks: an O2O run that starts from another run's end-of-offline state (RunConfig.fork_from) is the run
trained from scratch, exactly, when the two differ only in online settings; anything else is refused
before a file is written. Suites fork with `fork: <label>` and run a fork once its source is done."""
import json
import re

import pytest
import torch

from conftest import run_cli
from offrl import OffrlError
from offrl.bench.suite import SuiteError, load_suite
from offrl.bench.sweep import _dispatch, run_suite
from offrl.trainer import OFFLINE_STATE, RunConfig, Trainer

SMALL = {"hidden": "16,16", "batch_size": "8", "first_switch": "4", "md_every": "3"}
VARIANT = {"optimism": "0", "rare_switching": "false", "offline_critic_init": "false", "utd": "2"}


def _run(**over):
    settings = dict(agent="hybrid_ac", dataset="pendulum", env="InvertedPendulum-v5", seeds=2, seed=5, steps=6,
                    online_steps=24, eval_every=6, eval_episodes=2, log_every=1, checkpoint_every=1000)
    agent_config = {**SMALL, **over.pop("agent_config", {})}
    return RunConfig(**{**settings, **over}, agent_config=agent_config)


def _lines(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_fork_equals_the_variant_trained_from_scratch(pendulum_dataset, tmp_path):
    scratch = Trainer(_run(agent_config=VARIANT), tmp_path / "scratch", progress=False, dataset=pendulum_dataset)
    scratch.train()
    Trainer(_run(), tmp_path / "source", progress=False, dataset=pendulum_dataset).train()
    assert (tmp_path / "source" / OFFLINE_STATE).is_file()
    fork = Trainer(_run(agent_config=VARIANT, fork_from=str(tmp_path / "source")), tmp_path / "fork", progress=False,
                   dataset=pendulum_dataset)
    assert fork.fork_source == tmp_path / "source" and fork.resumed_from == 6
    fork.train()
    assert _lines(tmp_path / "fork") == _lines(tmp_path / "scratch")           # offline lines, evaluations, online
    assert [r["phase"] for r in _lines(tmp_path / "fork")].count("offline") >= 6
    a, b = (json.loads((tmp_path / d / "final.json").read_text()) for d in ("scratch", "fork"))
    assert a["final"] == b["final"] and a["offline_final"] == b["offline_final"]
    nets_a, nets_b = scratch.agent.state_dict()["nets"], fork.agent.state_dict()["nets"]
    for k in nets_a:
        assert torch.equal(nets_a[k], nets_b[k]), k
    # the source's online phase differs (optimism, switching): the fork did not just replay the source
    assert _lines(tmp_path / "source")[-1] != _lines(tmp_path / "fork")[-1]
    # a killed fork resumes from its own checkpoint, not from the source again
    again = Trainer(_run(agent_config=VARIANT, fork_from=str(tmp_path / "source")), tmp_path / "fork-2",
                    progress=False, dataset=pendulum_dataset)
    assert again.train(until=6 + 10) is None
    resumed = Trainer(_run(agent_config=VARIANT, fork_from=str(tmp_path / "source")), tmp_path / "fork-2",
                      resume=True, progress=False, dataset=pendulum_dataset)
    assert resumed.fork_source is None and resumed.resumed_from == 16
    resumed.train()
    assert _lines(tmp_path / "fork-2") == _lines(tmp_path / "scratch")


def test_a_fork_refuses_what_would_change_the_offline_phase_before_writing(pendulum_dataset, tmp_path):
    Trainer(_run(), tmp_path / "source", progress=False, dataset=pendulum_dataset).train()
    unfinished = Trainer(_run(), tmp_path / "unfinished", progress=False, dataset=pendulum_dataset)
    assert unfinished.train(until=3) is None                         # killed in its offline phase
    src = str(tmp_path / "source")
    for over, message in (
            ({"agent_config": {"bc_alpha": "1.0"}}, "the agent settings bc_alpha differ ([2.5] vs [1.0]) and act in the "
                                                    "offline phase; hybrid_ac may fork on its online settings only"),
            ({"seed": 6}, "run settings differ from this run's in seed ([5] vs [6])"),
            ({"eval_episodes": 3}, "differ from this run's in eval_episodes"),
            ({"online_steps": 0}, "needs steps > 0 and online_steps > 0"),
            ({"fork_from": str(tmp_path / "unfinished")}, "holds no offline.pt"),
            ({"fork_from": str(tmp_path / "nowhere")}, "not a run directory")):
        run = _run(**{"fork_from": src, **over})
        with pytest.raises(OffrlError, match=f"fork_from .*{re.escape(message)}"):
            Trainer(run, tmp_path / "fork", progress=False, dataset=pendulum_dataset)
        assert not (tmp_path / "fork").exists()
    # `offrl train --fork-from` runs the same checks
    p = run_cli("train", "--agent", "hybrid_ac", "--dataset", "offrl/invertedpendulum/scripted-mixed-small-v0",
                "--steps", "6", "--online-steps", "24", "--fork-from", src, "--out", tmp_path / "cli")
    assert p.returncode == 2 and "its run settings differ from this run's in dataset" in p.stderr, p.stderr
    assert not (tmp_path / "cli").exists()


FORK_SUITE = """name: forks
agents:
  - {name: hybrid_ac, set: {hidden: [16, 16], batch_size: 8}}
  - {name: hybrid_ac, label: no-optimism, set: {hidden: [16, 16], batch_size: 8, optimism: 0}, fork: hybrid_ac}
datasets: [offrl/invertedpendulum/scripted-mixed-small-v0]
seeds: 2
steps: 10
online_steps: 12
eval_every: 6
eval_episodes: 2
threads: 1
"""


@pytest.mark.parametrize("edit,message", [
    (("fork: hybrid_ac}", "fork: hybrid}"), "forks.yaml:4: fork: 'hybrid' is not an agent entry listed above"),
    (("optimism: 0}", "optimism: 0, bc_alpha: 1.0}"), "forks.yaml:4: no-optimism forks hybrid_ac's offline phase but "
                                                      "sets bc_alpha, which act offline"),
    (("optimism: 0}, fork", "optimism: 0}, run: {steps: 5}, fork"), "forks.yaml:4: fork: 'hybrid_ac' must be the same "
                                                                     "agent with the same run: settings"),
    (("{name: hybrid_ac, label: no-optimism, set: {hidden: [16, 16], batch_size: 8, optimism: 0}",
      "{name: td3, label: no-optimism, set: {hidden: [16, 16], batch_size: 8}"),
     "forks.yaml:4: fork: 'hybrid_ac' must be the same agent"),
])
def test_bad_forks_in_a_suite_fail_naming_the_line(tmp_path, edit, message):
    (tmp_path / "forks.yaml").write_text(FORK_SUITE.replace(*edit))
    with pytest.raises(SuiteError, match=re.escape(message)):
        load_suite(str(tmp_path / "forks.yaml"))


def test_a_suite_runs_a_fork_after_its_source_and_refuses_a_fork_without_one(tmp_path):
    (tmp_path / "forks.yaml").write_text(FORK_SUITE)
    suite = load_suite(str(tmp_path / "forks.yaml"))
    with pytest.raises(OffrlError, match="run both: --agents hybrid_ac,no-optimism"):
        run_suite(suite.select(agents=["no-optimism"]), tmp_path / "runs", progress=False, log=lambda line: None)
    assert not (tmp_path / "runs").exists()
    source, fork = run_suite(suite, tmp_path / "runs", progress=False, log=lambda line: None)
    assert json.loads((fork / "config.json").read_text())["run"]["fork_from"] == str(source)
    offline = lambda d: [r for r in _lines(d) if r["phase"] == "offline"]
    assert offline(fork) == offline(source) and len(offline(fork)) >= 10
    assert (fork / "final.json").is_file() and (source / OFFLINE_STATE).is_file()
    # a pool of worker processes (the default launcher) holds the fork back the same way: the same numbers
    pooled = run_suite(suite, tmp_path / "pool", workers=2, progress=False, log=lambda line: None)
    for a, b in zip((source, fork), pooled):
        assert json.loads((a / "final.json").read_text())["final"] == json.loads((b / "final.json").read_text())["final"]


def test_dispatch_starts_each_fork_when_its_source_is_done():
    """The scheduling every launcher shares: tasks without a source start at once; a fork waits for its source."""
    started, payload = [], [({}, "a"), ({}, "a-fork"), ({}, "b"), ({}, "b-fork-1"), ({}, "b-fork-2")]
    waits = {"a-fork": "a", "b-fork-1": "b", "b-fork-2": "b"}

    def submit(run, d):
        started.append(d)
        return d

    def wait_one(pending):                     # tasks finish in reverse order of starting
        return [pending[-1]], pending[:-1]

    finished = []
    _dispatch(payload, waits, submit, wait_one, finished.append)
    assert started == ["a", "b", "b-fork-1", "b-fork-2", "a-fork"]
    assert sorted(finished) == sorted(d for _, d in payload)

"""The core's extension points: declared per-row columns, further data sources, the phase hook — used
by a plug-in (tests/plugin_extension.py) that touches nothing under offrl/."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import PLUGIN_EXT
from offrl import OffrlError
from offrl.agent import load_plugin
from offrl.buffer import Buffer, Column, Mixing, NStep
from offrl.data.dataset import Dataset, Episode
from offrl.trainer import RunConfig, Trainer

load_plugin(PLUGIN_EXT)
from offrl_plugin_plugin_extension import STEPS_LEFT  # noqa: E402  (the module load_plugin created)

SMALL = {"hidden": "32,32", "batch_size": "16"}


def _episodes(rng, lengths):
    out = []
    for i, T in enumerate(lengths):
        end = np.zeros(T, bool)
        end[-1] = True
        out.append(Episode(rng.normal(size=(T + 1, 3)).astype(np.float32), rng.uniform(-1, 1, (T, 1)).astype(np.float32),
                           rng.normal(size=T).astype(np.float32), end & (i % 2 == 0), end & (i % 2 == 1)))
    return out


def test_declared_columns_offline_match_a_per_episode_loop():
    rng = np.random.default_rng(0)
    episodes = _episodes(rng, [5, 1, 7, 3])
    data = Dataset.from_episodes(episodes)
    gamma = 0.9
    buf = Buffer(data, 1, columns=("return_to_go", "elapsed", "past_return", "episode", STEPS_LEFT), gamma=gamma)
    assert buf.width == 2 * 3 + 1 + 2 + 5
    rows = buf.as_batch(buf.offline[None])
    i = 0
    for e, ep in enumerate(episodes):
        r = ep.rewards.astype(np.float64)
        for t in range(len(r)):
            assert rows.return_to_go[0, i].item() == pytest.approx(sum(gamma ** (k - t) * r[k] for k in range(t, len(r))), abs=1e-5)
            assert rows.past_return[0, i].item() == pytest.approx(sum(gamma ** k * r[k] for k in range(t)), abs=1e-5)
            assert (rows.elapsed[0, i].item(), rows.episode[0, i].item(), rows.steps_left[0, i].item()) == (t, e, len(r) - t - 1)
            i += 1
    # an agent that declares nothing gets the five base fields only
    assert Buffer(data, 1).sample(4)._fields == ("obs", "action", "reward", "next_obs", "not_done")
    with pytest.raises(OffrlError, match="did you mean 'return_to_go'"):
        Buffer(data, 1, columns=("return_to_goo",))
    with pytest.raises(OffrlError, match="shadows"):
        Buffer(data, 1, columns=(Column("reward", lambda r: r.reward),))
    with pytest.raises(OffrlError, match="n_step must be"):
        Buffer(data, 1, columns=(NStep(0),))


def test_online_rows_hold_pending_values_until_their_episode_ends():
    """Two seeds whose episodes end at different steps; the FIFO wraps during seed 0's second episode."""
    gamma = 0.5
    buf = Buffer(None, 2, online_capacity=6, obs_dim=1, act_dim=1, columns=("return_to_go", "elapsed", "episode", STEPS_LEFT),
                 gamma=gamma)
    lengths = {0: [3, 5], 1: [8]}
    t_in = {0: 0, 1: 0}
    ep_of = {0: 0, 1: 0}
    for step in range(8):
        reward = torch.tensor([float(step + 1), 10.0 * (step + 1)])
        buf.add(torch.zeros(2, 1), torch.zeros(2, 1), reward, torch.zeros(2, 1), torch.zeros(2))
        finished = []
        for s in (0, 1):
            t_in[s] += 1
            if t_in[s] == lengths[s][ep_of[s]]:
                finished.append(s)
                t_in[s], ep_of[s] = 0, ep_of[s] + 1
        if step == 1:                                   # nothing has ended yet: every column is pending
            b = buf.as_batch(buf.online[:, :2])
            assert torch.isinf(b.return_to_go).all() and (b.return_to_go < 0).all()
            assert (b.elapsed == 0).all() and (b.episode == -1).all() and (b.steps_left == -1).all()
        buf.end_episodes(finished)
        if step == 2:                                   # seed 0's first episode (rewards 1, 2, 3) is filled in
            b = buf.as_batch(buf.online[0, :3])
            assert b.return_to_go.tolist() == [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0]
            assert b.elapsed.tolist() == [0, 1, 2] and b.steps_left.tolist() == [2, 1, 0] and (b.episode == 0).all()
            assert (buf.as_batch(buf.online[1, :3]).episode == -1).all()      # seed 1 still running
    # seed 0's second episode (rewards 4…8) wrapped the 6-row FIFO: rows 3, 4, 5, 0, 1 hold it
    b = buf.as_batch(buf.online[0, [3, 4, 5, 0, 1]])
    r = [4.0, 5.0, 6.0, 7.0, 8.0]
    assert b.return_to_go.tolist() == pytest.approx([sum(0.5 ** (k - t) * r[k] for k in range(t, 5)) for t in range(5)])
    assert b.elapsed.tolist() == [0, 1, 2, 3, 4] and (b.episode == 1).all()
    # seed 1's 8-step episode lost its first 2 rows to the FIFO: elapsed still counts from the true start
    b1 = buf.as_batch(buf.online[1, [2, 3, 4, 5, 0, 1]])
    assert b1.elapsed.tolist() == [2, 3, 4, 5, 6, 7] and b1.steps_left.tolist() == [5, 4, 3, 2, 1, 0]
    assert b1.return_to_go[-1].item() == 80.0


def test_vector_column_next_action_offline_and_online():
    """`next_action` is [S, B, A]: a_{t+1} within an episode, an episode's last row its own action; online
    rows hold 0 until their episode ends, next to a scalar column that keeps its own slot."""
    rng = np.random.default_rng(1)
    episodes = _episodes(rng, [4, 1, 3])
    data = Dataset.from_episodes(episodes)
    buf = Buffer(data, 1, online_capacity=5, columns=("next_action", "elapsed"), gamma=0.9)
    A = data.act_dim
    assert buf.width == 2 * data.obs_dim + A + 2 + A + 1
    rows = buf.as_batch(buf.offline[None])
    expected = np.concatenate([np.concatenate([ep.actions[1:], ep.actions[-1:]]) for ep in episodes])
    np.testing.assert_array_equal(rows.next_action[0].numpy(), expected.astype(np.float32))
    assert rows.next_action.shape == (1, len(data), A) and rows.elapsed.tolist() == [[0, 1, 2, 3, 0, 0, 1, 2]]
    assert buf.sample(6).next_action.shape == (1, 6, A)
    actions = torch.as_tensor(rng.uniform(-1, 1, (3, 1, A)), dtype=torch.float32)
    for t in range(3):
        buf.add(torch.zeros(1, data.obs_dim), actions[t], torch.zeros(1), torch.zeros(1, data.obs_dim), torch.zeros(1))
    assert (buf.as_batch(buf.online[:, :3]).next_action == 0).all()               # pending
    buf.end_episodes([0])
    b = buf.as_batch(buf.online[:, :3])
    torch.testing.assert_close(b.next_action[0], torch.cat([actions[1:, 0], actions[2:, 0]]))
    assert b.elapsed.tolist() == [[0, 1, 2]]


def test_further_sources_take_their_share_of_every_batch(pendulum_dataset):
    from offrl.buffer import SyntheticSource

    buf = Buffer(pendulum_dataset, 2, online_capacity=10, mixing=Mixing("fixed", 0.5), seed=0)
    for _ in range(10):
        buf.add(torch.zeros(2, 4), torch.zeros(2, 1), torch.full((2,), -7.0), torch.zeros(2, 4), torch.zeros(2))

    def generate(source, agent, n):
        z = torch.zeros(2, n)
        return {"obs": z[..., None].expand(2, n, 4), "action": z[..., None], "reward": z + 99.0,
                "next_obs": z[..., None].expand(2, n, 4), "not_done": z + 1}
    buf.add_source("synthetic", SyntheticSource(buf, generate, share=0.25, every=5, capacity=20))
    b = buf.sample(40)                                 # not refilled yet: the source is empty, no share
    assert not (b.reward == 99.0).any()
    buf.refresh(0, None)
    b = buf.sample(40)
    assert ((b.reward == 99.0).sum(1) == 10).all()     # 25 % synthetic, the rest split 15 offline / 15 online
    assert ((b.reward == -7.0).sum(1) == 15).all()
    buf.refresh(1, None)                               # not due: every 5 steps
    assert buf.sources["synthetic"].refills == 1
    with pytest.raises(OffrlError, match="shares add up"):
        buf.add_source("more", SyntheticSource(buf, generate, share=0.8, every=1, capacity=4))
    with pytest.raises(OffrlError, match="exists already"):
        buf.add_source("synthetic", SyntheticSource(buf, generate, share=0.1, every=1, capacity=4))


def test_phase_hook_runs_once_per_phase_and_survives_resume(pendulum_dataset, tmp_path):
    def run_cfg():
        return RunConfig(agent="plugin_ext", dataset="pendulum", env="InvertedPendulum-v5", seeds=2, seed=1, steps=6,
                         online_steps=12, eval_episodes=0, log_every=1, checkpoint_every=1000,
                         plugins=[str(PLUGIN_EXT)], agent_config=dict(SMALL))
    first = Trainer(run_cfg(), tmp_path / "r", progress=False, dataset=pendulum_dataset)
    assert first.train(until=6) is None                # paused exactly at the switch: online not started
    assert first.agent.phase_calls.tolist() == [1, 1] and first.agent.bc_weight.tolist() == [1.0, 1.0]
    second = Trainer(run_cfg(), tmp_path / "r", resume=True, progress=False, dataset=pendulum_dataset)
    assert second.agent.phase == "offline"
    second.train(until=11)
    assert second.agent.phase == "online" and second.agent.phase_calls.tolist() == [2, 2]
    third = Trainer(run_cfg(), tmp_path / "r", resume=True, progress=False, dataset=pendulum_dataset)
    third.train()
    agent = third.agent
    assert agent.phase_calls.tolist() == [2, 2] and agent.bc_weight.tolist() == [0.5, 0.5]   # not called again on resume
    # the critic's Adam was reset at the switch: its step count is the online updates only
    steps = {float(st["step"]) for st in agent.optimizers["critic"].state.values()}
    actor_steps = {float(st["step"]) for st in agent.optimizers["actor"].state.values()}
    assert steps == {12.0} and actor_steps == {18.0}
    assert third.buffer.sources["synthetic"].refills == 6                       # every 3 of 18 gradient steps


def _train_cmd(out, extra=()):
    return [sys.executable, "-m", "offrl.cli", "train", "--agent", "plugin_ext", "--plugin", str(PLUGIN_EXT),
            "--dataset", "offrl/invertedpendulum/scripted-mixed-small-v0", "--seeds", "2", "--steps", "150",
            "--online-steps", "150", "--eval-every", "100", "--eval-episodes", "1", "--log-every", "10",
            "--checkpoint-every", "7", "--threads", "1", "--no-progress", "--set", "refill_every=5",
            "--set", "hidden=16,16", "--set", "batch_size=32", "--out", str(out), *extra]


def test_synthetic_source_run_killed_at_a_random_moment_resumes_exactly(tmp_path):
    """A run whose buffer has a source refilled every 5 steps, SIGKILLed at a random moment (twice) and
    resumed, writes the same metrics, evaluations and weights as the uninterrupted run."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    started = time.time()
    subprocess.run(_train_cmd(tmp_path / "straight"), check=True, env=env, capture_output=True, timeout=300)
    duration = time.time() - started
    rng = random.Random()
    out = tmp_path / "killed"
    moments = []
    for _ in range(2):
        proc = subprocess.Popen(_train_cmd(out, ["--resume"]), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        moments.append(rng.uniform(0.4, 0.9) * duration)   # somewhere in training, past the imports
        time.sleep(moments[-1])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run(_train_cmd(out, ["--resume"]), check=True, env=env, capture_output=True, timeout=300)
    a = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    b = (out / "metrics.jsonl").read_text().splitlines()
    assert a == b, f"killed at {moments} s of a {duration:.1f} s run"
    assert json.loads((tmp_path / "straight" / "final.json").read_text())["final"] == \
        json.loads((out / "final.json").read_text())["final"]
    sa = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    sb = torch.load(out / "checkpoint.pt", weights_only=True)
    for k, v in sa["agent"]["nets"].items():
        assert torch.equal(v, sb["agent"]["nets"][k]), k
    src_a, src_b = sa["buffer"]["sources"]["synthetic"], sb["buffer"]["sources"]["synthetic"]
    assert src_a["refills"] == src_b["refills"] == 60 and torch.equal(src_a["data"], src_b["data"])

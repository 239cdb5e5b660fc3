"""`offrl datasets make` and `convert`: resumable after SIGKILL, atomic, reproducible, loadable."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import minari
import numpy as np
import pytest
import torch

from offrl.data import load_dataset
from offrl.data.embedded.make_locomotion import episode_subset
from offrl.zoo import LEVELS, make_datasets, zoo_report


def _make_cmd(root, out, *extra):
    return [sys.executable, "-m", "offrl.cli", "datasets", "make", "InvertedPendulum-v5", "--budget", "test",
            "--root", str(root), "--out", str(out), "--no-progress", *extra]


def test_make_survives_sigkill_and_leaves_no_partial_dataset(tmp_path):
    root, out = tmp_path / "root", tmp_path / "work"
    proc = subprocess.Popen(_make_cmd(root, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt = out / "behaviour" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint appeared before the kill"
    os.kill(proc.pid, signal.SIGKILL)                     # mid-training: the run holds 3 checkpoints in all
    proc.wait()
    assert not (out / "behaviour" / "final.json").exists()
    assert not list(root.glob("offrl/**/metadata.json"))   # nothing visible under a final id
    done = subprocess.run(_make_cmd(root, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for level in LEVELS:
        folder = root / "offrl" / "invertedpendulum" / f"{level}-v0"
        assert (folder / "data" / "metadata.json").exists(), level
    assert not list(root.glob(".staging-*"))
    # the resumed behaviour run recorded every evaluation once
    evals = [json.loads(x) for x in (out / "behaviour" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "eval"]
    assert [e["step"] for e in evals] == [200, 400, 600]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    out = tmp_path_factory.mktemp("work")
    folders = make_datasets("InvertedPendulum-v5", None, "test", out, root, seed=0, progress=False, log=lambda s: None)
    return root, out, folders


def test_risky_task_trains_sac_on_its_mean_reward_twin_and_writes_risky_data(tmp_path):
    """SAC learns on the mean-reward twin (no −60 draws in its targets); the policies and the levels'
    rollouts belong to the risky env itself."""
    folders = make_datasets("offrl/RiskyInvertedPendulum-v5", ["expert"], "test", tmp_path / "work", tmp_path / "root",
                            progress=False, log=lambda s: None)
    cfg = json.loads((tmp_path / "work" / "behaviour" / "config.json").read_text())
    assert cfg["run"]["env"] == "offrl/RiskyInvertedPendulumMeanReward-v5" and cfg["run"]["domain"] == "classic"
    index = json.loads((tmp_path / "work" / "policies" / "index.json").read_text())
    assert index["env_id"] == "offrl/RiskyInvertedPendulum-v5"
    ds = load_dataset(str(folders["expert"]))
    assert ds.env_id == "offrl/RiskyInvertedPendulum-v5"


def test_made_datasets_load_with_plain_minari_and_offrl(made, monkeypatch):
    root, out, folders = made
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    for level in LEVELS:
        ds_id = f"offrl/invertedpendulum/{level}-v0"
        plain = minari.load_dataset(ds_id)
        meta = plain.storage.metadata
        assert meta["ref_min_score"] < meta["ref_max_score"]
        assert meta["offrl_level"] == level and len(meta["offrl_content_hash"]) == 64
        assert "offrl_versions" in meta and meta["offrl_command"]
        ours = load_dataset(ds_id)
        assert ours.content_hash() == meta["offrl_content_hash"]
        assert len(ours) == (3000 if level == "medium-expert" else 1500)
        assert ours.env_id == "InvertedPendulum-v5"
    medium_expert = load_dataset("offrl/invertedpendulum/medium-expert-v0")
    assert medium_expert.num_episodes == (load_dataset("offrl/invertedpendulum/medium-v0").num_episodes
                                          + load_dataset("offrl/invertedpendulum/expert-v0").num_episodes)
    index = json.loads((out / "policies" / "index.json").read_text())
    assert index["random-init"] == "step_000000000" and index["expert"] == "step_000000600"
    p = subprocess.run([sys.executable, "-m", "offrl.cli", "train", "--agent", "bc", "--dataset",
                        "offrl/invertedpendulum/medium-v0", "--steps", "20", "--eval-episodes", "1",
                        "--out", str(out / "bc-run"), "--no-progress"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "MINARI_DATASETS_PATH": str(root)})
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "bc-run" / "final.json").read_text())["final"]["normalized"] is not None


def test_regenerating_from_policies_gives_the_same_content_hash(made, tmp_path):
    root, out, _ = made
    again = tmp_path / "again"
    make_datasets("InvertedPendulum-v5", ["medium-replay", "expert"], "test", tmp_path / "w", again, seed=0,
                  from_policies=out / "policies", progress=False, log=lambda s: None)
    for level in ("medium-replay", "expert"):
        a = json.loads((root / f"offrl/invertedpendulum/{level}-v0/data/metadata.json").read_text())
        b = json.loads((again / f"offrl/invertedpendulum/{level}-v0/data/metadata.json").read_text())
        assert a["offrl_content_hash"] == b["offrl_content_hash"], level
        assert a["ref_max_score"] == b["ref_max_score"]


def test_convert_a_d4rl_file(tmp_path):
    path = tmp_path / "hopper-medium-replay-v2.hdf5"
    rng = np.random.default_rng(0)
    N = 30
    with h5py.File(path, "w") as f:
        f["observations"] = rng.normal(size=(N, 11)).astype(np.float32)
        f["next_observations"] = rng.normal(size=(N, 11)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, (N, 3)).astype(np.float32)
        f["rewards"] = rng.normal(size=N).astype(np.float32)
        f["terminals"] = np.eye(1, N, 9, dtype=bool)[0]
        f["timeouts"] = np.eye(1, N, 19, dtype=bool)[0]
    root = tmp_path / "root"
    p = subprocess.run([sys.executable, "-m", "offrl.cli", "datasets", "convert", str(path), "--root", str(root)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    converted = load_dataset(str(root / "d4rl" / "hopper" / "medium-replay-v2"))
    original = load_dataset(str(path))
    assert converted.content_hash() == original.content_hash()           # aligned transitions, same order
    assert (converted.ref_min_score, converted.ref_max_score) == (-20.272305, 3234.3)
    assert converted.env_id == "Hopper-v5" and converted.num_episodes == 3


def test_make_rejects_bad_requests(tmp_path):
    from offrl import OffrlError
    with pytest.raises(OffrlError, match="no generation recipe"):
        make_datasets("Humanoid-v5", budget="test", out=tmp_path, root=tmp_path)
    with pytest.raises(OffrlError, match="did you mean 'quick'"):
        make_datasets("Hopper-v5", budget="quik", out=tmp_path, root=tmp_path)
    with pytest.raises(OffrlError, match="did you mean 'medium'"):
        make_datasets("Hopper-v5", ["meduim"], budget="test", out=tmp_path, root=tmp_path)


def test_policies_index_and_zoo_report(made):
    root, out, _ = made
    index = json.loads((out / "policies" / "index.json").read_text())
    assert index["env_id"] == "InvertedPendulum-v5" and index["train_steps"] == 600
    assert index["train_wall_seconds"] > 0
    stored = torch.load(out / "policies" / f"{index['expert']}.pt", weights_only=True)["actor"]
    assert all(v.dtype == torch.float16 for v in stored.values())        # half the bytes to commit
    text = zoo_report([out / "policies"], root)
    assert "## InvertedPendulum-v5" in text and "600 env steps" in text
    for level in LEVELS:
        assert f"| {level} | {3000 if level == 'medium-expert' else 1500:,} |" in text
    assert "Ladder" in text and ("**holds**" in text or "**fails**" in text)


def test_embedded_subset_takes_whole_episodes_to_exactly_n(made):
    root, _, _ = made
    eps = load_dataset(str(root / "offrl/invertedpendulum/medium-replay-v0")).to_episodes()
    sub = episode_subset(eps, 1000, seed=0)
    assert sum(len(e.actions) for e in sub) == 1000
    assert [len(e.actions) for e in sub] == [len(e.actions) for e in episode_subset(eps, 1000, seed=0)]
    whole = {e.observations.tobytes() for e in eps}
    assert all(e.observations.tobytes() in whole for e in sub[:-1])       # all but the last are untouched
    last = sub[-1]
    assert last.terminations[-1] or last.truncations[-1]
    with pytest.raises(ValueError, match="fewer than"):
        episode_subset(eps, 10**6)


def test_shipped_policies_name_what_exists(tmp_path):
    from offrl import OffrlError
    with pytest.raises(OffrlError, match="no policies for reacher at budget 'standard'"):
        make_datasets("Reacher-v5", budget="standard", out=tmp_path, root=tmp_path, from_policies="shipped")


def test_compacted_minari_file_loads_the_same(made, tmp_path, monkeypatch):
    import shutil
    from offrl.data.embedded.make_locomotion import compact_hdf5
    root, _, _ = made
    copy = tmp_path / "offrl/invertedpendulum/medium-replay-v0"
    shutil.copytree(root / "offrl/invertedpendulum/medium-replay-v0", copy)
    compact_hdf5(copy / "data" / "main_data.hdf5")
    with h5py.File(copy / "data" / "main_data.hdf5") as f:
        assert f["episode_0/observations"].chunks is None
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    plain = minari.load_dataset("offrl/invertedpendulum/medium-replay-v0")
    assert plain.total_steps == 1500
    assert load_dataset(str(copy)).content_hash() == load_dataset(str(root / "offrl/invertedpendulum/medium-replay-v0")).content_hash()


@pytest.mark.parametrize("ds_id,env_id,episodes", [("offrl/hopper/medium-replay-small-v0", "Hopper-v5", 612),
                                                   ("offrl/halfcheetah/medium-small-v0", "HalfCheetah-v5", 50)])
def test_embedded_locomotion_subsets_resolve_by_id(ds_id, env_id, episodes, minari_root):
    """Shipped with the package: found by id with an empty MINARI_DATASETS_PATH, intact, with references."""
    from offrl.data import EMBEDDED_ROOT
    ds = load_dataset(ds_id)
    meta = json.loads((EMBEDDED_ROOT / ds_id / "data" / "metadata.json").read_text())
    assert (len(ds), ds.num_episodes, ds.env_id) == (50_000, episodes, env_id)
    assert ds.content_hash() == meta["offrl_content_hash"]
    assert ds.ref_min_score < ds.ref_max_score and meta["offrl_source"].startswith(ds_id.split("-small")[0])


def test_embedded_two_strategy_risky_data_regenerates_and_holds_both_strategies(minari_root):
    """The risky pendulum's shipped data: the same transitions as its generator, and both competent
    strategies (episodes balanced to the limit wholly outside and mostly inside the risk region)."""
    from offrl.data.dataset import Dataset
    from offrl.data.scripted import two_strategy_episodes

    ds = load_dataset("offrl/riskyinvertedpendulum/scripted-two-strategies-v0")
    fresh = Dataset.from_episodes(two_strategy_episodes(240, seed=0))
    for name in ("observations", "actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(ds, name), getattr(fresh, name))
    assert ds.env_id == "offrl/RiskyInvertedPendulum-v5" and ds.ref_max_score == 200.0
    inside = np.bincount(ds.episode, weights=ds.next_observations[:, 0] > 0.1) / np.bincount(ds.episode)
    full = np.bincount(ds.episode) == 200
    assert (full & (inside == 0)).sum() >= 30 and (full & (inside > 0.7)).sum() >= 30


def test_zoo_rollouts_do_not_depend_on_how_the_cpu_sums():
    """The zoo's behaviour actions are the same however a CPU orders its sums: an actor with its hidden
    units permuted (the same function; every 256-term sum of the second and last layers in another order)
    gives float32 actions that differ in their last bits, yet the same rounded float64 actions, and the
    same Hopper episodes, bit for bit."""
    from offrl.zoo import ACTION_GRID, actor_policy, load_policy, rollout, shipped_policies
    folder = shipped_policies("hopper", "standard", 0)
    expert = folder / f"{json.loads((folder / 'index.json').read_text())['expert']}.pt"
    (actor, _), (permuted, _) = load_policy(expert), load_policy(expert)
    gen = torch.Generator().manual_seed(0)
    p1, p2 = torch.randperm(256, generator=gen), torch.randperm(256, generator=gen)
    with torch.no_grad():
        first, second, last = permuted.net.layers
        first.weight.copy_(first.weight[..., p1]); first.bias.copy_(first.bias[..., p1])
        second.weight.copy_(second.weight[:, p1][..., p2]); second.bias.copy_(second.bias[..., p2])
        last.weight.copy_(last.weight[:, p2])
        obs = torch.randn(1, 4096, 11, generator=gen) * 2
        a32, b32 = actor(obs, True)[0][0].numpy(), permuted(obs, True)[0][0].numpy()
    assert (a32 != b32).any() and np.abs(a32 - b32).max() < 1e-3     # float32: the order shows in the low bits
    for deterministic in (True, False):
        a = actor_policy(actor, deterministic, seed=7)(obs[0].numpy())
        b = actor_policy(permuted, deterministic, seed=7)(obs[0].numpy())
        np.testing.assert_array_equal(a, b)
        assert np.all(np.abs(a) <= 1) and np.all(np.round(a / ACTION_GRID) * ACTION_GRID == a)
    assert np.abs(actor_policy(actor, True)(obs[0].numpy()) - a32).max() <= ACTION_GRID / 2 + 1e-4
    eps_a = rollout("Hopper-v5", actor_policy(actor, False, 3), 1500, seed=3)
    eps_b = rollout("Hopper-v5", actor_policy(permuted, False, 3), 1500, seed=3)
    assert [e.observations.tobytes() + e.actions.tobytes() for e in eps_a] == \
           [e.observations.tobytes() + e.actions.tobytes() for e in eps_b]

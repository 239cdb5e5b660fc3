"""Faults a user meets: killed sweeps, resumed TensorBoard curves, bad values, foreign checkpoints, full
disks, unwritable folders; each one ends in one clear line and loses nothing already finished."""
from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import EMBEDDED_MIXED as DATA, bench_tiny, run_cli
from offrl import OffrlError
from offrl.data import Dataset
from offrl.data.scripted import pendulum_episodes
from offrl.trainer import RunConfig, Trainer
from test_bench import _outputs, _suite_dir


def _run(**kw) -> RunConfig:
    base = dict(agent="td3_bc", dataset="pendulum", env="InvertedPendulum-v5", seeds=2, steps=60, eval_every=20,
                eval_episodes=2, log_every=10, checkpoint_every=20, agent_config={"hidden": "16,16", "batch_size": "32"})
    return RunConfig(**{**base, **kw})


def _children(pid: int) -> list[int]:
    out = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat_file.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_sweep_leaves_no_worker_and_reruns_to_the_same_scores(tmp_path, tiny_reference):
    """SIGKILL a two-worker sweep at a random moment after its first checkpoint: its workers die with it
    (no orphan keeps training), and the same command then finishes every run to the scores of an
    uninterrupted one-worker sweep."""
    killed = _suite_dir(tmp_path, "killed")
    proc = subprocess.Popen([sys.executable, "-m", "offrl.cli", "bench", "tiny.yaml", "--no-progress", "--workers", "2"],
                            cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list((killed / "runs").glob("**/checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, 2.0))
    workers = _children(proc.pid)
    assert workers, "the sweep started no worker processes"
    proc.send_signal(signal.SIGKILL)                      # no chance to stop its workers itself
    proc.wait()
    deadline = time.time() + 5
    while any(map(_alive, workers)) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, workers)), [p for p in workers if _alive(p)]
    p = bench_tiny(killed, "--workers", "2", timeout=600)
    assert p.returncode == 0, p.stderr
    expected = {f"{lb}/{ds}" for lb in ("bc", "td3_bc-small") for ds in
                ("offrl_invertedpendulum_scripted-mixed-small-v0", "offrl_invertedpendulum_scripted-noisy-small-v0")}
    runs = {str(f.parent.relative_to(killed / "runs" / "tiny")) for f in (killed / "runs" / "tiny").glob("**/final.json")}
    assert runs == expected
    assert _outputs(killed)[1] == tiny_reference                 # scores.csv


def test_a_run_directory_is_trained_by_one_process_at_a_time(pendulum_dataset, tmp_path):
    out = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from offrl.utils import DirectoryLock; "
                               "DirectoryLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
                               str(out)], stdout=subprocess.PIPE, text=True)
    out.mkdir()
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OffrlError, match=f"being trained by process {holder.pid}"):
            Trainer(_run(), out, progress=False, dataset=pendulum_dataset)
    finally:
        holder.kill()
        holder.wait()
    Trainer(_run(), out, progress=False, dataset=pendulum_dataset).train()    # the lock died with its holder
    with pytest.raises(OffrlError, match="being trained by process"):     # and the same process twice
        from offrl.utils import DirectoryLock
        lock = DirectoryLock(out)
        lock.acquire()
        try:
            Trainer(_run(), out, resume=True, progress=False, dataset=pendulum_dataset)
        finally:
            lock.release()


def _tb_points(run_dir: Path) -> list[tuple[str, int]]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    points = []
    for f in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                points.append((v.tag, event.step))
    return points


TRAIN = ["--agent", "td3_bc", "--dataset", DATA, "--seeds", "2", "--steps", "1500", "--eval-every", "500",
         "--eval-episodes", "2", "--log-every", "50", "--threads", "1", "--no-progress", "--set", "hidden=32,32"]


def _train_until(out: Path, ready, *extra) -> None:
    """Start `offrl train`, SIGKILL it once `ready()` holds (after a random extra moment)."""
    import random

    proc = subprocess.Popen([sys.executable, "-m", "offrl.cli", "train", *TRAIN, "--out", str(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(random.uniform(0, 0.3))
    proc.kill()
    proc.wait()


def test_tensorboard_has_every_point_once_after_kills_and_resumes(tmp_path):
    straight = tmp_path / "straight"
    assert subprocess.run([sys.executable, "-m", "offrl.cli", "train", *TRAIN, "--checkpoint-every", "300",
                           "--out", str(straight)], capture_output=True, timeout=600).returncode == 0
    out = tmp_path / "killed"
    ckpt = out / "checkpoint.pt"
    _train_until(out, ckpt.exists, "--checkpoint-every", "300")                   # killed after a checkpoint
    first = torch.load(ckpt, weights_only=True)["offline_step"]
    _train_until(out, lambda: torch.load(ckpt, weights_only=True)["offline_step"] > first if ckpt.exists() else False,
                 "--checkpoint-every", "300", "--resume")                          # and again, further on
    p = subprocess.run([sys.executable, "-m", "offrl.cli", "train", *TRAIN, "--checkpoint-every", "300", "--out", str(out),
                        "--resume"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    straight_points, points = _tb_points(straight), _tb_points(out)
    assert len(points) == len(set(points)), "duplicated TensorBoard points"
    assert set(points) == set(straight_points) and len(points) > 50


def test_tensorboard_of_a_run_restarted_before_its_first_checkpoint(tmp_path):
    out = tmp_path / "r"
    metrics = out / "metrics.jsonl"
    _train_until(out, lambda: metrics.exists() and metrics.stat().st_size > 0 and not (out / "checkpoint.pt").exists(),
                 "--checkpoint-every", "1000")
    assert not (out / "checkpoint.pt").exists() and _tb_points(out)                 # points, no checkpoint
    p = subprocess.run([sys.executable, "-m", "offrl.cli", "train", *TRAIN, "--checkpoint-every", "1000", "--out",
                        str(out), "--resume"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "no checkpoint yet: starting from step 0" in p.stdout, p.stderr
    points = _tb_points(out)
    assert len(points) == len(set(points)) and ("train/critic_loss/seed0", 50) in points


@pytest.mark.parametrize("args,message", [
    (["--set", "policy_freq=0"], "policy_freq must be ≥ 1, got 0"),
    (["--set", "tau=1.5"], "tau must be in [0, 1], got 1.5"),
    (["--set", "actor_lr=0"], "actor_lr must be > 0, got 0.0"),
    (["--set", "hidden=,"], "hidden must be non-empty"),
    (["--set", "batch_size=0"], "batch_size must be ≥ 1"),
    (["--set", "offline_fraction=1.5"], "offline_fraction must be in [0, 1]"),
    (["--set", "buffer_mixing=half"], "unknown buffer_mixing 'half'; choose one of union, fixed, annealed"),
    (["--eval-episodes", "-1"], "--eval-episodes must be ≥ 0, got -1"),
    (["--log-every", "0"], "--log-every must be ≥ 1, got 0"),
])
def test_out_of_range_values_fail_before_any_run_directory(tmp_path, args, message):
    p = run_cli("train", "--agent", "td3_bc", "--dataset", DATA, "--steps", "10", "--out", tmp_path / "r", *args)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()


def test_checkpoints_that_do_not_fit_get_one_clear_line(pendulum_dataset, tmp_path):
    out = tmp_path / "r"
    Trainer(_run(), out, progress=False, dataset=pendulum_dataset).train(until=20)
    good = (out / "checkpoint.pt").read_bytes()
    torch.save({"model": torch.zeros(3), "epoch": 4}, out / "checkpoint.pt")
    with pytest.raises(OffrlError, match=r"is not an offrl run checkpoint: it holds a dict of model, epoch, without agent"):
        Trainer(_run(), out, resume=True, progress=False, dataset=pendulum_dataset)
    # the same agent's checkpoint of other shapes (copied in: the run's own settings would be refused first)
    (out / "checkpoint.pt").write_bytes(good)
    other = tmp_path / "other"
    Trainer(_run(agent_config={"hidden": "8,8", "batch_size": "32"}), other, progress=False,
            dataset=pendulum_dataset).train(until=20)
    (out / "checkpoint.pt").write_bytes((other / "checkpoint.pt").read_bytes())
    with pytest.raises(OffrlError, match=r"checkpoint.pt: it holds td3_bc weights of other shapes \(.*: \(2, 4, 8\) in "
                                         r"the checkpoint, \(2, 4, 16\) in this run"):
        Trainer(_run(), out, resume=True, progress=False, dataset=pendulum_dataset)


def test_stale_temp_files_of_a_kill_are_removed_on_resume(pendulum_dataset, tmp_path):
    out = tmp_path / "r"
    Trainer(_run(), out, progress=False, dataset=pendulum_dataset).train(until=20)
    stale = out / ".checkpoint.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    Trainer(_run(), out, resume=True, progress=False, dataset=pendulum_dataset).train()
    assert not stale.exists() and (out / "final.json").exists()


def test_outputs_follow_the_umask(pendulum_dataset, tmp_path):
    old = os.umask(0o027)
    try:
        Trainer(_run(steps=20), tmp_path / "r", progress=False, dataset=pendulum_dataset).train()
    finally:
        os.umask(old)
    for name in ("config.json", "final.json", "checkpoint.pt", "metrics.jsonl"):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == 0o640, name


@pytest.mark.parametrize("where,message", [
    (lambda tmp: tmp / "afile" / "run", "is below the file"),
    (lambda tmp: tmp / "afile", "is a file, not a folder"),
    (lambda tmp: Path("/proc/offrl-run"), "cannot write in /proc"),
])
def test_unwritable_out_fails_before_the_dataset_loads(tmp_path, where, message):
    (tmp_path / "afile").write_text("not a folder")
    p = run_cli("train", "--agent", "td3_bc", "--dataset", "no/such/set-v0", "--steps", "10", "--out", where(tmp_path))
    assert p.returncode == 2 and message in p.stderr and "not found" not in p.stderr, p.stderr


FULL_DISK = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
from offrl.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_full_disk_keeps_the_last_good_checkpoint_and_says_so(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: a run checkpointed at step 100 resumes under a file-size
    limit below its checkpoint's size, so the checkpoint at step 200 cannot be written."""
    run = RunConfig(agent="td3_bc", dataset=DATA, seeds=2, steps=300, eval_every=100, eval_episodes=1,
                    checkpoint_every=100, threads=1, agent_config={"hidden": "32,32"})
    out = tmp_path / "r"
    Trainer(run, out, progress=False).train(until=100)
    size = (out / "checkpoint.pt").stat().st_size
    limited = [sys.executable, "-c", FULL_DISK, str(size - 1), "train", "--no-progress"]
    p = subprocess.run([*limited, "--out", str(out), "--resume"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "file too large" in p.stderr and "while writing the checkpoint at step 200" in p.stderr, p.stderr
    assert "the last good checkpoint is step 100" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=True)["offline_step"] == 100
    assert not list(out.glob(".*.tmp"))
    # with no checkpoint yet, the message says so
    p = subprocess.run([*limited, "--config", str(out / "config.json"), "--out", str(tmp_path / "fresh")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "no checkpoint was written yet" in p.stderr, p.stderr


def test_the_non_finite_message_names_a_checkpoint_only_when_there_is_one(pendulum_dataset, tmp_path):
    run = _run(checkpoint_every=1000, eval_every=0, agent_config={"hidden": "16,16", "batch_size": "32",
                                                                  "critic_lr": "1e30", "actor_lr": "1e30"})
    with pytest.raises(OffrlError, match="no checkpoint was written before it"):
        Trainer(run, tmp_path / "r", progress=False, dataset=pendulum_dataset).train()
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_the_non_finite_message_names_the_last_good_checkpoint(tmp_path):
    """Paused with a checkpoint at step 40, resumed on rewards of 1e30 (their squared TD errors overflow).

    A run records its data's sha256 and refuses to resume on other data; a run directory from before runs
    recorded it (no `dataset.content_hash` in config.json) resumes on what it is given, which is how the
    rewards are swapped here."""
    episodes = pendulum_episodes(4, max_steps=200)
    def dataset(scale):
        return Dataset.from_episodes([replace(e, rewards=e.rewards * scale) for e in episodes], where="test",
                                     name="scripted/invertedpendulum/mixed-v0", env_id="InvertedPendulum-v5")
    run, out = _run(steps=100, eval_every=0, checkpoint_every=20), tmp_path / "r"
    assert Trainer(run, out, progress=False, dataset=dataset(1.0)).train(until=40) is None
    with pytest.raises(OffrlError, match="another build of"):
        Trainer(run, out, resume=True, progress=False, dataset=dataset(1e30))
    config = json.loads((out / "config.json").read_text())
    del config["dataset"]["content_hash"]
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(OffrlError, match=r"non-finite at step 41 .*its last good checkpoint is \S*checkpoint.pt "
                                         r"\(step 40\)"):
        Trainer(run, out, resume=True, progress=False, dataset=dataset(1e30)).train()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["offline_step"] == 40

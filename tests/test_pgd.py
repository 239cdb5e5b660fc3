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

"""The typed record of a run's outputs: what the trainer writes (final.json, the evaluation lines of
metrics.jsonl) and what reports read back, one definition for both sides.

JSON keys are the run directory's documented layout (README, "The run directory"): `return` holds
per-seed mean returns, `normalized` the same as normalised scores (null without reference scores).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from offrl import OffrlError

STATISTICS = {"final": "mean return over the eval episodes of each seed at the last evaluation",
              "best": "per seed, the maximum over all evaluations of that seed's mean return",
              "offline_final": "last evaluation of the offline phase (O2O runs)"}


@dataclass
class Scores:
    """Per-seed mean returns [S] and their normalised scores [S] (None without reference scores)."""
    returns: list[float]
    normalized: list[float] | None

    def values(self) -> np.ndarray:
        """Normalised scores [S], or raw returns when the dataset has no reference scores."""
        return np.asarray(self.normalized if self.normalized is not None else self.returns, float)

    def to_json(self) -> dict[str, Any]:
        return {"return": self.returns, "normalized": self.normalized}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Scores":
        return cls(d["return"], d["normalized"])


HIST_BINS = 20


def summarize_distribution(values: np.ndarray) -> dict[str, Any]:
    """A per-seed summary of values [S, K] (e.g. an agent's choice at K probe states): mean, std, min,
    q10, q50, q90, max [S], and a histogram over the common range (edges [HIST_BINS + 1], counts [S][HIST_BINS])."""
    v = np.asarray(values, np.float64)
    lo, hi = float(v.min()), float(v.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, HIST_BINS + 1)
    q = np.quantile(v, [0.1, 0.5, 0.9], axis=1)
    out = {"mean": v.mean(1), "std": v.std(1), "min": v.min(1), "q10": q[0], "q50": q[1], "q90": q[2], "max": v.max(1)}
    return {**{k: x.tolist() for k, x in out.items()}, "hist_edges": edges.tolist(),
            "hist_counts": [np.histogram(row, edges)[0].tolist() for row in v]}


@dataclass
class Evaluation(Scores):
    """One evaluation: the step (offline + online) and phase it ran at, per-seed means, and every
    episode's return [S][episodes]; `snapshot` is the networks' file when the run keeps snapshots;
    `diagnostics` the agent's distributions at the probe states ({name: `summarize_distribution`})."""
    step: int = 0
    phase: str = "offline"
    episode_returns: list[list[float]] = field(default_factory=list)
    snapshot: str | None = None
    diagnostics: dict[str, dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        d = {"step": self.step, "phase": self.phase, **super().to_json(), "episode_returns": self.episode_returns}
        if self.snapshot is not None:
            d["snapshot"] = self.snapshot
        return d if self.diagnostics is None else {**d, "diagnostics": self.diagnostics}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Evaluation":
        return cls(d["return"], d["normalized"], d["step"], d["phase"], d["episode_returns"], d.get("snapshot"),
                   d.get("diagnostics"))


@dataclass
class Risk:
    """offrl.risk.risk_metrics of each seed over the final evaluation's episodes (keys: mean, cvar_α, var_α,
    worst, p_ge_θ, episodes)."""
    per_seed: list[dict[str, float]]
    episodes_per_seed: int
    statistic: str = ("per seed, over the episodes of the final evaluation: mean, lower-tail CVaR_α and "
                      "VaR_α (fractional empirical CVaR), worst episode, P(G ≥ θ)")
    warning: str | None = None                  # set when there are too few episodes for tail statistics

    def column(self, key: str) -> np.ndarray:
        """One statistic per seed [S] (NaN where a seed lacks it)."""
        return np.array([st.get(key, np.nan) for st in self.per_seed], float)

    def to_json(self) -> dict[str, Any]:
        d = {"statistic": self.statistic, "episodes_per_seed": self.episodes_per_seed, "per_seed": self.per_seed}
        return d if self.warning is None else {**d, "warning": self.warning}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Risk":
        return cls(d["per_seed"], d["episodes_per_seed"], d["statistic"], d.get("warning"))


@dataclass
class RunRecord:
    """final.json, plus the run's evaluations and its report label (from config.json and metrics.jsonl)."""
    agent: str
    dataset: str | None
    env: str | None
    seeds: int
    eval_episodes: int
    steps: int
    online_steps: int
    ref_min_score: float | None
    ref_max_score: float | None
    ref_source: str
    wall_seconds_last_session: float
    final: Scores | None = None                 # None when the run never evaluated
    best: Scores | None = None
    offline_final: Scores | None = None         # O2O runs: the last evaluation of the offline phase
    final_episode_returns: list[list[float]] | None = None
    risk: Risk | None = None
    label: str = ""                             # the run's name in reports (config.json; default the agent)
    evaluations: list[Evaluation] = field(default_factory=list)
    wall_seconds: float | None = None           # training wall time over all sessions (each up to its last
                                                # checkpoint, the last one to the end); None in older runs
    diagnostics: dict[str, dict[str, Any]] | None = None   # the agent's distributions at the last evaluation
    dataset_hash: str | None = None             # sha256 of the training transitions (Dataset.content_hash);
                                                # None online-only and in older runs
    matmul_precision: str = "highest"           # RunConfig.matmul_precision (config.json; older runs: highest)

    @property
    def run_seconds(self) -> float:
        """The run's wall time: over all its sessions when recorded, else its last session's."""
        return self.wall_seconds if self.wall_seconds is not None else self.wall_seconds_last_session

    @property
    def name(self) -> str:
        """The dataset (or, online only, the env) the run is reported under."""
        return self.dataset or self.env or ""

    def scores(self, stat: str) -> np.ndarray:
        """Per-seed values [S] of `final`, `best` or `offline_final` (normalised when possible)."""
        block = getattr(self, stat)
        if block is None:
            raise OffrlError(f"run {self.label or self.agent} on {self.name} has no {stat!r} scores")
        return block.values()

    def to_json(self) -> dict[str, Any]:
        """final.json."""
        out: dict[str, Any] = {
            "agent": self.agent, "dataset": self.dataset, "env": self.env, "seeds": self.seeds,
            "eval_episodes": self.eval_episodes, "steps": self.steps, "online_steps": self.online_steps,
            "ref_min_score": self.ref_min_score, "ref_max_score": self.ref_max_score, "ref_source": self.ref_source,
            "wall_seconds_last_session": self.wall_seconds_last_session, "statistics": STATISTICS}
        if self.dataset_hash is not None:
            out["dataset_content_hash"] = self.dataset_hash
        if self.wall_seconds is not None:
            out["wall_seconds"] = self.wall_seconds
        for stat in ("final", "best", "offline_final"):
            if getattr(self, stat) is not None:
                out[stat] = getattr(self, stat).to_json()
        if self.final_episode_returns is not None:
            out["final_episode_returns"] = self.final_episode_returns
        if self.risk is not None:
            out["risk"] = self.risk.to_json()
        if self.diagnostics is not None:
            out["diagnostics"] = self.diagnostics
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any], label: str = "", evaluations: list[Evaluation] | None = None) -> "RunRecord":
        block = lambda k: Scores.from_json(d[k]) if k in d else None
        return cls(d["agent"], d["dataset"], d["env"], d["seeds"], d["eval_episodes"], d["steps"], d["online_steps"],
                   d["ref_min_score"], d["ref_max_score"], d["ref_source"], d["wall_seconds_last_session"],
                   block("final"), block("best"), block("offline_final"), d.get("final_episode_returns"),
                   Risk.from_json(d["risk"]) if "risk" in d else None, label or d["agent"], evaluations or [],
                   d.get("wall_seconds"), d.get("diagnostics"), d.get("dataset_content_hash"))

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunRecord":
        """A finished run directory: final.json, its label from config.json, its evaluations from metrics.jsonl."""
        run_dir = Path(run_dir)
        try:
            final = json.loads((run_dir / "final.json").read_text())
            run = json.loads((run_dir / "config.json").read_text())["run"]
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            evals = [Evaluation.from_json(r) for r in map(json.loads, lines) if r["kind"] == "eval"]
            record = cls.from_json(final, run.get("label", ""), evals)
            record.matmul_precision = run.get("matmul_precision", "highest")
            return record
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise OffrlError(f"{run_dir}: not a readable offrl run directory ({type(e).__name__}: {e})") from None

"""Comparison reports from run directories: Markdown tables, rliable aggregates, plots, scores.csv.

Statistics, always labelled: *final* = the last evaluation of each seed (mean over its episodes);
*best* = per seed, the maximum over evaluations. Tables give mean ± std over seeds (population std,
ddof=0, as CORL and D4RL papers do). Aggregates over all (seed, dataset) runs use rliable with
stratified-bootstrap 95% CIs (fixed seed per agent, so a report is reproducible and an agent's CIs are
the same in every report it appears in).
"""
from __future__ import annotations

import contextlib
import csv
import io
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from offrl import OffrlError
from offrl.record import RunRecord
from offrl.utils import atomic_write, plural

BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0


def collect(dirs: list[str | Path]) -> list[RunRecord]:
    """Finished runs under the given folders (a run dir holds final.json)."""
    found = []
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise OffrlError(f"{d}: no such folder")
        for final in sorted(d.glob("**/final.json")):
            found.append(RunRecord.load(final.parent))
    if not found:
        raise OffrlError(f"no finished runs (final.json) under {', '.join(map(str, dirs))}")
    return found


# --- statistics, as plain functions of arrays (tested against hand-computed values) ---
@contextlib.contextmanager
def seeded_numpy(seed: int):
    """numpy's global RNG seeded for the block, its state restored after: rliable 1.2's stratified bootstrap
    and profile CIs draw from np.random and ignore the random_state they are given."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def mean_std(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, float)
    return float(x.mean()), float(x.std())


def iqm(x: np.ndarray) -> float:
    """Interquartile mean over all entries: the mean of the middle 50% (rliable's aggregate_iqm)."""
    from scipy.stats import trim_mean
    return float(trim_mean(np.asarray(x, float).ravel(), 0.25))


def aggregates(score_dict: dict[str, np.ndarray], reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Median, IQM, mean, optimality gap (γ=1) of scores/100, [runs, tasks] per label, with
    stratified-bootstrap 95% CIs. Returns (point [label → 4], interval [label → 2×4])."""
    from rliable import library as rly
    from rliable import metrics

    fn = lambda x: np.array([metrics.aggregate_median(x), metrics.aggregate_iqm(x), metrics.aggregate_mean(x),
                             metrics.aggregate_optimality_gap(x)])
    point, interval = {}, {}
    for k, v in score_dict.items():     # one call per agent: its CI must not depend on who else is in the report
        with warnings.catch_warnings(), seeded_numpy(agent_seed(seed, k)):
            warnings.simplefilter("ignore", FutureWarning)     # arch's notice about RandomState
            p, i = rly.get_interval_estimates({k: v / 100.0}, fn, reps=reps,
                                              random_state=np.random.RandomState(agent_seed(seed, k)))
        point[k], interval[k] = p[k], i[k]
    return point, interval


def agent_seed(seed: int, label: str) -> int:
    """The bootstrap seed of one agent's resamples: `seed` offset by a stable hash of its label, so an
    agent's CIs are the same in every report it appears in (rliable draws all agents' resamples from one
    stream, in dict order: a shared seed made them move when agents joined or were reordered)."""
    return (seed + zlib.crc32(label.encode())) % 2**32


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
                               ) -> tuple[float, float, float]:
    """P(X > Y) averaged over tasks (Mann-Whitney per task), with a stratified-bootstrap 95% CI."""
    from rliable import library as rly

    with warnings.catch_warnings(), seeded_numpy(seed):
        warnings.simplefilter("ignore", FutureWarning)
        point, interval = rly.get_interval_estimates(
            {"p": [x, y]}, lambda a, b: np.array([improvement_probability(a, b)]), reps=reps,
            random_state=np.random.RandomState(seed))
    return float(point["p"][0]), float(interval["p"][0, 0]), float(interval["p"][1, 0])


# rliable's own metric functions loop in Python (a scipy Mann-Whitney test per task, an np.vectorize over
# thresholds): inside 2,000 bootstrap resamples they were two thirds of a small suite's wall time. These
# compute the same numbers bit for bit (tests/test_bench.py compares them with rliable's on tied data);
# the resampling stays rliable's, so every CI is the one rliable gives.
def improvement_probability(x: np.ndarray, y: np.ndarray) -> float:
    """rliable's `probability_of_improvement`: per task, P(X > Y) + ½·P(X = Y) over all run pairs (the
    Mann-Whitney U / (n·m)), then the mean over tasks. x [n, tasks], y [m, tasks]."""
    per_task = []
    for t in range(x.shape[1]):
        a, b = x[:, t], y[:, t]
        if np.array_equal(a, b):
            per_task.append(0.5)
            continue
        u = (a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()
        per_task.append(u / (len(a) * len(b)))
    return np.mean(per_task)


def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """rliable's `score_distributions`: for each τ the fraction of all runs' scores above τ. scores
    [runs, tasks], taus [T] → [T]."""
    return (scores.reshape(-1, 1) > np.asarray(taus)[None, :]).mean(0)


def bootstrap_mean_ci(x: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean of per-seed values x [S] (resampling seeds)."""
    x = np.asarray(x, float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (reps, len(x)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


RISK_COLUMNS = ("mean", "cvar_0.05", "cvar_0.1", "cvar_0.25", "var_0.1", "worst")


def bootstrap_diff_ci(x: np.ndarray, y: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
                      ) -> tuple[float, float]:
    """95% percentile-bootstrap CI of mean(x) − mean(y), resampling the seeds of each independently."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    d = x[rng.integers(0, len(x), (reps, len(x)))].mean(1) - y[rng.integers(0, len(y), (reps, len(y)))].mean(1)
    return float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))


def tail_columns(episodes: int, columns: tuple[str, ...] = RISK_COLUMNS) -> tuple[list[str], str]:
    """The risk columns worth showing with `episodes` per seed, and the worst column's header: at a level
    α with α·n ≤ 1, CVaR_α and VaR_α are the worst episode itself, so those columns fold into it."""
    def folds(c: str) -> bool:
        return c.startswith(("cvar_", "var_")) and float(c.split("_")[1]) * episodes <= 1
    folded = [c.replace("_", " ") for c in columns if folds(c)]
    worst = "worst" + (f" (= {', '.join(folded)})" if folded else "")
    return [c for c in columns if not folds(c)], worst


def risk_table(runs: list[RunRecord], compare: list[tuple[str, str]] | None = None) -> list[str]:
    """Markdown lines: per dataset and agent, risk statistics of the final evaluation's episode returns
    (each per seed, then mean over seeds [95% bootstrap CI over seeds]); columns in RISK_COLUMNS' order
    in every table."""
    risky = [r for r in runs if r.risk is not None]
    if not risky:
        return []
    extra = sorted({k for r in risky for st in r.risk.per_seed for k in st if k.startswith("p_ge_")})
    n_eps = sorted({r.risk.episodes_per_seed for r in risky})
    shown, worst = tail_columns(n_eps[0])
    cols = [*shown, *extra]
    header = lambda c: worst if c == "worst" else c.replace("_", " ")
    lines = ["## Risk (final evaluation, raw returns)", "",
             f"Per seed over its {'/'.join(map(str, n_eps))} final-evaluation episodes: mean, lower-tail CVaR_α "
             "(fractional empirical), VaR_α, worst episode" + (", P(G ≥ θ)" if extra else "") + "; cells: mean over "
             f"seeds [95% percentile-bootstrap CI over seeds, {BOOTSTRAP_REPS} resamples, seed {BOOTSTRAP_SEED}].", "",
             "| dataset | agent | seeds | " + " | ".join(map(header, cols)) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for r in risky:
        cells = []
        for c in cols:
            x = r.risk.column(c)
            lo, hi = bootstrap_mean_ci(x)
            cells.append(f"{x.mean():.1f} [{lo:.1f}, {hi:.1f}]")
        lines.append(f"| {r.name} | {r.label} | {len(r.risk.per_seed)} | " + " | ".join(cells) + " |")
    if n_eps[0] < 100:
        lines += ["", "Some runs have fewer than 100 episodes per seed: their tail statistics are noisy."]
    by = {(r.label, r.name): r for r in risky}
    pairs = [(x, y, ds) for x, y in (compare or []) for ds in dict.fromkeys(r.name for r in risky)
             if (x, ds) in by and (y, ds) in by]
    diff_cols = [c for c in shown if c in ("mean", "cvar_0.05", "cvar_0.1", "cvar_0.25", "worst")]
    if pairs:
        lines += ["", "Differences X − Y (mean over seeds, 95% bootstrap CI resampling each agent's seeds):", "",
                  "| dataset | X | Y | " + " | ".join(f"Δ {header(c)}" for c in diff_cols) + " |",
                  "|---|---|---|" + "---|" * len(diff_cols)]
        for x, y, ds in pairs:
            cells = []
            for c in diff_cols:
                a, b = by[(x, ds)].risk.column(c), by[(y, ds)].risk.column(c)
                lo, hi = bootstrap_diff_ci(a, b)
                cells.append(f"{a.mean() - b.mean():+.1f} [{lo:+.1f}, {hi:+.1f}]")
            lines.append(f"| {ds} | {x} | {y} | " + " | ".join(cells) + " |")
    return lines + [""]


def compute_table(runs: list[RunRecord]) -> list[str]:
    """Markdown lines: each agent's run wall time (all seeds of a run train in one process), to budget
    new rows of a suite."""
    by_label: dict[str, list[float]] = {}
    for r in runs:
        by_label.setdefault(r.label, []).append(r.run_seconds)
    lines = ["## Compute", "", "Wall time of each run (one process training all its seeds; runs of a sweep may share "
             "the machine with each other and with other work, so these are what it took here, not a benchmark).", "",
             "| agent | runs | total (h) | per run, mean (min) | per run, min–max (min) |", "|---|---|---|---|---|"]
    for label, secs in by_label.items():
        lines.append(f"| {label} | {len(secs)} | {sum(secs) / 3600:.2f} | {np.mean(secs) / 60:.1f} | "
                     f"{min(secs) / 60:.1f}–{max(secs) / 60:.1f} |")
    partial = [f"{r.label} on {r.name}" for r in runs if r.wall_seconds is None]
    if partial:     # runs written by code that kept only the last session's time: a resumed one is undercounted
        which = "Every run" if len(partial) == len(runs) else f"{plural(len(partial), 'run')} ({', '.join(partial)})"
        lines += ["", f"{which} recorded only the last session's time (written before offrl kept the time over "
                  "sessions): a lower bound for a run that was resumed."]
    return lines + [""]


# --- the report ---
def _colors(labels: list[str]) -> dict[str, Any]:
    """One colour per agent, the same in every plot of a report."""
    import matplotlib.pyplot as plt

    return {lb: plt.get_cmap("tab10")(i % 10) for i, lb in enumerate(labels)}


def _plot_aggregates(point: dict[str, np.ndarray], interval: dict[str, np.ndarray], labels: list[str], unit: str,
                     path: Path, colors: dict[str, Any]) -> None:
    """Median, IQM, mean and optimality gap per agent: a dot at the estimate, a bar over its 95% CI."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(12, 0.9 + 0.4 * len(labels)), sharey=True)
    for i, (ax, name) in enumerate(zip(axes, ["Median", "IQM", "Mean", "Optimality gap"])):
        for y, lb in enumerate(labels):
            lo, hi = interval[lb][0, i], interval[lb][1, i]
            ax.barh(y, hi - lo, left=lo, height=0.6, color=colors[lb], alpha=0.75)
            ax.plot([point[lb][i]] * 2, [y - 0.3, y + 0.3], color="black", linewidth=1.5)
        ax.set_title(name, fontsize="medium")
        ax.xaxis.set_major_locator(plt.MaxNLocator(3))
        ax.grid(axis="x", alpha=0.3)
        ax.spines[["top", "right", "left"]].set_visible(False)
    axes[0].set_yticks(range(len(labels)), labels)
    fig.supxlabel(f"{unit[0].upper() + unit[1:]} (bars: 95% stratified-bootstrap CIs; optimality gap: lower is better)",
                  fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)


def _fmt(m: float, s: float) -> str:
    return f"{m:.1f} ± {s:.1f}"


def data_builds(runs: list[RunRecord]) -> list[str]:
    """A "Data builds" section when runs reported under one dataset name trained on different data: the
    zoo's levels rebuilt on another machine keep their name but not their bytes (reference scores and
    content hash differ). Builds are told apart by reference scores and, where recorded, the sha256 of the
    transitions; a run without a hash joins the build of equal reference scores. Empty when all agree."""
    out = []
    for name in dict.fromkeys(r.name for r in runs):
        same = [r for r in runs if r.name == name and r.ref_max_score is not None]
        builds: dict[tuple, list[RunRecord]] = {}
        for refs in dict.fromkeys((r.ref_min_score, r.ref_max_score) for r in same):
            group = [r for r in same if (r.ref_min_score, r.ref_max_score) == refs]
            hashes = list(dict.fromkeys(r.dataset_hash for r in group if r.dataset_hash))
            for h in hashes if len(hashes) > 1 else [hashes[0] if hashes else None]:
                builds[(*refs, h)] = [r for r in group if r.dataset_hash == h or (len(hashes) <= 1 and not r.dataset_hash)]
            if len(hashes) > 1 and any(not r.dataset_hash for r in group):
                builds[(*refs, None)] = [r for r in group if not r.dataset_hash]
        if len(builds) > 1:
            for (lo, hi, h), members in builds.items():
                out.append(f"| {name} | {lo:.2f}, {hi:.2f} | {h[:12] + '…' if h else 'not recorded'} | "
                           f"{', '.join(dict.fromkeys(r.label for r in members))} |")
    if not out:
        return []
    return ["## Data builds", "", "Some datasets below were not the same data for every agent: the same level "
            "built more than once: on different machines before the zoo's rollouts were made CPU-independent "
            "(the behaviour policies' float32 forward passes rounded differently per CPU, so the sampled episodes "
            "diverged), or once before and once after that change; same policies, same seeds, same size. Rows "
            "on different builds "
            "compare agents on different samples of the same behaviour, not on the same transitions.", "",
            "| dataset | reference scores (min, max) | sha256 | agents |", "|---|---|---|---|", *out, ""]


def reduced_precision(runs: list[RunRecord]) -> list[str]:
    """A "Matmul precision" section listing runs trained with reduced-precision float32 matmuls
    (RunConfig.matmul_precision other than highest); empty when every run used exact float32."""
    rows = [f"| {r.label} | {r.name} | {r.matmul_precision} |" for r in runs if r.matmul_precision != "highest"]
    if not rows:
        return []
    return ["## Matmul precision", "", "These runs multiplied float32 matrices at reduced precision "
            "(`torch.set_float32_matmul_precision`; medium: bfloat16 products with float32 sums, high: TF32 on "
            "GPUs); every other run used exact float32. Same algorithm and data; their numbers carry the rounding "
            "of the products.", "", "| agent | dataset | matmul precision |", "|---|---|---|", *rows, ""]


def build_report(runs: list[RunRecord], out: str | Path, title: str = "offrl report", command: str = "",
                 compare: list[tuple[str, str]] | None = None, wall_time: bool = False, notes: str = "") -> Path:
    """Write REPORT.md, scores.csv and PNG plots into folder `out`; returns the Markdown path. wall_time:
    add each agent's run wall times (then the report is no longer reproducible byte for byte). notes:
    Markdown placed under "## Notes" (what the numbers mean, orderings investigated)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import plot_utils

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = list(dict.fromkeys(r.label for r in runs))
    datasets = list(dict.fromkeys(r.name for r in runs))
    by = {(r.label, r.name): r for r in runs}
    seeds = sorted({r.seeds for r in runs})
    episodes = sorted({r.eval_episodes for r in runs})
    normalised = all(r.final is not None and r.final.normalized is not None for r in runs)
    unit = "normalised score (100·(R − ref_min)/(ref_max − ref_min))" if normalised else "return"
    lines = [f"# {title}", ""]
    if command:
        lines += [f"Regenerate: `{command}`", ""]
    lines += [f"{plural(len(runs), 'run')}: {plural(len(labels), 'agent')} × {plural(len(datasets), 'dataset')}, "
              f"{'/'.join(map(str, seeds))} seed{'s' * (seeds != [1])} each, {'/'.join(map(str, episodes))} evaluation "
              f"episode{'s' * (episodes != [1])} per seed per evaluation. Numbers are {unit}. "
              "**final** = last evaluation of each seed; **best** = each seed's maximum over its evaluations "
              "(optimistic: it selects on the evaluation episodes). Tables: mean ± std over seeds (ddof 0).", ""]
    lines += data_builds(runs) + reduced_precision(runs)
    for stat in ("final", "best"):
        lines += [f"## Per dataset, {stat}", "", "| dataset | " + " | ".join(labels) + " |",
                  "|---|" + "---|" * len(labels)]
        for ds in datasets:
            cells = [_fmt(*mean_std(by[(lb, ds)].scores(stat))) if (lb, ds) in by else "—" for lb in labels]
            lines.append(f"| {ds} | " + " | ".join(cells) + " |")
        avg = []
        for lb in labels:          # an agent that lacks datasets says over how many its average is
            have = [by[(lb, ds)].scores(stat).mean() for ds in datasets if (lb, ds) in by]
            avg.append(f"{np.mean(have):.1f}" + (f" ({len(have)} of {len(datasets)})" if len(have) < len(datasets) else ""))
        lines += ["| **average** | " + " | ".join(avg) + " |", ""]

    complete = [lb for lb in labels if all((lb, ds) in by for ds in datasets)]
    score_dict = {lb: np.stack([by[(lb, ds)].scores("final") for ds in datasets], 1) for lb in complete}
    if score_dict and len({v.shape for v in score_dict.values()}) == 1:
        point, interval = aggregates(score_dict)
        lines += ["## Aggregates (final, rliable)", "",
                  f"Over all seeds × datasets, scores/100; 95% stratified-bootstrap CIs, {BOOTSTRAP_REPS} "
                  f"resamples, seed {BOOTSTRAP_SEED} offset per agent by a hash of its name (so an agent's CIs do not "
                  "change when others join the report). Optimality gap: lower is better.", "",
                  "| agent | median | IQM | mean | optimality gap |", "|---|---|---|---|---|"]
        for lb in score_dict:
            cells = [f"{point[lb][i]:.3f} [{interval[lb][0, i]:.3f}, {interval[lb][1, i]:.3f}]" for i in range(4)]
            lines.append(f"| {lb} | " + " | ".join(cells) + " |")
        lines.append("")
        pairs = [p for p in (compare or [(lb, complete[0]) for lb in complete[1:]]) if p[0] in score_dict and p[1] in score_dict]
        if pairs:
            lines += ["## Probability of improvement (final)", "", "| X | Y | P(X > Y) | 95% CI |", "|---|---|---|---|"]
            for x, y in pairs:
                p, lo, hi = probability_of_improvement(score_dict[x] / 100, score_dict[y] / 100)
                lines.append(f"| {x} | {y} | {p:.3f} | [{lo:.3f}, {hi:.3f}] |")
            lines.append("")
        unit = "normalised score / 100" if normalised else "return / 100"
        colors = _colors(labels)        # every agent's colour, the same in all plots (incomplete ones too)
        _plot_aggregates(point, interval, list(score_dict), unit, out / "aggregates.png", colors)
        all_scores = np.concatenate([v.ravel() for v in score_dict.values()]) / 100
        span = all_scores.max() - min(all_scores.min(), 0.0)
        taus = np.linspace(min(all_scores.min(), 0.0), all_scores.max() + 0.05 * span + 1e-3, 81)   # fitted to the data
        profiles, profile_cis = {}, {}
        for k, v in score_dict.items():     # per agent, as in `aggregates`
            with seeded_numpy(agent_seed(BOOTSTRAP_SEED, k)):
                p, c = rly.create_performance_profile({k: v / 100}, taus, custom_profile_func=score_distribution)
            profiles[k], profile_cis[k] = p[k], c[k]
        fig, ax = plt.subplots(figsize=(6, 4))
        plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=profile_cis, ax=ax,
                                             colors={lb: colors[lb] for lb in score_dict},
                                             xlabel=rf"{unit[0].upper() + unit[1:]} ($\tau$)", labelsize="medium",
                                             ticklabelsize="medium")
        ax.legend(loc="upper right", fontsize="small", frameon=False)
        ax.set_title(f"Performance profile (final), {len(all_scores)} runs", fontsize="medium")
        fig.savefig(out / "performance_profile.png", bbox_inches="tight", dpi=110)
        plt.close(fig)
        lines += ["![aggregates](aggregates.png)", "", "![performance profile](performance_profile.png)", ""]

    lines += risk_table(runs, compare or [(lb, labels[0]) for lb in labels[1:]])

    o2o = [r for r in runs if r.online_steps > 0 and r.offline_final is not None]
    if o2o:
        lines += ["## Offline → online", "", "Regret = mean over online-phase evaluations of (100 − score), "
                  "averaged over seeds.", "", "| agent | dataset | offline (final) | online (final) | regret |",
                  "|---|---|---|---|---|"]
        for r in o2o:
            online = [e.values() for e in r.evaluations if e.phase == "online"]
            regret = float(np.mean([100 - x for x in online])) if online else float("nan")
            lines.append(f"| {r.label} | {r.name} | {_fmt(*mean_std(r.scores('offline_final')))} | "
                         f"{_fmt(*mean_std(r.scores('final')))} | {regret:.1f} |")
        lines.append("")

    # learning curves: one panel per dataset, mean ± std over seeds
    cols = min(3, len(datasets))
    rows = -(-len(datasets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colors = _colors(labels)
    for ax, ds in zip(axes.ravel(), datasets):
        for lb in labels:
            if (lb, ds) not in by:
                continue
            r = by[(lb, ds)]
            steps = np.array([e.step for e in r.evaluations])
            vals = np.array([e.values() for e in r.evaluations], float)
            m, s = vals.mean(1), vals.std(1)
            ax.plot(steps, m, label=lb, color=colors[lb])
            ax.fill_between(steps, m - s, m + s, alpha=0.2, color=colors[lb])
        ax.set_title(ds, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("normalised score" if normalised else "return")
    for ax in axes.ravel()[len(datasets):]:
        ax.axis("off")
    first = axes.ravel()[0]
    if len(first.get_lines()) == len(labels):
        first.legend(fontsize=8)
    else:                       # an agent missing from the first panel still gets its legend entry
        from matplotlib.lines import Line2D
        first.legend(handles=[Line2D([], [], color=colors[lb], label=lb) for lb in labels], fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=110)
    plt.close(fig)
    if wall_time:
        lines += compute_table(runs)
    lines += ["## Learning curves", "", "Mean ± std over seeds at each evaluation.", "",
              "![learning curves](learning_curves.png)", "", "Every per-seed, per-evaluation number: `scores.csv`.", ""]
    if notes.strip():
        lines += ["## Notes", "", notes.strip(), ""]

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["agent", "algorithm", "dataset", "seed", "step", "phase", "return", "normalized"])
    for r in runs:
        for e in r.evaluations:
            for s, ret in enumerate(e.returns):
                norm = e.normalized[s] if e.normalized is not None else ""
                w.writerow([r.label, r.agent, r.name, s, e.step, e.phase, f"{ret:.4f}",
                            f"{norm:.4f}" if norm != "" else ""])
    atomic_write(out / "scores.csv", lambda f: f.write(buf.getvalue()))
    report = out / "REPORT.md"
    atomic_write(report, lambda f: f.write("\n".join(lines)))
    return report

"""The benchmark harness: suites, launchers, resumable sweeps, report statistics."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY, bench_tiny, run_cli
from offrl.bench.report import (aggregates, compute_table, data_builds, improvement_probability, iqm, mean_std,
                                probability_of_improvement, score_distribution)
from offrl.bench.suite import SuiteError, load_suite
from offrl.record import RunRecord



_bench = bench_tiny


def _suite_dir(tmp_path, name, text=TINY):
    d = tmp_path / name
    d.mkdir()
    (d / "tiny.yaml").write_text(text)
    return d


def _outputs(d):
    report = (d / "results" / "tiny" / "REPORT.md").read_text()
    return report, (d / "results" / "tiny" / "scores.csv").read_text()


def test_fast_metrics_equal_rliables_bit_for_bit():
    """The report's vectorised P(X > Y) and score distribution are rliable's numbers exactly (ties, equal
    samples, unequal run counts), so the CIs built on them are rliable's."""
    from rliable import library, metrics

    assert improvement_probability(np.array([[1.0], [2.0], [3.0]]), np.array([[2.0], [0.0]])) == 4.5 / 6   # 1>0, 2>0, 3>2, 3>0 + ½(2=2)
    rng = np.random.default_rng(0)
    for trial in range(200):
        n, m, tasks = rng.integers(1, 7, 3)
        x = rng.integers(0, 5, (n, tasks)) / 4.0
        y = x.copy() if trial % 4 == 0 else rng.integers(0, 5, (m, tasks)) / 4.0
        assert improvement_probability(x, y) == metrics.probability_of_improvement(x, y)
        taus = np.linspace(-0.1, 1.1, 13)
        np.testing.assert_array_equal(score_distribution(x, taus), library.score_distributions(x, taus))


def test_report_statistics_match_hand_computed_values():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, 1.118033988749895))
    assert iqm(np.array([[8.0, 1.0, 7.0, 2.0], [6.0, 3.0, 5.0, 4.0]])) == pytest.approx(4.5)   # mean of 3,4,5,6
    rng = np.random.default_rng(0)
    scores = {"a": rng.normal(60, 10, (5, 3)), "b": rng.normal(40, 10, (5, 3))}
    point, interval = aggregates(scores, reps=4000, seed=0)
    for k, x in scores.items():
        x = x / 100
        assert point[k][1] == pytest.approx(iqm(x))                       # IQM exactly
        assert point[k][2] == pytest.approx(x.mean())                     # mean exactly
        assert point[k][3] == pytest.approx(np.mean(np.maximum(1 - x, 0)))   # optimality gap
        # our own stratified bootstrap of the mean: resample runs within each task
        boot_rng = np.random.default_rng(1)
        means = [np.mean([x[boot_rng.integers(0, 5, 5), t] for t in range(3)]) for _ in range(4000)]
        lo, hi = np.percentile(means, [2.5, 97.5])
        assert interval[k][0, 2] == pytest.approx(lo, abs=0.01) and interval[k][1, 2] == pytest.approx(hi, abs=0.01)
    # the report says "seed 0": the same seed gives the same CIs (rliable 1.2 ignores its random_state and
    # draws from numpy's global RNG, which the call must seed and then restore)
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    again = aggregates(scores, reps=4000, seed=0)[1]
    assert np.random.random() == before
    for k in scores:
        np.testing.assert_array_equal(again[k], interval[k])
    assert not np.array_equal(aggregates(scores, reps=4000, seed=1)[1]["a"], interval["a"])
    # an agent's CIs do not move when other agents join the report or come in another order
    alone = aggregates({"b": scores["b"]}, reps=4000, seed=0)[1]["b"]
    joined = aggregates({"c": scores["a"] + 5, "b": scores["b"], "a": scores["a"]}, reps=4000, seed=0)[1]
    np.testing.assert_array_equal(alone, interval["b"])
    np.testing.assert_array_equal(joined["b"], interval["b"])
    np.testing.assert_array_equal(joined["a"], interval["a"])
    p_ab = probability_of_improvement(scores["a"] / 100, scores["b"] / 100, reps=500)
    assert probability_of_improvement(scores["a"] / 100, scores["b"] / 100, reps=500) == p_ab


@pytest.mark.parametrize("edit,message", [
    (("agents: [bc,", "agents: [bcc,"), "tiny.yaml:2: unknown agent 'bcc'"),
    (("scripted-noisy-small-v0]", "nothing-v0]"), "tiny.yaml:3: unknown dataset 'offrl/invertedpendulum/nothing-v0'"),
    (("hidden: [32, 32]", "hiden: [32, 32]"), "tiny.yaml:2: unknown config key 'hiden'"),
    (("scripted-noisy-small-v0]", "scripted-mixed-small-v0]"), "tiny.yaml:3: duplicate dataset"),
    (("label: td3_bc-small, ", "label: bc, "), "tiny.yaml:2: duplicate agent entry 'bc'"),
    (("seeds: 2", "seedz: 2"), "tiny.yaml:4: unknown key 'seedz'"),
    (("set: {hidden: [32, 32]}", "set: [32, 32]"), "tiny.yaml:2: an agent entry's set: and run: are mappings"),
    (("set: {hidden: [32, 32]}", "set: {hidden: [32, 32]}, run: {sources: [pgd]}"),
     "tiny.yaml:2: run: sources is a mapping of source names to settings"),
    (("set: {hidden: [32, 32]}", "set: {hidden: [32, 32]}, run: {matmul_precision: half}"),
     "tiny.yaml:2: td3_bc-small on offrl/invertedpendulum/scripted-mixed-small-v0: unknown matmul_precision of "
     "td3_bc-small 'half'; choose one of highest, high, medium"),
    (("hidden: [32, 32]", "hidden: [32, 32], policy_freq: 0"), "tiny.yaml:2: td3_bc-small on "
     "offrl/invertedpendulum/scripted-mixed-small-v0: policy_freq must be ≥ 1, got 0"),
    (("hidden: [32, 32]", "hidden: []"), "tiny.yaml:2: td3_bc-small on offrl/invertedpendulum/scripted-mixed-small-v0: "
     "hidden must be non-empty"),
    (("seeds: 2", "seeds: 2\nenv: Hopper-v5"), "tiny.yaml:3: dataset 'offrl/invertedpendulum/scripted-mixed-small-v0' "
     "has observation and action sizes (4, 1), but the suite's env Hopper-v5 (line 5) has (11, 3)"),
])
def test_bad_suites_fail_before_any_run_naming_the_line(tmp_path, edit, message):
    d = _suite_dir(tmp_path, "bad", TINY.replace(*edit))
    with pytest.raises(SuiteError, match=re.escape(message)):
        load_suite(str(d / "tiny.yaml"))
    p = run_cli("bench", "tiny.yaml", "--no-progress", cwd=d)
    assert p.returncode == 2 and message in p.stderr
    assert not (d / "runs").exists()


def test_a_suite_extends_another_key_by_key(tmp_path):
    """extends: takes every key of the base but name and description, a key given replaces the inherited one
    whole, and a bad base, a cycle or an inherited key that no longer fits fails naming the line."""
    d = _suite_dir(tmp_path, "ext", TINY + "description: the base\ncompare: [[td3_bc-small, bc]]\n")
    (d / "child.yaml").write_text("# one agent, more seeds\nextends: tiny.yaml\nagents: [td3_bc]\nseeds: 3\n"
                                  "compare: []\n")
    base, child = load_suite(str(d / "tiny.yaml")), load_suite(str(d / "child.yaml"))
    assert (child.name, child.labels, child.datasets) == ("child", ["td3_bc"], base.datasets)
    assert child.settings["description"] == "" and child.settings["steps"] == base.settings["steps"] == 60
    assert [t.run for t in child.tasks] == [dataclasses.replace(t.run, agent="td3_bc", label="td3_bc", agent_config={},
                                                                seeds=3) for t in base.tasks if t.label == "td3_bc-small"]
    # a suite may extend a built-in one by name: a2pr keeps the zoo's nine levels and budget
    assert load_suite("a2pr", build_missing=True).datasets == load_suite("zoo", build_missing=True).datasets
    for text, message in (
            ("extends: tiny.yaml\nagents: [td3_bc]\n", "tiny.yaml:10: compare entries are pairs of agent labels from "
             "['td3_bc'], got ['td3_bc-small', 'bc'] (inherited by child.yaml through extends: give it its own compare:)"),
            ("agents: [bc]\nextends: zo\n", "child.yaml:2: extends: no suite 'zo' (did you mean 'zoo'?)"),
            ("extends: [tiny.yaml]\n", "child.yaml:1: extends is one suite"),
            ("extends: child.yaml\n", "child.yaml:1: extends: 'child.yaml' leads back to child.yaml")):
        (d / "child.yaml").write_text(text)
        with pytest.raises(SuiteError, match=re.escape(message)):
            load_suite(str(d / "child.yaml"))


def test_process_pool_gives_the_sequential_scores_and_a_line_per_finished_run(tmp_path, tiny_reference):
    pool = _suite_dir(tmp_path, "pool")
    p = _bench(pool, "--workers", "2")                     # stdout is a pipe: no bars, a line per run instead
    assert p.returncode == 0, p.stderr
    assert _outputs(pool)[1] == tiny_reference
    done = [line for line in p.stdout.splitlines() if re.match(r"\[\d/4\] \S+ on offrl/invertedpendulum/", line)]
    assert len(done) == 4 and all("ETA" in line and "final" in line for line in done), p.stdout
    assert "building the report" in p.stdout and p.stdout.count("wall time") == 1


def test_agents_and_datasets_options_run_part_of_a_suite_and_the_report_grows(tmp_path, tiny_reference):
    """`--agents/--datasets` run a subset (one agent's row); the report covers every finished run in --out,
    and finishing the rest by parts gives the whole sweep's scores exactly."""
    d = _suite_dir(tmp_path, "parts")
    mixed = "offrl/invertedpendulum/scripted-mixed-small-v0"
    for bad, message in ((("--agents", "bc,td3"), "suite tiny has no agent 'td3'"),
                         (("--datasets", "offrl/invertedpendulum/nothing-v0"), "suite tiny has no dataset"),
                         (("--agents", ","), "no agent named: give one or more of bc, td3_bc-small"),
                         (("--threads", "0"), "threads must be a positive integer, got 0")):
        p = run_cli("bench", "tiny.yaml", "--no-progress", *bad, cwd=d)
        assert p.returncode == 2 and message in p.stderr, p.stderr
        assert not (d / "runs").exists()
    p = run_cli("bench", "tiny.yaml", "--no-progress", "--workers", "1", "--agents", "bc", "--datasets", mixed, cwd=d)
    assert p.returncode == 0, p.stderr
    assert sorted(x.parent.relative_to(d / "runs" / "tiny").as_posix() for x in (d / "runs").rglob("final.json")) == [
        "bc/offrl_invertedpendulum_scripted-mixed-small-v0"]
    assert "suite tiny: 1 run (0 finished)" in p.stdout
    # --threads: this row on 2 torch threads instead of the suite's 1; the scores below are the same
    p = run_cli("bench", "tiny.yaml", "--no-progress", "--workers", "1", "--agents", "td3_bc-small", "--threads", "2",
                cwd=d)
    assert p.returncode == 0, p.stderr
    assert {json.loads(c.read_text())["threads"] for c in (d / "runs" / "tiny").glob("*/*/config.json")} == {1, 2}
    rows = _outputs(d)[1].splitlines()[1:]
    assert {(r.split(",")[0], r.split(",")[2]) for r in rows} == {("bc", mixed), ("td3_bc-small", mixed),
                                                                  ("td3_bc-small", mixed.replace("mixed", "noisy"))}
    (d / "results" / "tiny" / "NOTES.md").write_text("Orderings checked against the papers.\n")
    assert run_cli("bench", "tiny.yaml", "--no-progress", "--workers", "1", cwd=d).returncode == 0
    assert _outputs(d)[1] == tiny_reference
    assert "## Notes\n\nOrderings checked against the papers." in (d / "results" / "tiny" / "REPORT.md").read_text()
    # offrl report --compare: the suite's pairs for a report built from run records (default: each vs the first)
    p = run_cli("report", "runs/tiny", "--out", "rep", "--compare", "bc:td3_bc-small", cwd=d)
    assert p.returncode == 0, p.stderr
    assert re.search(r"^\| bc \| td3_bc-small \| \d", (d / "rep" / "REPORT.md").read_text(), re.M)
    p = run_cli("report", "runs/tiny", "--out", "rep", "--compare", "bc:td3_bc", cwd=d)
    assert p.returncode == 2 and "give pairs X:Y of agent labels found in the runs (bc, td3_bc-small)" in p.stderr


# Ray is an optional launcher (pip install ".[ray]"); its sweep (57 s here: Ray's start-up) runs with -m slow (CI time).
@pytest.mark.slow
def test_ray_launcher_gives_the_local_scores_and_listens_on_loopback_only(tmp_path, tiny_reference):
    pytest.importorskip("ray")
    ray_dir = _suite_dir(tmp_path, "ray")
    code = ("import subprocess, sys\n"
            "from offrl.bench.suite import load_suite\n"
            "from offrl.bench.sweep import run_suite, ray_init_loopback\n"
            "ray = ray_init_loopback()\n"
            "pids = {str(p) for p in []}\n"
            "out = subprocess.run(['ss', '-ltnpH'], capture_output=True, text=True).stdout\n"
            "run_suite(load_suite('tiny.yaml'), 'runs/tiny', launcher='ray', progress=False)\n"
            "print('SOCKETS', repr(out))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ray_dir, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    sockets = eval(p.stdout.split("SOCKETS", 1)[1].strip())
    ray_lines = [l for l in sockets.splitlines() if any(n in l for n in ("raylet", "gcs_server", "ray::", "python"))]
    assert ray_lines, sockets
    for line in ray_lines:
        local_addr = line.split()[3]
        assert local_addr.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")), line
    subprocess.run([sys.executable, "-m", "offrl.cli", "report", "runs/tiny", "--out", "results/tiny"], cwd=ray_dir,
                   check=True, capture_output=True)
    assert (ray_dir / "results" / "tiny" / "scores.csv").read_text() == tiny_reference


def test_every_shipped_suite_loads_once_its_datasets_exist(minari_root):
    """The shipped suites name only real zoo ids and valid settings; a missing zoo id tells the command."""
    import yaml
    from offrl.bench.suite import find_suite
    from offrl.data import dataset_exists
    from offrl.data.minari_io import write_minari
    from offrl.data.scripted import pendulum_episodes

    suites = sorted(p.stem for p in find_suite("quick").parent.glob("*.yaml"))
    assert {"quick", "locomotion", "locomotion-o2o", "risky"} <= set(suites)
    with pytest.raises(SuiteError, match=r"offrl datasets make Hopper-v5 --budget standard --levels random "
                                         r"--from-policies shipped"):
        load_suite("locomotion")
    # `offrl bench` instead collects them to build from the shipped policies before the first run
    missing = load_suite("locomotion", build_missing=True).missing
    assert missing["Hopper-v5"] == ["random", "medium", "medium-replay", "medium-expert", "expert"]
    assert set(missing) == {"Hopper-v5", "HalfCheetah-v5", "Walker2d-v5"}
    stand_in = pendulum_episodes(2, max_steps=50)
    for name in suites:                         # (a suite that extends another may list none of its own)
        for ds in yaml.safe_load(find_suite(name).read_text()).get("datasets", []):
            if not dataset_exists(ds):
                write_minari(ds, stand_in, "InvertedPendulum-v5", ref_min_score=0.0, ref_max_score=1.0, root=minari_root)
    for name in suites:
        suite = load_suite(name)
        assert len(suite.tasks) == len(suite.labels) * len(suite.datasets)


def test_compute_table_sums_sessions_and_flags_runs_that_kept_only_the_last():
    def run(dataset, last, total):
        return RunRecord("iql", dataset, "Hopper-v5", 3, 10, 100, 0, 0.0, 1.0, "test", last, label="iql",
                         wall_seconds=total)
    lines = compute_table([run("a", 600.0, 1800.0), run("b", 1200.0, None)])
    row = next(line for line in lines if line.startswith("| iql |"))
    assert row == "| iql | 2 | 0.83 | 25.0 | 20.0–30.0 |", row         # 1800 s and (last session only) 1200 s
    assert any(line.startswith("1 run (iql on b) recorded only the last session's time") for line in lines)
    assert any(line.startswith("Every run recorded") for line in compute_table([run("b", 1200.0, None)]))
    assert not any("only its last" in line for line in compute_table([run("a", 600.0, 1800.0)]))


def test_data_builds_section_names_the_agents_of_each_build_and_is_absent_when_all_share_one():
    def run(label, dataset, ref_max, digest=None):
        return RunRecord(label, dataset, "Hopper-v5", 3, 10, 100, 0, 16.8, ref_max, "test", 1.0, label=label,
                         dataset_hash=digest)
    same = [run("iql", "h", 1282.33), run("td3_bc", "h", 1282.33, "a" * 64), run("bc", "w", 900.0)]
    assert data_builds(same) == []                        # a run without a hash joins the build of equal refs
    rows = [line for line in data_builds(same + [run("awac", "h", 1281.41, "b" * 64), run("cql", "h", 1282.33, "c" * 64)])
            if line.startswith("| h |")]
    assert rows == ["| h | 16.80, 1282.33 | aaaaaaaaaaaa… | td3_bc |", "| h | 16.80, 1282.33 | cccccccccccc… | cql |",
                    "| h | 16.80, 1282.33 | not recorded | iql |", "| h | 16.80, 1281.41 | bbbbbbbbbbbb… | awac |"], rows

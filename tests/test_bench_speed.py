"""`offrl bench speed` produces a complete table (structure only: speed is never asserted in tests)."""
from __future__ import annotations


import pytest

from conftest import run_cli
from offrl.bench.speed import run_speed, speed_table


def test_speed_table_lists_every_variant():
    variants, env = run_speed(["td3_bc", "bc"], [1, 2], batch=8, rounds=2, updates=2, warmup=1,
                              d3rlpy=False, transitions=2000)
    assert [v.name for v in variants] == ["offrl td3_bc ×1", "offrl td3_bc ×2", "offrl bc ×1", "offrl bc ×2"]
    assert all(len(v.rates) == 2 and min(v.rates) > 0 for v in variants)
    table = speed_table(variants, env)
    assert table.count("| offrl ") == 4 and "round-robin" in table
    # TD3+BC, batch 8, 256×256 nets: the counted FLOPs grow with the seeds on the member axis
    one, two = variants[0], variants[1]
    assert one.flops > 0 and two.flops == 2 * one.flops
    assert one.peak_bytes > 0 and env["matmul_flops"] > 0
    assert "Where the time goes" not in table


def test_reduced_precision_variants_are_timed_against_their_exact_twin():
    import torch

    variants, env = run_speed(["bc"], [1], batch=8, rounds=2, updates=2, warmup=1, d3rlpy=False,
                              transitions=2000, precisions=["highest", "medium"])
    assert [(v.name, v.precision) for v in variants] == [("offrl bc ×1", "highest"),
                                                         ("offrl bc ×1 medium matmuls", "medium")]
    assert variants[1].flops == variants[0].flops                      # the same products, rounded differently
    assert torch.get_float32_matmul_precision() == "highest"           # each step restores the setting
    row = next(line for line in speed_table(variants, env).splitlines() if line.startswith("| offrl bc ×1 medium"))
    assert row.split("|")[5].strip() != ""                              # × vs eager: the exact twin


def test_profile_splits_an_update_into_matmul_and_other_time():
    variants, env = run_speed(["bc"], [1, 2], batch=8, rounds=1, updates=3, warmup=1, d3rlpy=False,
                              transitions=2000, profile=True)
    for v in variants:
        p = v.profile
        # BC's update: three member-axis layers forward and backward (matmuls) plus Adam and losses
        assert p["matmul_ms"] > 0 and p["other_ms"] > 0 and len(p["top"]) == 5
        assert not any(name in ("bmm", "baddbmm") for name, _ in p["top"])
    table = speed_table(variants, env)
    assert "## Where the time goes" in table and table.count("| offrl bc ×") == 4


def test_split_times_counts_each_kernel_once():
    from offrl.bench.speed import split_times

    # (name, is a device kernel, self CPU µs, self device µs) over 2 updates; binary-exact values
    rows = [("aten::bmm", False, 500.0, 250.0), ("aten::relu", False, 250.0, 125.0),
            ("Optimizer.step#CachedAdam.step", False, 125.0, 0.0),
            ("ampere_sgemm_128x64_nn", True, 0.0, 250.0), ("vectorized_elementwise_kernel", True, 0.0, 125.0)]
    cpu = split_times(rows, updates=2, wall_s=0.004, cuda=False)
    assert cpu["matmul_ms"] == 0.25 and cpu["other_ms"] == 0.1875
    assert cpu["top"] == [("relu", 0.125), ("CachedAdam.step (Python)", 0.0625)]
    gpu = split_times(rows, updates=2, wall_s=0.004, cuda=True)   # operator rows repeat their kernels' time
    assert gpu["matmul_ms"] == 0.125 and gpu["other_ms"] == 0.0625 and gpu["idle_ms"] == 2.0 - 0.1875


def test_counted_flops_of_a_linear_layer():
    from offrl.bench.speed import count_flops
    from offrl.nets import Linear
    import torch

    layer = Linear(16, 32, (3,))
    x = torch.randn(3, 8, 16)
    assert count_flops(lambda: layer(x)) == 2 * 3 * 8 * 16 * 32
    # A step that runs the layer on every second call (TD3+BC's delayed actor): counted at its rate
    calls = []

    def every_other():
        calls.append(1)
        if len(calls) % 2:
            layer(x)
    assert count_flops(every_other, calls=4) == 3 * 8 * 16 * 32


@pytest.mark.parametrize("args,message", [
    (["--agents", "td3_bc,iqll"], "did you mean 'iql'"),
    (["--device", "gpu"], "is not a torch device"),
    (["--matmul-precision", "medium,low"], "unknown --matmul-precision 'low'; choose one of highest, high, medium"),
])
def test_bench_speed_cli_rejects_bad_input(args, message):
    p = run_cli("bench", "speed", *args)
    assert p.returncode == 2 and message in p.stderr, p.stderr


def test_looped_critics_compute_what_the_member_axis_computes():
    """The benchmark's loop baseline is the same agent: N critic modules in turn give the ensemble's Q and
    the same update (SAC-N, N = 5, 2 seeds); the speed table times both and gives their ratio."""
    import torch

    from offrl.agent import Spec, get_agent, resolve_config
    from offrl.bench.speed import loop_critics, synthetic_dataset
    from offrl.buffer import Buffer

    data = synthetic_dataset(2000, 5, 2)
    spec, cls = Spec.from_dataset(data, "locomotion"), get_agent("sac_n")
    cfg = resolve_config(cls, "locomotion", False, {"num_critics": "5", "hidden": "16,16", "batch_size": "8"})
    torch.manual_seed(0)
    batched = cls(spec, cfg, 2)
    torch.manual_seed(0)
    looped = loop_critics(cls(spec, cfg, 2))
    batch = Buffer(data, 2, seed=0).sample(8)
    torch.testing.assert_close(looped.critic(batch.obs, batch.action), batched.critic(batch.obs, batch.action))
    torch.manual_seed(1)
    a = batched.update(batch)
    torch.manual_seed(1)
    b = looped.update(batch)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    variants, env = run_speed(["sac_n"], [1], batch=8, rounds=1, updates=2, warmup=1, d3rlpy=False, transitions=2000)
    assert [v.name for v in variants] == ["offrl sac_n ×1", "offrl sac_n ×1 looped critics"]
    row = next(line for line in speed_table(variants, env).splitlines() if line.startswith("| offrl sac_n ×1 |"))
    assert float(row.split("|")[7]) > 0                                  # the × vs looped critics column

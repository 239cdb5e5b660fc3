"""`offrl bench speed`: gradient updates per second per agent and seed count, on synthetic data.

Every variant (each agent at each seed count, and d3rlpy's agent of the same name when d3rlpy is
importable) is timed round-robin in one process: round r times U updates of each variant in turn,
so a ratio is taken between timings of the same moment. On a shared machine single timings move by
±30%; the paired per-round ratios are what to compare.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import platform
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from offrl.agent import Agent, Spec, get_agent, resolve_config
from offrl.buffer import Buffer
from offrl.data import Dataset
from offrl.fast import check_mode, update_step
from offrl.nets import MLP, Critic, target
from offrl.utils import check_device

# d3rlpy config classes of the agents both libraries have (their defaults match the papers too; the
# encoders are set to the offrl agent's hidden sizes, so both sides do the same matmuls).
D3RLPY_PEERS = {"td3_bc": "TD3PlusBCConfig", "iql": "IQLConfig", "bc": "BCConfig", "sac": "SACConfig",
                "awac": "AWACConfig", "cql": "CQLConfig", "cal_ql": "CalQLConfig", "rebrac": "ReBRACConfig",
                "td3": "TD3Config"}


PROFILE_ROUNDS = 5           # profiled rounds per variant with --profile (the median one is reported)
TABLE_RUNS = 9 * 5            # 9 locomotion datasets × 5 seeds
TABLE_UPDATES = 1_000_000


@dataclass
class Variant:
    name: str
    agent: str
    seeds: int
    step: Callable[[], object]
    rates: list[float]
    mode: str = "none"                  # offrl.fast mode: none (eager) | compile | cuda-graphs
    library: str = "offrl"              # whose update this is: offrl | d3rlpy
    critics: str = "batched"            # offrl ensembles: batched (one member-axis module) | looped (N modules in turn)
    precision: str = "highest"          # float32 matmul precision its updates run at (RunConfig.matmul_precision)
    warmup_s: float | None = None       # wall time of the warm-up updates (includes compiling)
    flops: float | None = None          # FLOPs per update, mean over FLOP_UPDATES (FlopCounterMode)
    peak_bytes: int | None = None       # peak tensor memory allocated during one update, above what was live
    profile: dict | None = None         # where an update's time goes (`profile_step`; with --profile)


# Updates the FLOP count averages over: agents with a delayed actor (TD3+BC: every 2nd update) do
# different work on different updates, so one update's count would overstate (or understate) the mean.
FLOP_UPDATES = 12


def count_flops(step: Callable[[], object], calls: int = FLOP_UPDATES) -> float:
    """FLOPs per call averaged over `calls` calls, counted per operator (matmuls, convolutions, SDPA) with
    torch.utils.flop_counter's formulas: what an update asks of the device's matmul units; element-wise
    work is not counted. A dispatch mode of our own rather than FlopCounterMode, whose module hooks
    fail under autograd.grad of a leaf (EDAC's action-gradients)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += formula(*args, **kwargs, out_val=out)
            return out

    with Counter() as counter:
        for _ in range(calls):
            step()
    return float(counter.total) / calls


@contextlib.contextmanager
def _quiet_profile(**kw: Any) -> Iterator[Any]:
    """torch.profiler.profile(**kw) with file descriptor 2 silenced: kineto logs start and stop there."""
    from torch.profiler import profile

    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            with profile(**kw) as prof:
                yield prof
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(step: Callable[[], object], device: str) -> int:
    """Peak bytes of tensors allocated during one call above those already live. CUDA: the caching
    allocator's peak statistic; CPU: the running sum of torch's allocation events (profiler)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    from torch.profiler import ProfilerActivity

    with _quiet_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Each operator event carries the bytes it allocated itself; frees are "[memory]" events with
    # negative sizes. Replayed in time order, their running sum peaks at the update's peak.
    live = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return int(peak)


# Operators whose self time is matrix-multiply work (batched member-axis layers use baddbmm/bmm), and
# the name fragments of GPU matmul kernels (cuBLAS/CUTLASS GEMMs).
MATMUL_OPS = frozenset({"mm", "bmm", "baddbmm", "addmm", "addbmm", "mv", "addmv", "dot"})
MATMUL_KERNELS = ("gemm", "cutlass", "cublas", "matmul", "xmma")


def _op_name(key: str) -> str:
    """Profiler event names made readable: compiled graphs and regions lose their hashes and numbers."""
    if key.startswith("## Call CompiledFxGraph"):
        return "compiled graphs"
    if key.startswith("Torch-Compiled Region"):
        return "compiled-region entry"
    if key.startswith("Optimizer."):           # e.g. Optimizer.step#CachedAdam.step: the Python around the kernel
        return key.split("#")[-1] + " (Python)"
    return key.removeprefix("aten::")


def split_times(rows: list[tuple[str, bool, float, float]], updates: int, wall_s: float, cuda: bool) -> dict:
    """Matmul vs other time per update (ms) from profiler rows (name, is a device kernel, self CPU µs,
    self device µs). CPU: operators' self CPU time. CUDA: kernel rows only — an operator row's self
    device time repeats its kernels' — split by kernel name, plus `idle_ms`, the wall time with no
    kernel running (launch-bound when large); kernel names are cut to 60 characters."""
    times: dict[str, float] = {}
    for name, is_kernel, self_cpu, self_device in rows:
        if cuda != is_kernel:
            continue
        key = name[:60] if cuda else _op_name(name)
        times[key] = times.get(key, 0.0) + (self_device if cuda else self_cpu) / 1e3 / updates
    is_matmul = ((lambda k: any(f in k.lower() for f in MATMUL_KERNELS)) if cuda else (lambda k: k in MATMUL_OPS))
    matmul = sum(t for k, t in times.items() if is_matmul(k))
    other = {k: t for k, t in times.items() if not is_matmul(k) and t > 0}
    out = {"matmul_ms": matmul, "other_ms": sum(other.values()),
           "top": sorted(other.items(), key=lambda kv: -kv[1])[:5]}
    if cuda:
        out["idle_ms"] = max(0.0, 1e3 * wall_s / updates - matmul - out["other_ms"])
    return out


def profile_step(step: Callable[[], object], device: str, updates: int) -> dict:
    """Where `updates` calls' time goes, from torch's profiler (`split_times`). On the CPU the profiler
    adds a little to every operator's time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity

    cuda = device.startswith("cuda")
    with _quiet_profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        t = time.perf_counter()
        for _ in range(updates):
            step()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    rows = [(e.key, e.device_type != DeviceType.CPU, e.self_cpu_time_total, e.self_device_time_total)
            for e in prof.key_averages()]
    return split_times(rows, updates, wall, cuda)


def matmul_rate(device: str, n: int = 2048, repeats: int = 10) -> float:
    """The device's measured float32 matmul rate (FLOP/s) on n×n GEMMs: the ceiling updates are compared to."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t)


def synthetic_dataset(n: int, obs_dim: int, act_dim: int, seed: int = 0) -> Dataset:
    """n transitions in 1000-step episodes: Gaussian observations, uniform actions, Gaussian rewards."""
    rng = np.random.default_rng(seed)
    episode = np.arange(n) // 1000
    timeouts = np.zeros(n, bool)
    timeouts[999::1000] = True
    timeouts[-1] = True
    return Dataset(rng.normal(size=(n, obs_dim)).astype(np.float32),
                   rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
                   rng.normal(size=n).astype(np.float32), rng.normal(size=(n, obs_dim)).astype(np.float32),
                   np.zeros(n, bool), timeouts, episode, name="synthetic")


class LoopedCritic(nn.Module):
    """The N critics of a member-axis Critic (members (S, N)) as N separate modules called one after
    another: the loop the member axis replaces. Same weights and outputs [S, N, B] as the ensemble."""

    def __init__(self, ensemble: Critic):
        super().__init__()
        S, N = ensemble.members
        self.members = (S, N)
        self.critics = nn.ModuleList()
        for i in range(N):
            one = copy.deepcopy(ensemble)
            for module in one.modules():
                if hasattr(module, "members"):
                    module.members = (S, 1)
            for p in one.parameters():
                p.data = p.data[:, i:i + 1].clone()
            self.critics.append(one)

    def forward(self, obs: Tensor, action: Tensor, ensemble: slice | None = None) -> Tensor:
        pick = lambda x, i: x[:, i] if x.dim() == 4 else x          # inputs with a member axis [S, N, B, F]
        members = range(self.members[1])[ensemble] if ensemble is not None else range(self.members[1])
        return torch.cat([self.critics[i](pick(obs, i), pick(action, i)) for i in members], 1)


def loop_critics(agent: Agent) -> Agent:
    """`agent` with its ensemble critic (and target) replaced by a LoopedCritic, and a fresh critic optimiser."""
    agent.critic = LoopedCritic(agent.critic)
    agent.critic_target = target(agent.critic)
    agent.optimizer("critic", agent.critic.parameters(), agent.cfg.critic_lr)
    return agent


def _d3rlpy_variant(agent: str, data: Dataset, batch: int, device: str, ours: Agent) -> Variant | None:
    """d3rlpy's agent of the same name, its encoders sized as the offrl agent `ours`'s actor, critic
    and value MLPs (hidden widths and LayerNorm), so both sides multiply the same matrices."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import d3rlpy
            ds = d3rlpy.dataset.MDPDataset(data.observations, data.actions, data.rewards,
                                           data.terminals.astype(np.float32), data.timeouts.astype(np.float32))
            config_cls = getattr(d3rlpy.algos, D3RLPY_PEERS[agent])
            encoders = {}
            for key, net in (("encoder_factory", "actor"), ("actor_encoder_factory", "actor"),
                             ("critic_encoder_factory", "critic"), ("value_encoder_factory", "value")):
                mlp = getattr(getattr(ours, net, None), "net", None)
                if key in config_cls.__dataclass_fields__ and isinstance(mlp, MLP):
                    encoders[key] = d3rlpy.models.VectorEncoderFactory(
                        [layer.out_features for layer in mlp.layers[:-1]], use_layer_norm=bool(mlp.layernorm))
            algo = config_cls(batch_size=batch, **encoders).create(device="cuda:0" if device.startswith("cuda") else "cpu:0")
            algo.build_with_dataset(ds)
    except ImportError:
        return None
    return Variant(f"d3rlpy {d3rlpy.__version__} {agent}", agent, 1,
                   lambda: algo.update(ds.sample_transition_batch(batch)), [], library="d3rlpy")


def at_precision(step: Callable[[], object], precision: str) -> Callable[[], object]:
    """`step` run with float32 matmuls at `precision`, the process's setting restored after (so variants
    timed round-robin each keep their own)."""
    def run() -> object:
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(precision)
        try:
            return step()
        finally:
            torch.set_float32_matmul_precision(before)
    return run


def run_speed(agents: list[str], seeds: list[int], batch: int = 256, obs_dim: int = 17, act_dim: int = 6,
              rounds: int = 15, updates: int = 40, warmup: int = 20, device: str = "cpu",
              d3rlpy: bool = True, transitions: int = 100_000,
              modes: list[str] = ["none"], profile: bool = False,
              precisions: list[str] = ["highest"]) -> tuple[list[Variant], dict]:
    """Time every variant; returns the variants with their per-round rates and the environment.
    `modes`: offrl.fast modes to time for every offrl agent and seed count (eager is "none").
    `precisions`: float32 matmul precisions to time every eager offrl agent and seed count at (exact
    float32, "highest", is always timed: the twin the others are compared with).
    `profile`: after the timed rounds, profile `updates` updates of every offrl variant, round-robin
    over PROFILE_ROUNDS rounds, and keep the round with the median matmul time."""
    modes = ["none"] + [m for m in modes if m != "none"]     # the eager twin is always timed
    check_device(device)
    for mode in modes:
        check_mode(mode, device)
    data = synthetic_dataset(transitions, obs_dim, act_dim)
    spec = Spec.from_dataset(data, "locomotion")
    variants: list[Variant] = []
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for name in agents:
        cls = get_agent(name)
        for S in seeds:
            for mode in modes:
                torch.manual_seed(0)
                agent = cls(spec, resolve_config(cls, "locomotion", False, {"batch_size": batch}), S, device)
                suffix = "" if mode == "none" else f" {mode}"
                buffer = Buffer(data, S, device, columns=agent.columns(), gamma=agent.cfg.gamma)
                step = update_step(agent, buffer, batch, mode)
                variants.append(Variant(f"offrl {name} ×{S}{suffix}", name, S, at_precision(step, "highest"), [], mode))
                if mode == "none":
                    variants += [Variant(f"offrl {name} ×{S} {p} matmuls", name, S, at_precision(step, p), [],
                                         precision=p) for p in precisions if p != "highest"]
                critic = getattr(agent, "critic", None)
                if mode == "none" and isinstance(critic, Critic) and critic.members[1] > 2:   # an ensemble: time its loop too
                    torch.manual_seed(0)
                    looped = loop_critics(cls(spec, agent.cfg, S, device))
                    variants.append(Variant(f"offrl {name} ×{S} looped critics", name, S,
                                            update_step(looped, buffer, batch), [], critics="looped"))
        if d3rlpy and name in D3RLPY_PEERS:
            peer = _d3rlpy_variant(name, data, batch, device, agent)
            if peer is not None:
                variants.append(peer)
    for v in variants:
        sync()
        t = time.perf_counter()
        for _ in range(warmup):
            v.step()
        sync()
        v.warmup_s = time.perf_counter() - t
        # A compiled step does the same math; its FLOPs are those of its eager twin, timed before it
        # (the counter cannot see inside compiled graphs). d3rlpy's updates are eager and counted too.
        v.flops = count_flops(v.step) if v.mode == "none" else next(
            w.flops for w in variants if w.agent == v.agent and w.seeds == v.seeds and w.mode == "none"
            and w.library == "offrl" and w.precision == "highest")
        v.peak_bytes = peak_memory(v.step, device)
    for _ in range(rounds):
        for v in variants:
            sync()
            t = time.perf_counter()
            for _ in range(updates):
                v.step()
            sync()
            v.rates.append(updates / (time.perf_counter() - t))
    if profile:
        ours = [v for v in variants if v.library == "offrl"]
        runs: dict[str, list[dict]] = {v.name: [] for v in ours}
        for _ in range(PROFILE_ROUNDS):
            for v in ours:
                runs[v.name].append(profile_step(v.step, device, updates))
        for v in ours:
            v.profile = sorted(runs[v.name], key=lambda r: r["matmul_ms"])[PROFILE_ROUNDS // 2]
    env = {"device": device if device == "cpu" else torch.cuda.get_device_name(), "torch": torch.__version__,
           "matmul_flops": matmul_rate(device),
           "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "batch": batch, "obs_dim": obs_dim, "act_dim": act_dim, "rounds": rounds, "updates": updates,
           "warmup": warmup}
    return variants, env


def _paired(a: Variant, b: Variant) -> float:
    return float(np.median(np.array(a.rates) / np.array(b.rates)))


def speed_table(variants: list[Variant], env: dict) -> str:
    """Markdown: median updates/s, seed-updates/s, and paired ratios to 1 seed, to eager and to d3rlpy."""
    lines = [f"device {env['device']}, torch {env['torch']}, {env['threads']} threads, batch {env['batch']}, "
             f"obs {env['obs_dim']} / act {env['act_dim']}, 256×256 nets; median of {env['rounds']} round-robin "
             f"rounds of {env['updates']} updates; ratios are medians of per-round ratios. Warm-up s: wall time of "
             f"the first {env['warmup']} updates (compiling included for compiled variants). GFLOP/update: counted "
             f"matmul FLOPs per update (mean over {FLOP_UPDATES} updates, so a delayed actor step counts at its "
             f"rate); % of matmul rate: achieved FLOP/s over the device's measured float32 "
             f"2048² GEMM rate ({env['matmul_flops'] / 1e9:.0f} GFLOP/s); peak MB: tensor memory one update "
             "allocates above what is live. × vs looped critics: an ensemble agent's member-axis critics against "
             "the same agent calling its N critics as N modules in turn (`LoopedCritic`). × vs eager: against the "
             "same agent and seeds run eagerly with exact float32 matmuls (for compiled variants and those at a "
             "reduced matmul precision).", "",
             "| variant | updates/s | seed-updates/s | × vs 1 seed (seed-updates) | × vs eager | × vs d3rlpy (per seed) "
             "| × vs looped critics | warm-up s | GFLOP/update | % of matmul rate | peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        ours = v.library == "offrl"
        one = next((w for w in variants if w.agent == v.agent and w.seeds == 1 and w.mode == v.mode
                    and w.library == "offrl" and w.critics == v.critics and w.precision == v.precision), None)
        eager = next((w for w in variants if w.agent == v.agent and w.seeds == v.seeds and w.mode == "none"
                      and w.library == "offrl" and w.critics == "batched" and w.precision == "highest"), None)
        peer = next((w for w in variants if w.agent == v.agent and w.library == "d3rlpy"), None)
        looped = next((w for w in variants if w.agent == v.agent and w.seeds == v.seeds and w.critics == "looped"), None)
        exact = v.precision == "highest"      # d3rlpy and the looped critics run at exact float32
        vs_loop = f"{_paired(v, looped):.2f}" if looped is not None and ours and v.critics == "batched" and exact else ""
        u = float(np.median(v.rates))
        scale = f"{v.seeds * _paired(v, one):.2f}" if one is not None and ours and v is not one else ""
        vs_eager = f"{_paired(v, eager):.2f}" if eager is not None and ours and v is not eager else ""
        vs = f"{v.seeds * _paired(v, peer):.2f}" if peer is not None and ours and exact else ""
        if vs and v.seeds > 1:
            vs = f"{vs} (aggregate)"
        warm = f"{v.warmup_s:.1f}" if v.warmup_s is not None else ""
        flops = f"{v.flops / 1e9:.3f}" if v.flops is not None else ""
        frac = f"{100 * v.flops * u / env['matmul_flops']:.1f}" if v.flops is not None else ""
        mem = f"{v.peak_bytes / 2**20:.1f}" if v.peak_bytes is not None else ""
        lines.append(f"| {v.name} | {u:.1f} | {u * v.seeds:.1f} | {scale} | {vs_eager} | {vs} | {vs_loop} | {warm} "
                     f"| {flops} | {frac} | {mem} |")
    lines += ["", f"Device-hours for a full locomotion table ({TABLE_RUNS} dataset × seed runs of {TABLE_UPDATES:,} "
              "updates) at the fastest measured seed-updates/s per agent with exact float32 matmuls (updates only; "
              "evaluation excluded):", ""]
    for agent in dict.fromkeys(v.agent for v in variants if v.library == "offrl"):
        best = max((v for v in variants if v.agent == agent and v.library == "offrl" and v.precision == "highest"),
                   key=lambda v: float(np.median(v.rates)) * v.seeds)
        rate = float(np.median(best.rates)) * best.seeds
        lines.append(f"- {agent}: {TABLE_RUNS * TABLE_UPDATES / rate / 3600:.1f} h ({best.name}, {rate:.0f} seed-updates/s)")
    if any(v.profile for v in variants):
        lines += ["", profile_table(variants, env)]
    return "\n".join(lines)


def profile_table(variants: list[Variant], env: dict) -> str:
    """Markdown: where an update's time goes, per profiled variant (see `profile_step`)."""
    cuda = env["device"] != "cpu"
    unit = "kernel" if cuda else "self CPU"
    lines = ["## Where the time goes", "",
             f"torch profiler, {env['updates']} updates per variant in each of {PROFILE_ROUNDS} round-robin rounds, "
             f"the round with the median matmul time; ms per update of operator {unit} time. ms/update: the timed "
             "rounds above (median). matmul GFLOP/s: counted FLOPs over the profiled matmul time, i.e. the rate "
             "the update's own products run at in place." + (" idle: wall time with no kernel running." if cuda else ""),
             "", "| variant | ms/update | matmul ms | matmul GFLOP/s | other ops ms |" + (" idle ms |" if cuda else "")
             + " costliest other operators (ms) |",
             "|---|---|---|---|---|" + ("---|" if cuda else "") + "---|"]
    for v in variants:
        if not v.profile:
            continue
        p = v.profile
        rate = f"{v.flops / (p['matmul_ms'] / 1e3) / 1e9:.0f}" if v.flops and p["matmul_ms"] > 0 else ""
        top = ", ".join(f"{k} {t:.2f}" for k, t in p["top"])
        idle = f" {p['idle_ms']:.2f} |" if cuda else ""
        lines.append(f"| {v.name} | {1e3 / float(np.median(v.rates)):.2f} | {p['matmul_ms']:.2f} | {rate} "
                     f"| {p['other_ms']:.2f} |{idle} {top} |")
    return "\n".join(lines)

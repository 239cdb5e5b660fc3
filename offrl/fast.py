"""Update steps, eager or compiled: the speed flags of `offrl train` and `offrl bench speed`.

A step is one gradient update of every seed: `agent.update(buffer.sample(B))`, sampling included.

- `none`: eager PyTorch (the default; on CPU it is the fastest, see results/speed.md).
- `compile`: `torch.compile` of the whole step. Dynamo traces sampling, the losses and the Polyak
  updates; every `Agent.minimize` stays eager (it is `torch.compiler.disable`d), so the backward
  pass runs the graphs AOTAutograd compiled for the forward, and the optimiser runs its single
  fused Adam kernel. Two settings make a compiled run reproduce an eager one to float tolerance
  (the CPU equivalence test checks it for every agent):
  `fallback_random` (random draws inside compiled graphs use the eager RNG streams, so noise and
  batch indices are the same numbers), and unspecialised integer attributes on modules (the update
  counter `num_updates` becomes symbolic, so branches such as `num_updates % policy_freq` compile
  once per branch instead of once per value).
- `cuda-graphs`: the same with `mode="reduce-overhead"`, which replays each compiled graph as a CUDA
  graph (one launch instead of hundreds of kernels per graph). CUDA only.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from offrl import OffrlError
from offrl.agent import Agent
from offrl.buffer import Buffer

MODES = ("none", "compile", "cuda-graphs")


def check_mode(mode: str, device: str | torch.device) -> None:
    """Raise before any work if `mode` is unknown or does not fit the device."""
    if mode not in MODES:
        raise OffrlError(f"unknown speed mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "cuda-graphs" and torch.device(device).type != "cuda":
        raise OffrlError(f"--cuda-graphs needs a CUDA device (got {device!r}); use --device cuda, or --compile on CPU")


def update_step(agent: Agent, buffer: Buffer, batch_size: int, mode: str = "none") -> Callable[[], dict[str, Tensor]]:
    """A function doing one update of all seeds (metrics [S] per name), compiled as `mode` says."""
    check_mode(mode, agent.device)

    def step() -> dict[str, Tensor]:
        return agent.update(buffer.sample(batch_size))

    if mode == "none":
        return step
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    dynamo_config.allow_unspec_int_on_nn_module = True
    return torch.compile(step, mode="reduce-overhead" if mode == "cuda-graphs" else None)

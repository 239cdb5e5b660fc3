"""Cal-QL (Nakamoto, Zhai, Singh, Sobol Mark, Ma, Finn, Kumar & Levine, 2023): CQL whose pushed-down values
of policy actions are first lower-bounded by the Monte-Carlo return of the data, so that the critic stays
calibrated (≥ the behaviour's value) and online fine-tuning does not start with an unlearning dip."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from offrl.agent import register
from offrl.buffer import Column, Rows, return_to_go
from offrl.algorithms.cql import CQL, CQLConfig


@dataclass
class CalQLConfig(CQLConfig):
    sparse_reward: bool = False        # an episode whose rewards are all 0 is worth r'(0)/(1−γ), as if it failed forever (antmaze)


@register("cal_ql")
class CalQL(CQL):
    """Calibrated Q-Learning, offline and offline-to-online. Faithfulness: CORL's cal_ql.py and its configs:
    CQL's update with max(Q(s, a_π), G_MC(s)) for the actions of π(s) and π(s') (G_MC: discounted
    return-to-go of the transformed rewards, an all-failure episode r_fail/(1−γ) with `sparse_reward`);
    O2O batches half offline, half online. Online rows are bounded once their episode ends (the column
    holds −inf, i.e. no bound, before), where CORL adds whole episodes to its buffer at their end.
    Locomotion uses CQL's locomotion settings (CORL ships Cal-QL configs for antmaze and adroit only)."""
    Config = CalQLConfig
    DEFAULTS = {
        "antmaze": {**CQL.DEFAULTS["antmaze"], "sparse_reward": True},
        "o2o": {"buffer_mixing": "fixed", "offline_fraction": 0.5},
    }

    def columns(self):
        return (Column("mc_return", self.mc_return, float("-inf"),
                       "Monte-Carlo return-to-go of the transformed rewards (Cal-QL's lower bound)"),)

    def mc_return(self, rows: Rows) -> np.ndarray:
        """G_t = Σ_{k≥t} γ^{k−t} r'_k per episode [N]; with `sparse_reward`, r'(0)/(1−γ) where all r are 0."""
        scale, shift = (self.reward_scale, self.reward_shift) if self.cfg.reward_transform != "none" else (1.0, 0.0)
        transformed = Rows(rows.reward * scale + shift, rows.step, rows.episode, rows.terminal, rows.gamma)
        out = return_to_go(transformed)
        if self.cfg.sparse_reward:
            ids, inverse = np.unique(rows.episode, return_inverse=True)
            failed = np.bincount(inverse, weights=(rows.reward != 0).astype(np.float64), minlength=len(ids)) == 0
            out[failed[inverse]] = shift / (1.0 - rows.gamma)
        return out

    def bound_policy_q(self, q_ood, b):
        lower = b.mc_return[:, None, None, :, None]                                  # [S, 1, 1, B, 1]
        policy_q = q_ood[:, :, 1:]                                                    # π(s) and π(s') samples
        rate = (policy_q < lower).float().mean((1, 2, 3, 4))                          # [S]
        return torch.cat([q_ood[:, :, :1], torch.maximum(policy_q, lower)], 2), {"bound_rate": rate}

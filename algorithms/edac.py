"""EDAC (An, Moon, Kim & Song, 2021): SAC-N plus a term that decorrelates the critics' action-gradients,
so that a small ensemble penalises out-of-distribution actions as a large one does."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.agent import register
from offrl.fields import NonNegative
from offrl.algorithms.sac_n import SACN, SACNConfig


def gradient_diversity(q: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Σ_{i≠j} cos(∇_a Q_i, ∇_a Q_j) / (N − 1), averaged over the batch, per seed [S]; q [S, N, B] computed
    from `action` [S, N, B, A] (each member its own copy of the dataset action). The gradient keeps its
    graph, so the term trains the critics. N = 1: 0."""
    N = q.shape[1]
    grad = torch.autograd.grad(q.sum(), action, create_graph=True)[0]                        # [S, N, B, A]
    grad = grad / (grad.norm(dim=-1, keepdim=True) + 1e-10)
    cos = torch.einsum("snba,smba->sbnm", grad, grad)                                         # [S, B, N, N]
    off_diagonal = cos.sum((-1, -2)) - cos.diagonal(dim1=-2, dim2=-1).sum(-1)               # [S, B]
    return off_diagonal.mean(1) / max(N - 1, 1)


@dataclass
class EDACConfig(SACNConfig):
    eta: NonNegative = 1.0             # η: weight of the gradient-diversity term (per dataset: DATASET_DEFAULTS)


@register("edac")
class EDAC(SACN):
    """Ensemble-Diversified Actor-Critic, offline and offline-to-online. Faithfulness: CORL's edac.py (SAC-N's
    update, plus η·diversity in the critic loss, computed for all N critics of every seed in one autograd
    call); N and η per dataset from CORL's configs (DATASET_DEFAULTS; N = 10, η = 1 elsewhere);
    deviations: as sac_n."""
    Config = EDACConfig
    # (N, η) per D4RL dataset, CORL's configs/offline/edac (the paper's choices).
    DATASET_DEFAULTS = {"halfcheetah-medium*": {"num_critics": 10, "eta": 1.0},
                        "walker2d-medium*": {"num_critics": 10, "eta": 1.0},
                        "hopper-medium*": {"num_critics": 50, "eta": 1.0},
                        "halfcheetah-medium-expert": {"eta": 5.0}, "walker2d-medium-expert": {"eta": 5.0}}

    @torch.compiler.disable     # autograd.grad of Q with respect to a leaf action input: eager under --compile
    def critic_values(self, b):
        action = b.action.unsqueeze(1).expand(-1, self.cfg.num_critics, -1, -1).detach().requires_grad_(True)
        q = self.critic(b.obs, action)                                                       # [S, N, B]
        return q, {"diversity_loss": self.cfg.eta * gradient_diversity(q, action)}

"""SAC-N (An, Moon, Kim & Song, 2021): SAC whose clipped double-Q becomes the minimum over N critics; a
large N alone penalises out-of-distribution actions through the ensemble's spread."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from offrl.agent import Agent, AgentConfig, register
from offrl.fields import AtLeastOne, Positive, Sizes, Unit
from offrl.nets import Critic, TanhGaussianActor, edac_init, per_seed_mean, soft_update, target


@dataclass
class SACNConfig(AgentConfig):
    num_critics: AtLeastOne = 10       # N: critics per seed (per dataset: DATASET_DEFAULTS)
    actor_lr: Positive = 3e-4          # Adam learning rate of the policy
    critic_lr: Positive = 3e-4         # Adam learning rate of the N critics
    alpha_lr: Positive = 3e-4          # Adam learning rate of log α
    tau: Unit = 0.005                  # Polyak rate of the target critics
    log_std_min: float = -5.0          # clip of the policy's log σ (CORL)
    log_std_max: float = 2.0
    hidden: Sizes = (256, 256, 256)    # policy and critic MLPs (CORL: 3×256)


@register("sac_n")
class SACN(Agent):
    """SAC-N, offline and offline-to-online. Faithfulness: CORL's sac_n.py: update order α → actor →
    critics (the EDAC paper's), α from its own policy sample, N critics in one member-axis module, CORL's
    init (hidden biases 0.1, output layers U(±3e-3) critics / U(±1e-3) policy); N per dataset from CORL's
    configs (DATASET_DEFAULTS; 10 elsewhere). Deviations: the tanh log-det is exact (CORL adds 1e-6
    inside the log)."""
    Config = SACNConfig
    # N per D4RL dataset, CORL's configs/offline/sac_n (the paper's choices: hopper needs hundreds).
    DATASET_DEFAULTS = {"halfcheetah-medium*": {"num_critics": 10}, "walker2d-medium*": {"num_critics": 20},
                        "hopper-medium": {"num_critics": 500}, "hopper-medium-replay": {"num_critics": 200},
                        "hopper-medium-expert": {"num_critics": 200}}

    def __init__(self, spec, cfg: SACNConfig, seeds, device="cpu"):
        super().__init__(spec, cfg, seeds, device)
        O, A = spec.obs_dim, spec.act_dim
        self.actor = TanhGaussianActor(O, A, (seeds,), cfg.hidden, cfg.log_std_min, cfg.log_std_max)
        self.critic = Critic(O, A, (seeds, cfg.num_critics), cfg.hidden)     # N critics per seed, one module
        edac_init(self.actor.net, 1e-3)
        edac_init(self.critic.net, 3e-3)
        self.critic_target = target(self.critic)
        self.log_alpha = nn.Parameter(torch.zeros(seeds))
        self.target_entropy = -float(A)
        self.optimizer("actor", self.actor.parameters(), cfg.actor_lr)
        self.optimizer("critic", self.critic.parameters(), cfg.critic_lr)
        self.optimizer("alpha", [self.log_alpha], cfg.alpha_lr)
        self.to(self.device)

    def critic_values(self, b) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Q [S, N, B] at the dataset actions, and extra critic losses [S] by name (SAC-N: none; EDAC adds
        its gradient-diversity term)."""
        return self.critic(b.obs, b.action), {}

    def update(self, b):
        cfg, b = self.cfg, self.preprocess(b)
        # 1. α on its own policy sample
        with torch.no_grad():
            _, logp = self.actor(b.obs)
        alpha_loss = -self.log_alpha * (logp + self.target_entropy).mean(1)                  # [S]
        self.minimize("alpha", alpha_loss)
        alpha = self.log_alpha.detach().exp()[:, None]                                       # [S, 1]
        # 2. the policy against the minimum of the N critics
        a, logp = self.actor(b.obs)
        q_pi = self.critic(b.obs, a)                                                         # [S, N, B]
        actor_loss = per_seed_mean(alpha * logp - q_pi.min(1).values)
        self.minimize("actor", actor_loss)
        # 3. the critics onto r + γ (min_i Q_target,i(s', a') − α log π(a'|s'))
        with torch.no_grad():
            next_a, next_logp = self.actor(b.next_obs)
            q_next = self.critic_target(b.next_obs, next_a).min(1).values - alpha * next_logp
            y = b.reward + cfg.gamma * b.not_done * q_next                                   # [S, B]
        q, penalties = self.critic_values(b)                                                 # [S, N, B]
        critic_loss = ((q - y[:, None]) ** 2).mean(-1).sum(1) + sum(penalties.values())
        self.minimize("critic", critic_loss)
        soft_update(self.critic_target, self.critic, cfg.tau)
        self.num_updates += 1
        return {**{k: v.detach() for k, v in penalties.items()}, "critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
                "alpha_loss": alpha_loss.detach(), "alpha": alpha[:, 0], "entropy": -logp.detach().mean(1),
                "q": q.detach().mean((1, 2)), "q_policy_std": q_pi.detach().std(1).mean(1)}

    def action_log_likelihood(self, obs, action):
        """log π(a|s) [S, B] of the tanh-Gaussian policy (actions clipped to ±0.999 before atanh)."""
        return self.actor.log_prob(self.normalize(obs), action)

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.actor(self.normalize(obs), deterministic)[0]

"""Policy-guided diffusion (Jackson et al., RLC 2024): trajectory windows, the temporal U-Net, EDM training
and the guided stochastic Heun sampler."""
from offrl.diffusion.edm import Diffusion, EDMConfig, churn, guidance_weight, preconditioning, sigma_schedule
from offrl.diffusion.windows import Normalizer, Windows, decode, make_windows, timestep_vectors, window_starts

__all__ = ["Diffusion", "EDMConfig", "churn", "guidance_weight", "preconditioning", "sigma_schedule", "Normalizer",
           "Windows", "decode", "make_windows", "timestep_vectors", "window_starts"]

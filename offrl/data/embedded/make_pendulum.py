"""Regenerate the embedded pendulum datasets: `python -m offrl.data.embedded.make_pendulum`.

scripted-mixed-small: 24 episodes, noise σ ∈ {1.5, 2.5, 3.5} (time limit 600): both terminations and
truncations. scripted-noisy-small: 30 episodes, σ ∈ {2.5, 3.5, 4.5}: mostly early falls.
Reference scores on the evaluation env (InvertedPendulum-v5, 1000-step limit): ref_min = a uniform
random policy over 100 episodes, ref_max = 1000, the noiseless controller's return.

riskyinvertedpendulum/scripted-two-strategies: 240 episodes of offrl/RiskyInvertedPendulum-v5 (200-step
limit) from `two_strategy_episodes`: the controller balancing safely left of the risk region, inside it,
or switching between the two, with noise σ ∈ {0.5, 1, 2}. ref_min = a uniform random policy on the risky
env (100 episodes), ref_max = 200, the noiseless safe controller's return (balanced to the time limit,
never in the region).
"""
import shutil
from pathlib import Path

from offrl.data.embedded.make_locomotion import compact_hdf5
from offrl.data.minari_io import write_minari
from offrl.data.scripted import pendulum_episodes, random_policy_return, two_strategy_episodes

ROOT = Path(__file__).parent / "minari"
SETS = {
    "offrl/invertedpendulum/scripted-mixed-small-v0": dict(n=24, seed=0, noise_levels=(1.5, 2.5, 3.5), max_steps=600),
    "offrl/invertedpendulum/scripted-noisy-small-v0": dict(n=30, seed=1, noise_levels=(2.5, 3.5, 4.5), max_steps=600),
}

RISKY = "offrl/riskyinvertedpendulum/scripted-two-strategies-v0"
RISKY_ENV = "offrl/RiskyInvertedPendulum-v5"


def make_risky() -> Path:
    shutil.rmtree(ROOT / RISKY, ignore_errors=True)
    command = "python -m offrl.data.embedded.make_pendulum"
    folder = write_minari(RISKY, two_strategy_episodes(240, seed=0), env_id=RISKY_ENV,
                          ref_min_score=random_policy_return(env_id=RISKY_ENV), ref_max_score=200.0,
                          algorithm_name="scripted PD controller, safe / risky / switching set points + Gaussian noise",
                          root=ROOT, description=command, extra_metadata={"offrl_command": command})
    compact_hdf5(folder / "data" / "main_data.hdf5")    # Minari chunks every small array: 5.4 MB → ~1 MB
    return folder


if __name__ == "__main__":
    print(make_risky())
    ref_min = random_policy_return()
    for ds_id, kw in SETS.items():
        shutil.rmtree(ROOT / ds_id, ignore_errors=True)
        folder = write_minari(ds_id, pendulum_episodes(**kw), env_id="InvertedPendulum-v5", ref_min_score=ref_min,
                              ref_max_score=1000.0, algorithm_name="scripted PD controller + Gaussian noise",
                              root=ROOT, description="python -m offrl.data.embedded.make_pendulum",
                              extra_metadata={"offrl_command": "python -m offrl.data.embedded.make_pendulum"})
        print(folder)

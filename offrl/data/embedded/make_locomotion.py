"""Regenerate the embedded locomotion subsets from the zoo:
`python -m offrl.data.embedded.make_locomotion --root ZOO_ROOT`.

ZOO_ROOT holds the `standard` levels made by `offrl datasets make ENV --budget standard --from-policies
shipped`. Each subset is whole episodes of its source level drawn in a seeded random order (every
behaviour snapshot of a replay level is represented, not just the first ones) until exactly
TRANSITIONS steps; the last episode is cut there and marked truncated. Reference scores, env and the
source's metadata are kept; the subset's own content hash is recorded.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import h5py
import numpy as np

from offrl.data import load_dataset
from offrl.data.dataset import Dataset, Episode
from offrl.data.minari_io import write_minari

ROOT = Path(__file__).parent / "minari"
TRANSITIONS = 50_000
SUBSETS = {   # embedded id: source id in the zoo
    "offrl/hopper/medium-replay-small-v0": "offrl/hopper/medium-replay-v0",
    "offrl/halfcheetah/medium-small-v0": "offrl/halfcheetah/medium-v0",
}


def episode_subset(episodes: list[Episode], transitions: int, seed: int = 0) -> list[Episode]:
    """Whole episodes in a seeded random order until exactly `transitions` steps (the last one cut)."""
    order = np.random.default_rng(seed).permutation(len(episodes))
    picked, total = [], 0
    for i in order:
        ep = episodes[i].cut(transitions - total)
        picked.append(ep)
        total += len(ep.actions)
        if total == transitions:
            return picked
    raise ValueError(f"the source has only {total} transitions, fewer than {transitions}")


def compact_hdf5(path: Path) -> None:
    """Rewrite a Minari hdf5 file with contiguous (unchunked) arrays: Minari writes every per-episode
    array chunked, and for hundreds of short episodes the chunk indexes outweigh the data (hopper
    medium-replay's 50k transitions: 12 MB chunked). Same groups, arrays and attributes; h5py and Minari
    read both layouts alike."""
    tmp = path.with_suffix(".compact.hdf5")
    with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        def copy(group_src: h5py.Group, group_dst: h5py.Group) -> None:
            group_dst.attrs.update(dict(group_src.attrs))
            for key, item in group_src.items():
                if isinstance(item, h5py.Group):
                    copy(item, group_dst.create_group(key))
                else:
                    group_dst.create_dataset(key, data=item[()]).attrs.update(dict(item.attrs))
        copy(src, dst)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="Minari root holding the zoo's standard levels")
    args = parser.parse_args()
    for ds_id, source_id in SUBSETS.items():
        source = load_dataset(str(Path(args.root) / source_id))
        episodes = episode_subset(source.to_episodes(), TRANSITIONS)
        subset = Dataset.from_episodes(episodes, where=ds_id)
        shutil.rmtree(ROOT / ds_id, ignore_errors=True)
        command = "python -m offrl.data.embedded.make_locomotion --root ZOO_ROOT"
        folder = write_minari(ds_id, episodes, env_id=source.env_id, ref_min_score=source.ref_min_score,
                              ref_max_score=source.ref_max_score, algorithm_name="SAC (offrl)", root=ROOT,
                              description=f"{TRANSITIONS} transitions (whole episodes, seeded random order) of "
                                          f"{source_id}, budget standard; {command}",
                              extra_metadata={"offrl_command": command, "offrl_source": source_id,
                                              "offrl_source_content_hash": source.content_hash(),
                                              "offrl_content_hash": subset.content_hash()})
        compact_hdf5(folder / "data" / "main_data.hdf5")
        returns = subset.episode_returns()
        print(f"{folder}: {len(subset)} transitions, {subset.num_episodes} episodes, normalised mean return "
              f"{float(source.normalized_score(returns.mean())):.1f}")


if __name__ == "__main__":
    main()

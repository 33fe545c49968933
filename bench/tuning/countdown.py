"""Are an actor's failed episodes brief excursions that the failure countdown cuts short?

``python -m bench.tuning.countdown ACTOR --tracks 0,1,2,3,4,5 --countdowns 12,50,1250``

Drives the deterministic actor on the synchronous proxy (``bench/tuning/proxy.py``) on each track and clock
phase, once per ``reward.failure_countdown`` (the env's defaults otherwise, so an actor trained with other timing
is driven at the default one), and prints the returns and the share of the lap reached. A failure that a longer
countdown turns into a finished lap was an excursion the car came back from; one that ends at the same place
with every countdown is a crash.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.tuning.proxy import ProxyEnv
from bench.tuning.tune import evaluate
from tmrl.envs.config import EnvConfig, RewardConfig
from tmrl.errors import TmrlError
from tmrl.rl.export import load_actor


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("actor", type=Path, help="actor file (.safetensors, as the trainer exports it)")
    p.add_argument("--tracks", type=_ints, default=[0, 1, 2, 3, 4, 5], help="track seeds, e.g. 0,1,2")
    p.add_argument("--countdowns", type=_ints, default=[12, 50, 1250], help="failure countdowns in steps")
    args = p.parse_args()
    torch.set_num_threads(1)
    try:
        actor = load_actor(args.actor)
    except (TmrlError, OSError) as e:
        raise SystemExit(f"cannot load the actor: {e}") from None
    for countdown in args.countdowns:
        env = ProxyEnv(EnvConfig(reward=RewardConfig(failure_countdown=countdown)), args.tracks)
        try:
            results = evaluate(actor, env, args.tracks)
        finally:
            env.close()
        mean = float(np.mean([r for e in results for r in e["returns"]]))
        runs = ", ".join(f"track {e['track']}: {e['returns']} at {e['progress']}" for e in results)
        print(f"countdown {countdown}: mean {mean:.1f}; {runs}", flush=True)


if __name__ == "__main__":
    main()

"""What a run's critics believe along one lap: Q against the discounted return actually collected, and Q for more gas.

Loads the latest checkpoint of a run (critics and actor, ``torch.load(weights_only=True)``), drives one lap of the
proxy (``bench/tuning/proxy.py``: the built-in game's physics, LIDAR and reward with rtgym's action delay) with the
checkpoint's deterministic actor, and prints, every ``--every`` steps:

- ``G``: the discounted return the lap actually collected from that step on (the run's gamma; the finish and a
  crash stop it);
- ``Q``: the minimum of the critics for the actor's action, the value SAC trains the actor with;
- ``dQ(gas 1)``: how much the critics think full gas (brake released, same steering) gains over the actor's action.

Then the means over the lap, how often full gas looks better, and how far apart the two critics are for each action.
Used in session 11 (docs/learning.md) to ask why no policy floors the gas.

With ``--brake-end S`` it prints instead, for the last S seconds of the lap (where a car that leaves the road
leaves it), the speed, the actor's action and how the critics value other brake actions (same gas and steering)
against the actor's; ``--brake-window FROM TO`` does the same where the lap progress is between two fractions.
Used in session 29 to ask whether a run stuck at a corner has learned that braking helps.

Run: ``.venv/bin/python -m bench.tuning.critic_probe RUN_DIR [--track N] [--phase 0|0.5] [--every 50]``, where
``RUN_DIR`` is ``DATA_DIR/runs/NAME`` of a finished run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from bench.tuning.proxy import ProxyEnv
from tmrl.config import TmrlConfig, load_config
from tmrl.envs.observations import observation_spec
from tmrl.errors import TmrlError
from tmrl.rl.checkpoint import load_checkpoint
from tmrl.rl.learner import CHECKPOINT_DIR, build_algorithm
from tmrl.rl.sac import SAC

GAS, BRAKE = 0, 1


def load_run(run_dir: Path) -> tuple[SAC, TmrlConfig]:
    """The run's SAC or REDQ (critics, targets, actor) from its latest checkpoint, and its configuration."""
    config = load_config(
        data_dir=run_dir.parent.parent, config_file=run_dir / "config.toml", environ={}, create=False
    )
    checkpoint = load_checkpoint(run_dir / CHECKPOINT_DIR, load_ring=False)
    rl = config.rl()
    sac = build_algorithm(observation_spec(config.env), rl, torch.device("cpu"))
    sac.load_state_dict(checkpoint.tensors["algo"])
    return sac, config


def critics_q(sac: SAC, obs: dict[str, np.ndarray], actions: np.ndarray) -> np.ndarray:
    """Every critic's Q for one observation and each of ``actions`` (n, action_dim): (critics, n)."""
    batch = {
        n: torch.from_numpy(np.asarray(v)).unsqueeze(0).expand(len(actions), *np.shape(v))
        for n, v in obs.items()
    }
    with torch.no_grad():
        return sac.critic(batch, torch.from_numpy(np.asarray(actions, np.float32))).numpy()


def probe(sac: SAC, config: TmrlConfig, track: int, phase: float) -> dict[str, np.ndarray]:
    """Drive one proxy lap with the deterministic actor; per step: both critics for the actor's action and for
    full gas, the reward and whether the step ended the episode."""
    env = ProxyEnv(config.env, [track])
    obs, _ = env.reset(options={"track": track, "phase": phase})
    q_actor, q_gas, rewards, ends = [], [], [], []
    done = False
    while not done:
        action = sac.actor.act(obs, deterministic=True)
        gas = action.copy()
        gas[GAS], gas[BRAKE] = 1.0, -1.0
        q = critics_q(sac, obs, np.stack([action, gas]))  # (critics, 2)
        obs, reward, terminated, truncated, _ = env.step(action)
        q_actor.append(q[:, 0])
        q_gas.append(q[:, 1])
        rewards.append(reward)
        ends.append(terminated)
        done = terminated or truncated
    env.close()
    return {
        "q_actor": np.array(q_actor),
        "q_gas": np.array(q_gas),
        "reward": np.array(rewards),
        "terminated": np.array(ends),
    }


BRAKES = (-1.0, -0.5, 0.0, 0.1, 0.25, 0.5, 1.0)


def brake_end(
    sac: SAC,
    config: TmrlConfig,
    track: int,
    phase: float,
    seconds: float,
    window: tuple[float, float] | None = None,
) -> int:
    """One proxy lap with the deterministic actor; over its last ``seconds`` (or, with ``window``, over the steps
    whose lap progress is in it), every 0.08 s: progress, speed, the action, the critics' minimum Q for it and,
    for each brake action in ``BRAKES`` (gas and steering kept), its Q minus the actor's."""
    env = ProxyEnv(config.env, [track])
    obs, _ = env.reset(options={"track": track, "phase": phase})
    brakes = np.array(BRAKES, np.float32)
    rows, ret, done = [], 0.0, False
    while not done:
        action = sac.actor.act(obs, deterministic=True)
        actions = np.repeat(action[None], len(brakes) + 1, axis=0)
        actions[1:, BRAKE] = brakes
        q = critics_q(sac, obs, actions).min(axis=0)
        obs, reward, terminated, truncated, info = env.step(action)
        ret += reward
        done = terminated or truncated
        rows.append((info["progress"], env.sim.telemetry().speed, *action, q[0], *(q[1:] - q[0])))
    env.close()
    dt = env.timing.time_step_s
    print(
        f"track {track}: return {ret:.1f} in {len(rows)} steps, ended at {100 * rows[-1][0]:.1f} % of the lap"
    )
    print("Q of each brake action (gas and steering kept) minus Q of the actor's action, after the '|':")
    header = f"{'progress':>8} {'km/h':>5} {'gas':>5} {'brake':>5} {'steer':>5} {'Q':>6} |"
    print(header + "".join(f" {b:+6.2f}" for b in BRAKES))
    every = max(1, round(0.08 / dt))
    if window is not None:
        shown = [row for row in rows if window[0] <= row[0] <= window[1]]
    else:
        shown = rows[max(0, len(rows) - round(seconds / dt)) :]
    for row in shown[::every]:
        progress, kmh, gas, brake, steer, q_actor, *dq = row
        line = f"{100 * progress:7.1f}% {kmh:5.0f} {gas:5.2f} {brake:5.2f} {steer:5.2f} {q_actor:6.1f} |"
        print(line + "".join(f" {d:+6.1f}" for d in dq))
    return 0


def discounted_returns(rewards: np.ndarray, terminated: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1}, stopped where the episode terminated (the lap's last step bootstraps nothing)."""
    out = np.zeros(len(rewards))
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g * (1.0 - float(terminated[t]))
        out[t] = g
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("run_dir", type=Path, help="DATA_DIR/runs/NAME of a run with a checkpoint")
    parser.add_argument("--track", type=int, default=0, help="track seed (0: the default track)")
    parser.add_argument("--phase", type=float, default=0.0, choices=(0.0, 0.5), help="proxy clock phase")
    parser.add_argument("--every", type=int, default=50, help="print every N steps")
    parser.add_argument(
        "--brake-end", type=float, default=None, help="Q along the brake action over the lap's last S seconds"
    )
    parser.add_argument(
        "--brake-window",
        type=float,
        nargs=2,
        default=None,
        metavar=("FROM", "TO"),
        help="Q along the brake action where the lap progress is between FROM and TO (fractions of the lap)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        sac, config = load_run(args.run_dir)
    except TmrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.brake_end is not None or args.brake_window is not None:
        window = tuple(args.brake_window) if args.brake_window is not None else None
        return brake_end(sac, config, args.track, args.phase, args.brake_end or 0.0, window)
    r = probe(sac, config, args.track, args.phase)
    gamma = config.rl().algorithm.gamma  # resolved per game (None in the file means the game's default)
    g = discounted_returns(r["reward"], r["terminated"], gamma)
    q, qg = r["q_actor"].min(axis=1), r["q_gas"].min(axis=1)
    print(f"track {args.track}: return {r['reward'].sum():.1f} in {len(g)} steps; gamma {gamma}")
    print(f"{'step':>5} {'G':>7} {'Q':>7} {'dQ(gas 1)':>10}")
    for t in range(0, len(g), args.every):
        print(f"{t:5d} {g[t]:7.1f} {q[t]:7.1f} {qg[t] - q[t]:+10.2f}")
    spread_a = np.abs(np.diff(r["q_actor"], axis=1)).mean()
    spread_g = np.abs(np.diff(r["q_gas"], axis=1)).mean()
    print(f"mean G {g.mean():.1f}, mean Q {q.mean():.1f} ({q.mean() / g.mean():.0%} of G)")
    print(
        f"full gas: mean dQ {np.mean(qg - q):+.2f}, better than the actor's action at {np.mean(qg > q):.0%} of steps"
    )
    print(f"critics' spread |Q1 - Q2|: {spread_a:.2f} for the actor's action, {spread_g:.2f} for full gas")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

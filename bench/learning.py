"""Learning benchmark: ``tmrl run`` (one worker, real time, LIDAR, CPU) on the built-in game, return vs time.

``python -m bench.learning --variant ours --minutes 60`` runs ``tmrl run`` with the defaults that long, then:

- the curve: every test episode the worker drives during the run (deterministic policy, real time, default
  track; ``worker.test_every``) with its wall-clock minute and the samples collected so far, plus the mean of
  the last 5 of them; ``minutes_to_800`` / ``minutes_to_900``: the first minutes that mean reached 800 / 900
  (test episodes that re-drove the kept best version, ``worker.retest_every``, are apart: ``retest_episodes``);
- each exported actor (the trainer writes one at every checkpoint) also evaluated on the synchronous proxy of
  the game (``bench/tuning/proxy.py``: same physics, observations and reward, no real-time clock), default
  track;
- at the end the final actor drives, in real time, 5 episodes on the default track and one on each of
  ``--unseen`` tracks never used in training (seeds 1..N, reward on the track's centre line).

``--variant tmrl`` does the same with TMRL 0.7.1's default SAC hyper-parameters and timing (DESIGN.md section 2)
in our pipeline (same env and observations). ``--trainer-seed N`` repeats a variant with another seed (results
under ``<variant>-seedN``; the figures stay those of seed 0). Each variant's results are merged into ``bench/results/learning.json``
(a run of one variant keeps the other's) and the curves of both are drawn into ``bench/results/learning.png``.
``--plot-only`` redraws the PNG and the figures from the JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench.common import RESULTS, ROOT, Figure, absolute, write_results
from tmrl.envs.config import EnvConfig, resolved_rtgym
from tmrl.rl.config import TrainerConfig
from tmrl.rl.learner import EPISODE_END

NAME = "learning"
TRAIN_SEED = 0
UNSEEN_SEEDS = (1, 2, 3, 4, 5)
WINDOW = 5  # test episodes in the rolling mean

# Every variant run before session 24 had plain critics (layer normalisation in them is the default since).
NO_LN = {"model.critic_layer_norm": "false"}
# TMRL 0.7.1's default SAC and trainer settings (DESIGN.md section 2), as --set overrides of our config.
TMRL_DEFAULTS = {
    **NO_LN,  # plain MLP critics
    "algorithm.name": '"sac"',
    "algorithm.lr_actor": "1e-5",
    "algorithm.lr_critic": "5e-5",
    "algorithm.lr_entropy": "3e-4",
    "algorithm.betas": "[0.997, 0.997]",
    "algorithm.gamma": "0.995",
    "algorithm.polyak": "0.995",
    "algorithm.alpha": "0.01",
    "algorithm.learn_entropy": "false",
    "algorithm.target_entropy": "-0.5",
    "model.hidden": "[256, 256]",
    "trainer.batch_size": "256",
    "trainer.warmup_steps": "1000",
    "trainer.max_updates_per_step": "4.0",
    "trainer.publish_every": "200",
    "worker.train_on_test": "false",
    # TMRL's timing (TrackMania's, 20 Hz, capture 0.04 s into the step) and its step-counted limits
    "env.rtgym.time_step_s": "0.05",
    "env.rtgym.start_obs_capture_s": "0.04",
    "env.rtgym.ep_max_length": "1000",
    "env.reward.min_steps": "70",
    "env.reward.failure_countdown": "10",
}
# The defaults of sessions 9-15 (25 Hz, 2 physics frames per step): the time step that sets everything counted in
# steps (limits, gamma's horizon, alpha's bonus per second), so the variants run then keep their meaning.
HZ25 = {**NO_LN, "env.rtgym.time_step_s": "0.04"}
# Image observations (64x64 grayscale x 4, speed, gear, rpm) with the defaults otherwise (as run: at 25 Hz).
IMAGES = {**HZ25, "env.observation": '"images"'}
# Sessions 5-8: every episode started at the start line (the defaults before random starts, session 9).
FIXED_START = {**HZ25, "worker.random_start": "0"}
VARIANTS = {
    # 50 Hz since session 16: rtgym applies an action one time step after the observation it answers, so 50 Hz
    # (one physics frame per step) answers in 20 ms where 25 Hz took 40 ms (sessions 14-15 ran it as "50hz")
    "ours": {},
    "25hz": HZ25,
    "fixed-start": FIXED_START,
    # ablation: critics and actor of 128x128, half the matmul cost per update, so the one-core trainer reaches
    # the cap of 4 updates per sample at 25 Hz where 256x256 makes about 2.4
    "fixed-start-128": {**FIXED_START, "model.hidden": "[128, 128]"},
    # the game and the worker leave about 80 % of the second core idle: a second torch thread for the trainer
    "fixed-start-2threads": {**FIXED_START, "trainer.threads": "2"},
    # speed: the laps that finish take 23-33 s and 900 needs under 20 s; a time cost of 0.5 per time step in the
    # critics' target (on top of CarRacing's 0.2) makes each lost second cost 3.5 times as much in training
    "step-penalty": {**HZ25, "algorithm.step_penalty": "0.5"},
    # the LIDAR critics cannot see where the lap ends: a terminal finish makes their targets depend on something
    # unobserved (the return-to-go near the line is a fraction of the one mid-lap for the same view of the road)
    "finish-bootstrap": {**HZ25, "worker.finish_bootstraps": "true"},
    # a horizon of 4 s instead of 8 s: mid-lap the critics' Q is 55-70 % of the discounted return the deterministic
    # lap collects (bench/tuning/critic_probe.py), an error that builds up over the horizon; and a crash seconds
    # ahead weighs less against speed now
    "gamma-0.99": {**HZ25, "algorithm.gamma": "0.99"},
    # the final actor: test episodes alternate between finished laps and crashes up to the end of a run, and the
    # last actor lost to the run's best on the unseen tracks in most runs; the actor and critic learning rates
    # fall linearly to a tenth over minutes 40-59 (25 Hz), so the last actor settles where the run got to
    "lr-decay": {**HZ25, "algorithm.lr_decay_steps": "[60000, 88000]", "algorithm.lr_final_scale": "0.1"},
    # laps on a knife edge: a checkpoint's lap flips between finished and crashed from one minute to the next. A
    # spatial smoothness penalty (CAPS) makes the actor change its action less for small changes of what it sees
    # (noise of 0.05 moved the default actor's actions by 0.1 per dimension; the penalty's gradient, 2 * 4 * 0.1,
    # is then 0.8 against a critic gradient dQ/da of about 2 per dimension late in a run)
    "smooth": {**HZ25, "algorithm.smooth_spatial": "4", "algorithm.smooth_sigma": "0.05"},
    # 50 Hz sees 4 scans over 80 ms where 25 Hz saw 160 ms: 8 scans give the policy back the same span of
    # history to judge speed and yaw rate from (speed is observed; yaw rate only through the scans)
    "lidar-8": {**NO_LN, "env.lidar.history": "8"},
    # the policy's noise (std about 0.04 before tanh late in a run) drawn afresh 50 times a second averages out
    # within a few steps; correlated over 0.2 s it moves the car, with the same distribution at each step
    "noise-0.2": {**NO_LN, "worker.noise_correlation_s": "0.2"},
    # one-step backups carry a reward 20 ms back per update at 50 Hz, half as far as at 25 Hz: 3-step returns
    # carry it 60 ms (the ring sums the rewards and bootstraps 3 steps later, cut at episode ends)
    "nstep-3": {**NO_LN, "algorithm.n_step": "3"},
    # n = 3 learned fastest on one seed and stood still near the start for 20-40 minutes on two: 2-step returns
    # carry a reward 40 ms back per update, what one-step backups did at 25 Hz
    "nstep-2": {**NO_LN, "algorithm.n_step": "2"},
    # one run in four of the defaults stopped the car at the first corner for the whole hour: with TMRL's
    # clipped pedals an action below 0 is a released pedal, so once the actor's gas sits there the critics'
    # gradient along the gas is zero and nothing pulls it back (SB3 maps CarRacing's [0, 1] pedals linearly)
    "pedals-linear": {**NO_LN, "env.pedals": '"linear"'},
    # the defaults of sessions 16-23, before layer normalisation in the critics (the default since session 24:
    # the test laps flipped between finished and crashed from one minute to the next in every run, and the
    # critics' Q was unbounded for the actions the actor moves to; the normalisation (RLPD) bounds it)
    "no-critic-ln": NO_LN,
    # the first-corner stall: the failure countdown ends a stuck car's episode as a terminal state worth 0, which
    # a critic that values the road ahead below the time cost prefers; as a truncation the critics price standing
    # still at what it costs (the countdown is the environment's time limit, not the car's end)
    "failure-bootstrap": {"worker.failure_bootstraps": "true"},
    # which actor a run ends with: the test laps of the last 10 minutes averaged 836-906 in every normalised seed
    # while single snapshots drove 434-909 after the run (seed 1's final actor lost a 909 lap within its last
    # 24,000 updates). A Polyak average of the actor over about 10,000 actor steps (100 s at about 100 updates
    # a second) drives the test episodes, is scored and exported; the live actor explores
    "actor-average": {"algorithm.actor_average": "0.9999"},
    # the stall at a corner: trainer seed 3 of the defaults (session 25) floored the straight before the corner at
    # 23 % of the lap and left the road there at 300-350 km/h for 30 minutes and more; the random starts stand
    # the car still, so no training episode met that corner at speed except from the line. Rolling random starts
    # (0-300 km/h, drawn uniformly) practise every corner at the speeds the car reaches it with
    "rolling-start": {"worker.random_start_speed_kmh": "300"},
    # both: the live actor explores from rolling starts, its average is tested, kept and delivered; the run also
    # evaluates its final live actor beside the average (the JSON's "live"), a paired comparison in one run
    "rolling-average": {"worker.random_start_speed_kmh": "300", "algorithm.actor_average": "0.9999"},
    # the trap, aimed at: half the rolling random starts are placed 2-10 % of a lap before where one of the last
    # 20 episodes from the line failed, so a corner that ends most laps is practised from its straight at speed
    # in a quarter of the training episodes, not in one random start in a dozen
    "failure-start": {"worker.random_start_speed_kmh": "300", "worker.failure_starts": "0.5"},
    # the best actor a run keeps: the defaults' best actors drove 625 / 606 after the run where their final actors
    # drove 670 / 634; seed 2's was scored 898.3 over 3 test episodes at minute 20, never replaced, and drove
    # 434 / 544 (a highest score of 3 episodes among dozens is lucky more often than not). Every third test
    # episode re-drives the kept version; its score becomes the mean of all its episodes, so a lucky one falls
    "retest-best": {"worker.retest_every": "3"},
    # the trap, seen from inside (session 29): the actor of a run at the corner 23 % into the lap holds its brake
    # action near -0.6, where max(0, action) presses nothing, floors the straight to 320 km/h and turns at full
    # lock without braking. Below 0 the critics' Q is flat along the brake and the actor's gradient there is
    # zero: only exploration noise reaching above 0 can teach braking. Linear pedals (session 23, before layer
    # normalisation) cleared the first corner fastest of any run and lost the lap later, which the critics'
    # normalisation addresses: the two together
    "linear-ln": {"env.pedals": '"linear"'},
    # linear pedals taught the actor to hold the brake (session 29), clipped pedals hide the brake behind a dead
    # zone that independent noise (std about 0.04 before tanh late in a run) never crosses for long: the noise
    # correlated over 0.2 s (an AR(1) process with the same marginal) presses a brake for a fraction of a second,
    # long enough to shed speed before the corner, on the current defaults with the critics' normalisation
    "noise-ln-0.2": {"worker.noise_correlation_s": "0.2"},
    # correlated noise keeps the policy's marginal: around a brake action of -0.5 with a std of 0.1 before tanh it
    # never presses the pedal. Pulses (epsilon-z-greedy per action dimension) hold a uniform random value for
    # 0.25 s on average, at 0.2 per second on each pedal: a pressed brake every 10 s of driving, about 5 % of the
    # steps on each pedal, whatever the actor's mean (the trap's critics need braking at 300 km/h). Steering keeps
    # the Gaussian alone: it has no dead zone, and a random lock held at 300 km/h ends the lap
    "pulses": {
        "worker.pulse_rate_hz": "0.2",
        "worker.pulse_s": "0.25",
        "worker.pulse_actions": '["gas", "brake"]',
    },
    # the gas pulses of `pulses` released the pedal at random half the time and cost the laps (session 30); the
    # trap needs the brake alone: brake pulses at the same rate press the pedal about once in 10 s of driving
    "pulses-brake": {
        "worker.pulse_rate_hz": "0.2",
        "worker.pulse_s": "0.25",
        "worker.pulse_actions": '["brake"]',
    },
    # every run so far trained on the default track alone: its trap at 23 % is one corner after one straight,
    # met once a lap. Half the training episodes on other tracks (seeds 1000-1999, never the 5 unseen ones)
    # meet a new set of corners each time, many after long straights, so braking before a corner is learned as
    # a rule of the LIDAR picture rather than at one place; the unseen tracks are what it is judged on too
    "other-tracks": {"worker.other_tracks": "0.5"},
    "tmrl": TMRL_DEFAULTS,
    "images-cnn": {**IMAGES, "model.backbone": '"cnn"'},
    "images-mobilenet": {**IMAGES, "model.backbone": '"mobilenet"'},
    # a one-core CPU trainer makes about 0.5 CNN updates a second at batch 256 (bench/train): minibatches of 64
    # give about four times the updates in the hour, the only way to more than a few thousand on this machine
    "images-cnn-b64": {**IMAGES, "model.backbone": '"cnn"', "trainer.batch_size": "64"},
    "images-mobilenet-b64": {**IMAGES, "model.backbone": '"mobilenet"', "trainer.batch_size": "64"},
}
LABELS = {
    "ours": f"tmrl defaults (TMRL's SAC with batch {TrainerConfig().batch_size}, weights every "
    f"{TrainerConfig().publish_every} updates, test episodes trained on, "
    f"{1.0 / resolved_rtgym(EnvConfig()).time_step_s:.0f} Hz with gamma and alpha per second of game time, half "
    "the training episodes from a random place, layer normalisation in the critics)",
    "25hz": "tmrl defaults of sessions 9-15: 25 Hz (40 ms of action delay), TMRL's gamma and alpha per step",
    "fixed-start": "tmrl defaults of sessions 5-8: 25 Hz, every episode from the start line",
    "fixed-start-128": "sessions 5-8 defaults (25 Hz, every episode from the start line) with MLP 128x128",
    "fixed-start-2threads": "sessions 5-8 defaults (25 Hz, every episode from the start line), 2 trainer threads",
    "step-penalty": "25 Hz defaults with a training time cost of 0.5 per step (algorithm.step_penalty)",
    "finish-bootstrap": "25 Hz defaults, the finish line recorded as a truncation (worker.finish_bootstraps)",
    "gamma-0.99": "25 Hz defaults with gamma 0.99 (a 4 s horizon at 25 Hz)",
    "lr-decay": "25 Hz defaults, learning rates falling to a tenth over minutes 40-59 (algorithm.lr_decay_steps)",
    "smooth": "25 Hz defaults with a spatial smoothness penalty on the actor (CAPS, algorithm.smooth_spatial 4)",
    "lidar-8": "50 Hz defaults with 8 LIDAR scans in the observation (160 ms of history, as 4 at 25 Hz)",
    "noise-0.2": "50 Hz defaults, the exploration noise correlated over 0.2 s (worker.noise_correlation_s)",
    "nstep-3": "50 Hz defaults with 3-step returns in the critics' target (algorithm.n_step)",
    "nstep-2": "50 Hz defaults with 2-step returns in the critics' target (algorithm.n_step)",
    "pedals-linear": "50 Hz defaults, gas and brake pressed by (action + 1) / 2 instead of max(0, action)",
    "no-critic-ln": "tmrl defaults of sessions 16-23: no layer normalisation in the critics",
    "failure-bootstrap": "tmrl defaults, the failure countdown's end recorded as a truncation "
    "(worker.failure_bootstraps)",
    "actor-average": "tmrl defaults, the run delivering a Polyak average of the actor (algorithm.actor_average "
    "0.9999)",
    "rolling-start": "tmrl defaults, the random starts rolling at 0-300 km/h (worker.random_start_speed_kmh)",
    "rolling-average": "tmrl defaults, rolling random starts (0-300 km/h) and a Polyak-averaged actor delivered "
    "(algorithm.actor_average 0.9999)",
    "failure-start": "tmrl defaults, rolling random starts (0-300 km/h), half of them placed shortly before "
    "recent failures from the line (worker.failure_starts 0.5)",
    "retest-best": "tmrl defaults, every third test episode re-driving the kept best version (worker.retest_every "
    "3)",
    "linear-ln": "tmrl defaults (layer normalisation in the critics), gas and brake pressed by (action + 1) / 2 "
    "instead of max(0, action)",
    "noise-ln-0.2": "tmrl defaults (layer normalisation in the critics), the exploration noise correlated over 0.2 s "
    "(worker.noise_correlation_s)",
    "pulses": "tmrl defaults, exploration pulses: gas and brake each held at a random value for 0.25 s on "
    "average, 0.2 times a second (worker.pulse_rate_hz)",
    "pulses-brake": "tmrl defaults, exploration pulses on the brake alone: held at a random value for 0.25 s on "
    "average, 0.2 times a second (worker.pulse_rate_hz)",
    "other-tracks": "tmrl defaults, half the training episodes on other tracks (worker.other_tracks = 0.5, seeds "
    "1000-1999)",
    "tmrl": "TMRL 0.7.1 default SAC hyper-parameters and timing (20 Hz)",
    "images-cnn": "images, CNN (25 Hz defaults otherwise)",
    "images-mobilenet": "images, MobileNetV3-small (25 Hz defaults otherwise)",
    "images-cnn-b64": "images, CNN, minibatches of 64 (25 Hz defaults otherwise)",
    "images-mobilenet-b64": "images, MobileNetV3-small, minibatches of 64 (25 Hz defaults otherwise)",
}


# ---------------------------------------------------------------------------------------------------- helpers
def _tmrl_cmd() -> list[str]:
    return [sys.executable, "-m", "tmrl.cli.main"]


def _write_centerline_reward(path: Path, seed: int) -> Path:
    from tmrl.envs.reward import centerline_trajectory, save_trajectory

    return save_trajectory(path, centerline_trajectory(seed))


def _rolling_first(points: list[dict], threshold: float) -> float | None:
    """First minute at which the mean of the last WINDOW test returns reached ``threshold``."""
    for p in points:
        if p.get("mean5") is not None and p["mean5"] >= threshold:
            return p["minutes"]
    return None


END_TAGS = tuple(f"episodes/test_{k}" for k in EPISODE_END)  # where each test episode ended


def _read_metrics(run_dir: Path, t0: float) -> tuple[list[dict], list[dict], list[dict]]:
    """(test episodes, train episodes, re-test episodes) from the run's metrics.csv, with minutes since ``t0``.
    Re-tests re-drove the kept best version (``worker.retest_every``); they are not on the curve."""
    test: list[dict] = []
    train: list[dict] = []
    retest: list[dict] = []
    path = run_dir / "metrics.csv"
    if not path.exists():
        return test, train, retest
    # an episode's end stats, logged with the same wall time and env steps as its return
    ends: dict[tuple[str, str], dict] = {}
    kinds = {"episodes/test_return": test, "episodes/train_return": train, "episodes/retest_return": retest}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            tag = row["tag"]
            if tag in END_TAGS:
                key = tag.removeprefix("episodes/test_")
                ends.setdefault((row["wall_time"], row["env_steps"]), {})[key] = round(float(row["value"]), 3)
            if tag not in kinds:
                continue
            point = {
                "minutes": round((float(row["wall_time"]) - t0) / 60.0, 3),
                "env_steps": int(row["env_steps"]),
                "return": round(float(row["value"]), 1),
            }
            if tag == "episodes/test_return":
                point["_key"] = (row["wall_time"], row["env_steps"])
            kinds[tag].append(point)
    for p in test:  # where each test episode ended (runs logged before session 23 have no end stats)
        p.update(ends.get(p.pop("_key"), {}))
    for i, p in enumerate(test):
        window = [q["return"] for q in test[max(0, i - WINDOW + 1) : i + 1]]
        p["mean5"] = round(float(np.mean(window)), 1) if len(window) == WINDOW else None
    return test, train, retest


def _proxy_return(actor, env_config, seeds: list[int]) -> list[float]:
    from bench.tuning.proxy import ProxyEnv
    from bench.tuning.tune import evaluate

    env = ProxyEnv(env_config, seeds)
    try:
        return [e["return"] for e in evaluate(actor, env, seeds)]
    finally:
        env.close()


def _realtime_returns(actor, env_config, seed: int, reward_path: Path, episodes: int) -> list[dict]:
    """Deterministic episodes in real time on the built-in game with track ``seed``."""
    from bench.tuning.tune import drive
    from tmrl.envs import make_env
    from tmrl.games.config import CarRacingConfig

    cfg = env_config.model_copy(update={"reward": env_config.reward.model_copy(update={"path": reward_path})})
    env = make_env(cfg, CarRacingConfig(seed=seed))
    out = []
    try:
        for _ in range(episodes):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ret, steps, info = drive(actor, env)
            n_timeouts = sum("timed out" in str(w.message) for w in caught)
            out.append(
                {
                    "track": seed,
                    "return": round(ret, 1),
                    "steps": steps,
                    "progress": round(float(info.get("progress", 0.0)), 3),
                    "finished": bool(info.get("finished", False)),
                    "timeouts": n_timeouts,
                }
            )
            print(
                f"  track {seed}: return {ret:.1f} in {steps} steps, {n_timeouts} time-step timeouts",
                flush=True,
            )
    finally:
        env.close()
    return out


# ---------------------------------------------------------------------------------------------------- one run
def variant_key(variant: str, seed: int) -> str:
    """The variant's key in the JSON: its name, with ``-seed<N>`` for trainer seeds other than 0."""
    return variant if seed == 0 else f"{variant}-seed{seed}"


def overrides(variant: str, seed: int) -> dict[str, str]:
    """``--set`` overrides of the variant, with the trainer seed when not 0."""
    return {**VARIANTS[variant], **({"trainer.seed": str(seed)} if seed else {})}


def run_variant(
    variant: str, minutes: float, unseen: int, data_dir: Path, final_episodes: int, seed: int = 0
) -> dict:
    from tmrl.config import load_config
    from tmrl.rl.export import load_actor

    run_name = f"bench-{variant}"
    data_dir.mkdir(parents=True, exist_ok=True)
    reward = data_dir / "rewards" / f"carracing-seed{TRAIN_SEED}.json"
    if not reward.exists():  # what `tmrl run` would record on first use: the pilot drives one lap (not timed)
        from tmrl.envs import record_reward
        from tmrl.games.config import CarRacingConfig

        record_reward(CarRacingConfig(seed=TRAIN_SEED), reward)
    sets = [f"{k}={v}" for k, v in overrides(variant, seed).items()]
    set_args = [a for s in sets for a in ("--set", s)]
    cmd = [
        *_tmrl_cmd(),
        "run",
        "--data-dir",
        str(data_dir),
        "--name",
        run_name,
        "--fresh",
        "--port",
        "0",
        "--no-live",
        "--duration",
        str(minutes * 60.0),
        *set_args,
    ]
    print("running:", " ".join(cmd), flush=True)
    run_dir = data_dir / "runs" / run_name
    actor_file = run_dir / "weights" / "actor.safetensors"
    log = open(data_dir / f"{run_name}.log", "w")  # noqa: SIM115 - closed below
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    checkpoints: list[dict] = []
    seen_mtime = 0.0
    config = None
    try:
        while proc.poll() is None:
            time.sleep(5.0)
            if config is None and (run_dir / "config.toml").exists():
                config = load_config(data_dir=data_dir, config_file=run_dir / "config.toml")
            if config is None or not actor_file.exists() or actor_file.stat().st_mtime == seen_mtime:
                continue
            seen_mtime = actor_file.stat().st_mtime
            minute = (seen_mtime - t0) / 60.0
            status = _json(run_dir / "status" / "trainer.json")
            try:
                actor = load_actor(actor_file)
            except Exception as exc:  # noqa: BLE001 - a file being replaced: try at the next change
                print(f"  (actor not readable yet: {exc})")
                continue
            ret = _proxy_return(actor, config.env, [TRAIN_SEED])[0]
            point = {
                "minutes": round(minute, 2),
                "env_steps": status.get("env_steps"),
                "updates": status.get("updates"),
                "proxy_return": ret,
            }
            checkpoints.append(point)
            test, _, _ = _read_metrics(run_dir, t0)
            last = test[-1] if test else None
            print(f"  {json.dumps(point)}; last real-time test episode: {last}", flush=True)
    except KeyboardInterrupt:
        proc.terminate()
        raise
    finally:
        proc.wait()
        log.close()
    minutes_run = round((time.time() - t0) / 60.0, 2)
    if proc.returncode != 0:
        print(f"warning: tmrl run exited with code {proc.returncode}; see {data_dir / (run_name + '.log')}")
    if config is None:
        raise SystemExit(f"tmrl run did not start; see {data_dir / (run_name + '.log')}")
    state = {"t0": t0, "minutes_run": minutes_run, "checkpoints": checkpoints, "returncode": proc.returncode}
    (data_dir / f"{run_name}.json").write_text(json.dumps(state))
    return finish_variant(variant, data_dir, unseen, final_episodes, seed)


def finish_variant(variant: str, data_dir: Path, unseen: int, final_episodes: int, seed: int = 0) -> dict:
    """Everything after ``tmrl run`` stopped: the curve from its metrics, the final real-time evaluation.

    Reads ``<data_dir>/bench-<variant>.json`` (start time, minutes run, checkpoint evaluations) written by
    ``run_variant``; ``--finish`` calls it alone, in a fresh process, on a finished run."""
    from tmrl.config import load_config
    from tmrl.rl.export import load_actor, load_arrays
    from tmrl.trainer import BEST_ACTOR_FILE, LIVE_ACTOR_FILE

    run_name = f"bench-{variant}"
    run_dir = data_dir / "runs" / run_name
    actor_file = run_dir / "weights" / "actor.safetensors"
    reward = data_dir / "rewards" / f"carracing-seed{TRAIN_SEED}.json"
    state = json.loads((data_dir / f"{run_name}.json").read_text())
    t0, minutes_run, checkpoints = state["t0"], state["minutes_run"], state["checkpoints"]
    config = load_config(data_dir=data_dir, config_file=run_dir / "config.toml")
    test, train, retests = _read_metrics(run_dir, t0)
    status = _json(run_dir / "status" / "trainer.json")
    result: dict = {
        "label": LABELS[variant] + (f", trainer seed {seed}" if seed else ""),
        "overrides": overrides(variant, seed),
        "minutes_run": minutes_run,
        "samples": status.get("env_steps"),
        "updates": status.get("updates"),
        "test_episodes": test,
        "train_episodes": train,
        "checkpoints": checkpoints,
        "minutes_to_800": _rolling_first(test, 800.0),
        "minutes_to_900": _rolling_first(test, 900.0),
        "best_mean5": max((p["mean5"] for p in test if p["mean5"] is not None), default=None),
    }
    if retests:
        result["retest_episodes"] = retests
    if state.get("note"):
        result["note"] = state["note"]
    if actor_file.exists():
        keep = data_dir / f"final-actor-{variant_key(variant, seed)}.safetensors"
        shutil.copyfile(actor_file, keep)
        result["actor"] = str(keep)
        print("final actor, real time:", flush=True)
        result["final"] = _evaluate(load_actor(keep), config.env, reward, data_dir, unseen, final_episodes)
    best_file = run_dir / BEST_ACTOR_FILE
    # keep-the-best: the actor of the best test episode during the run, same evaluation
    if best_file.exists():
        keep = data_dir / f"best-actor-{variant_key(variant, seed)}.safetensors"
        shutil.copyfile(best_file, keep)
        best_test = load_arrays(keep)[1].get("best_test")
        print(f"best actor ({best_test}), real time:", flush=True)
        result["best"] = {
            "actor": str(keep),
            "best_test": best_test,
            **_evaluate(load_actor(keep), config.env, reward, data_dir, unseen, final_episodes),
        }
    live_file = run_dir / LIVE_ACTOR_FILE
    # algorithm.actor_average: the final live actor beside its average, same evaluation
    if live_file.exists():
        keep = data_dir / f"live-actor-{variant_key(variant, seed)}.safetensors"
        shutil.copyfile(live_file, keep)
        print("final live actor (the averaged one is the final actor), real time:", flush=True)
        result["live"] = {
            "actor": str(keep),
            **_evaluate(load_actor(keep), config.env, reward, data_dir, unseen, final_episodes),
        }
    return result


def _evaluate(actor, env_config, reward: Path, data_dir: Path, unseen: int, episodes: int) -> dict:
    """An actor's real-time returns on the default track and on ``unseen`` unseen tracks, and on the proxy."""
    default = _realtime_returns(actor, env_config, TRAIN_SEED, reward, episodes)
    others = []
    for track in UNSEEN_SEEDS[:unseen]:
        path = _write_centerline_reward(data_dir / "rewards" / f"centerline-seed{track}.json", track)
        others += _realtime_returns(actor, env_config, track, path, 1)
    return {
        "default_track": default,
        "default_track_mean": _mean(default),
        "unseen_tracks": others,
        "unseen_tracks_mean": _mean(others),
        "proxy_default_track": _proxy_return(actor, env_config, [TRAIN_SEED])[0],
        "proxy_unseen_tracks": _proxy_return(actor, env_config, list(UNSEEN_SEEDS[: max(unseen, 5)])),
    }


def _mean(episodes: list[dict]) -> float | None:
    return round(float(np.mean([e["return"] for e in episodes])), 1) if episodes else None


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def ship_actor(src: Path, training: dict) -> Path:
    """Copy the actor file ``src`` into ``tmrl/assets`` with a ``training`` record added to its metadata."""
    from tmrl.assets import CARRACING_ACTOR
    from tmrl.rl.export import load_arrays, save_arrays

    arrays, meta = load_arrays(src)
    meta = {**meta, "training": training}
    return save_arrays(ROOT / "tmrl" / "assets" / CARRACING_ACTOR, arrays, meta)


# ---------------------------------------------------------------------------------------------------- report
def figures(doc: dict) -> list[Figure]:
    ours = doc.get("variants", {}).get("ours")
    anchor = doc.get("variants", {}).get("tmrl")
    figs: list[Figure] = []
    if not ours or "final" not in ours:
        return figs
    note_a = (
        f"TMRL hyper-parameters ran {anchor['minutes_run']:.0f} min" if anchor else "TMRL variant not run"
    )
    # the final actor, and the actor a user gets from a run: `tmrl test` drives the best one the trainer kept
    # (scored over test episodes during the run), not the last
    for which, label in (("final", "final actor"), ("best", "best actor (the one `tmrl test` drives)")):
        got, a_which = ours.get(which) or {}, (anchor or {}).get(which) or {}
        for key, name, target in (
            ("default_track_mean", "default track, mean of 5 real-time episodes", 900.0),
            (
                "unseen_tracks_mean",
                f"{len(got.get('unseen_tracks', []))} unseen tracks, mean real-time return",
                800.0,
            ),
        ):
            if got.get(key) is not None:
                first = (which, key) == ("final", "default_track_mean")
                figs.append(
                    absolute(
                        f"{label}, {name}",
                        "return",
                        got[key],
                        target,
                        at_most=False,
                        anchor=a_which.get(key),
                        anchor_name="TMRL 0.7.1 SAC defaults",
                        note=f"ours ran {ours['minutes_run']:.0f} min; {note_a}" if first else "",
                    )
                )
    if ours.get("best_mean5") is not None:
        figs.append(
            absolute(
                "best mean of 5 consecutive real-time test episodes during the run",
                "return",
                ours["best_mean5"],
                900.0,
                at_most=False,
                anchor=(anchor or {}).get("best_mean5"),
                anchor_name="TMRL 0.7.1 SAC defaults",
            )
        )
    m900 = ours.get("minutes_to_900")
    figs.append(
        Figure(
            "minutes to a mean of 5 real-time test episodes >= 900",
            "min",
            ours["minutes_run"] if m900 is None else m900,
            (anchor or {}).get("minutes_to_900"),
            "TMRL 0.7.1 SAC defaults",
            "<= 60 min",
            m900 is not None and m900 <= 60.0,
            note=f"not reached in the {ours['minutes_run']:.0f}-min run (value = minutes run, a lower bound)"
            if m900 is None
            else "",
        )
    )
    # every 60-minute run of the defaults (trainer seeds 0, 1, ...): what a user should expect from one run; and
    # the same for the defaults before random starts, for comparison
    for family, what in (
        (r"ours", "the defaults (50 Hz, layer normalisation in the critics)"),
        (r"no-critic-ln", "the session 16-23 defaults (50 Hz)"),
        (r"25hz", "the session 9-15 defaults (25 Hz)"),
        (r"fixed-start", "the session 5-8 defaults (25 Hz, fixed start)"),
        (r"gamma-0\.99", "gamma 0.99 (25 Hz)"),
        (r"lr-decay", "learning-rate decay (25 Hz)"),
        (r"smooth", "the actor smoothness penalty (25 Hz)"),
        (r"pedals-linear", "linear pedals (50 Hz)"),
    ):
        runs = {
            k: v
            for k, v in doc.get("variants", {}).items()
            if re.fullmatch(family + r"(-seed\d+)?", k) and "final" in v
        }
        # the best actors only for the defaults: what one run of `tmrl run` + `tmrl test` gives a user
        for which in ("final", "best") if family == "ours" else ("final",):
            a_which = (anchor or {}).get(which) or {}
            for key, name, target in (
                ("default_track_mean", "default track", 900.0),
                ("unseen_tracks_mean", "unseen tracks", 800.0),
            ):
                got = {k: (v.get(which) or {}).get(key) for k, v in sorted(runs.items())}
                got = {k: x for k, x in got.items() if x is not None}
                if len(got) > 1:
                    figs.append(
                        absolute(
                            f"{which} actor, {name}, mean over {len(got)} runs of {what}",
                            "return",
                            round(float(np.mean(list(got.values()))), 1),
                            target,
                            at_most=False,
                            anchor=a_which.get(key),
                            anchor_name="TMRL 0.7.1 SAC defaults, one run",
                            note="runs: " + ", ".join(f"{k} {x:.0f}" for k, x in got.items()),
                        )
                    )
    return figs


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 10))
    colors = {
        "ours": "black",
        "ours-seed1": "dimgray",
        "ours-seed2": "silver",
        "ours-seed3": "gainsboro",
        "25hz": "teal",
        "25hz-seed1": "turquoise",
        "25hz-seed2": "cadetblue",
        "25hz-seed3": "lightsteelblue",
        "step-penalty": "gold",
        "finish-bootstrap": "tab:brown",
        "gamma-0.99": "olive",
        "gamma-0.99-seed1": "yellowgreen",
        "lr-decay": "crimson",
        "lr-decay-seed1": "salmon",
        "smooth": "darkviolet",
        "smooth-seed1": "violet",
        "fixed-start": "tab:blue",
        "fixed-start-seed1": "tab:cyan",
        "fixed-start-seed2": "navy",
        "fixed-start-seed3": "tab:green",
        "fixed-start-128": "tab:red",
        "fixed-start-2threads": "magenta",
        "lidar-8": "deeppink",
        "no-critic-ln": "darkgreen",
        "no-critic-ln-seed1": "limegreen",
        "no-critic-ln-seed2": "mediumseagreen",
        "no-critic-ln-seed3": "palegreen",
        "failure-bootstrap": "sienna",
        "pedals-linear": "red",
        "pedals-linear-seed1": "lightcoral",
        "pedals-linear-seed3": "rosybrown",
        "noise-0.2": "darkcyan",
        "noise-0.2-seed1": "turquoise",
        "noise-ln-0.2": "teal",
        "noise-ln-0.2-seed1": "cadetblue",
        "pulses": "goldenrod",
        "pulses-seed1": "khaki",
        "pulses-brake": "darkgoldenrod",
        "other-tracks": "forestgreen",
        "other-tracks-seed1": "limegreen",
        "nstep-3": "olive",
        "nstep-2": "darkorange",
        "tmrl": "tab:orange",
        "images-cnn": "tab:purple",
        "images-mobilenet": "tab:brown",
        "images-cnn-b64": "indigo",
        "images-mobilenet-b64": "saddlebrown",
    }
    for variant, res in doc.get("variants", {}).items():
        c = colors.get(variant, "gray")
        test = res.get("test_episodes", [])
        for ax, key in ((axes[0], "minutes"), (axes[1], "env_steps")):
            if test:
                ax.scatter([p[key] for p in test], [p["return"] for p in test], s=10, color=c, alpha=0.5)
                m = [p for p in test if p.get("mean5") is not None]
                ax.plot(
                    [p[key] for p in m],
                    [p["mean5"] for p in m],
                    color=c,
                    label=f"{variant}: test episodes, mean of 5 ({res['minutes_run']:.0f} min run)",
                )
            cps = [p for p in res.get("checkpoints", []) if p.get(key) is not None]
            if cps:
                ax.plot(
                    [p[key] for p in cps],
                    [p["proxy_return"] for p in cps],
                    color=c,
                    linestyle="--",
                    marker="o",
                    markersize=3,
                    label=f"{variant}: checkpoints on the synchronous proxy",
                )
    for ax, xlabel in ((axes[0], "wall-clock minutes"), (axes[1], "samples (environment steps)")):
        ax.axhline(900, color="green", linewidth=0.8, linestyle=":")
        ax.axhline(800, color="olive", linewidth=0.8, linestyle=":")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("return (CarRacing scale)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=2)  # below the plots, covering no curve
    fig.suptitle(
        "Built-in game in real time, one worker, CPU (2 cores); variants (bench/learning.py): docs/learning.md"
    )
    fig.tight_layout(rect=(0, 0.4, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(doc: dict) -> None:
    ours = doc.get("variants", {}).get("ours", {})
    extra = {
        "variants": doc.get("variants", {}),
        "minutes_to_800": ours.get("minutes_to_800"),
        "minutes_to_900": ours.get("minutes_to_900"),
        "minutes_run": {k: v.get("minutes_run") for k, v in doc.get("variants", {}).items()},
        "images": {
            v: {k: doc["variants"][v].get(k) for k in ("minutes_run", "samples", "updates", "best_mean5")}
            if v in doc.get("variants", {})
            else "not run (time box)"
            for v, o in VARIANTS.items()
            if o.get("env.observation") == IMAGES["env.observation"]
        },
    }
    write_results(NAME, figures(doc), extra)
    plot(doc, RESULTS / f"{NAME}.png")
    print(f"wrote {(RESULTS / (NAME + '.png')).relative_to(ROOT)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=sorted(VARIANTS), default="ours")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock minutes of training")
    p.add_argument("--unseen", type=int, default=5, help="unseen tracks in the final real-time evaluation")
    p.add_argument("--final-episodes", type=int, default=5, help="final real-time episodes, default track")
    p.add_argument("--data-dir", type=Path, default=None, help="tmrl data directory (default: a temp dir)")
    p.add_argument(
        "--trainer-seed",
        type=int,
        default=0,
        help="trainer.seed of the run; other than 0, the results go under '<variant>-seed<N>' in the JSON",
    )
    p.add_argument("--plot-only", action="store_true", help="redraw figures and PNG from the JSON")
    p.add_argument(
        "--finish",
        action="store_true",
        help="only the part after training, on the finished run in --data-dir (e.g. after an interruption)",
    )
    p.add_argument(
        "--ship",
        type=Path,
        default=None,
        metavar="ACTOR",
        help="copy this actor file into tmrl/assets (with --training JSON in its metadata) and exit",
    )
    p.add_argument("--training", default="{}", help="with --ship: JSON record of how the actor was trained")
    args = p.parse_args()
    if args.ship is not None:
        print(f"shipped {ship_actor(args.ship, json.loads(args.training))}")
        return
    path = RESULTS / f"{NAME}.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc.setdefault("variants", {})
    if args.finish:
        if args.data_dir is None:
            raise SystemExit("--finish needs the --data-dir of the run")
        doc["variants"][variant_key(args.variant, args.trainer_seed)] = finish_variant(
            args.variant, args.data_dir, args.unseen, args.final_episodes, args.trainer_seed
        )
    elif not args.plot_only:
        data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix=f"tmrl-learning-{args.variant}-"))
        print(f"data directory (run, logs, final actor; kept): {data_dir}", flush=True)
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        doc["variants"][variant_key(args.variant, args.trainer_seed)] = run_variant(
            args.variant, args.minutes, args.unseen, data_dir, args.final_episodes, args.trainer_seed
        )
    report(doc)


if __name__ == "__main__":
    main()

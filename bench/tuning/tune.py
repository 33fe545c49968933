"""One tuning experiment on the synchronous proxy of the built-in game (``bench/tuning/proxy.py``).

``python -m bench.tuning.tune NAME --steps 40000 --algo '{"lr_actor": 3e-4}' --env '{"extra_telemetry": []}'``

Trains the trainer's code (``Learner``: SAC / REDQ, replay ring, throttle) on track 0 with the given overrides
of ``AlgorithmConfig`` / ``ModelConfig`` / ``TrainerConfig`` / ``EnvConfig`` and evaluates the deterministic
policy every ``--eval-every`` steps on track 0 and on ``--unseen`` other tracks. One JSON line per evaluation
goes to ``bench/tuning/results/NAME.jsonl``; the actor, at each evaluation, to
``bench/tuning/results/NAME.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.tuning.proxy import ProxyEnv
from tmrl.envs.config import EnvConfig
from tmrl.rl.config import AlgorithmConfig, ModelConfig, RLConfig, TrainerConfig
from tmrl.rl.export import save_actor
from tmrl.rl.learner import Learner
from tmrl.rl.transitions import TransitionRecorder

RESULTS = Path(__file__).resolve().parent / "results"


def drive(actor, env, **reset_kwargs) -> tuple[float, int, dict]:
    """One episode with the deterministic policy: (return, steps, last info)."""
    obs, _ = env.reset(**reset_kwargs)
    ret, steps, done, info = 0.0, 0, False, {}
    while not done:
        obs, r, term, trunc, info = env.step(actor.act(obs, deterministic=True))
        ret += r
        steps += 1
        done = term or trunc
    return ret, steps, info


def evaluate(actor, env: ProxyEnv, tracks: list[int], phases: tuple[float, ...] = (0.0, 0.5)) -> list[dict]:
    """Deterministic episodes on each track, one per clock phase; ``return`` is their mean."""
    out = []
    for t in tracks:
        runs = []
        for phase in phases:
            ret, steps, info = drive(actor, env, options={"track": t, "phase": phase})
            runs.append((ret, steps, info["progress"]))
        out.append(
            {
                "track": t,
                "return": round(float(np.mean([r[0] for r in runs])), 1),
                "returns": [round(r[0], 1) for r in runs],
                "steps": [r[1] for r in runs],
                "progress": [round(r[2], 3) for r in runs],
            }
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--steps", type=int, default=40_000)
    p.add_argument("--algo", default="{}")
    p.add_argument("--model", default="{}")
    p.add_argument("--trainer", default="{}")
    p.add_argument("--env", default="{}")
    p.add_argument("--eval-every", type=int, default=5000)
    p.add_argument("--unseen", type=int, default=2)
    p.add_argument("--train-tracks", default="0")
    args = p.parse_args()
    env_cfg = EnvConfig.model_validate(json.loads(args.env))
    rl = RLConfig(
        algorithm=AlgorithmConfig.model_validate(json.loads(args.algo)),
        model=ModelConfig.model_validate(json.loads(args.model)),
        trainer=TrainerConfig.model_validate({"threads": 1, **json.loads(args.trainer)}),
    )
    train_tracks = [int(s) for s in args.train_tracks.split(",")]
    env = ProxyEnv(env_cfg, train_tracks, jitter_seed=rl.trainer.seed)
    eval_env = ProxyEnv(env_cfg, [0] + [100 + i for i in range(args.unseen)])
    learner = Learner(env.spec_, rl, None)
    RESULTS.mkdir(exist_ok=True)
    log = open(RESULTS / f"{args.name}.jsonl", "w")  # noqa: SIM115
    log.write(
        json.dumps({"config": rl.model_dump(mode="json"), "env": env_cfg.model_dump(mode="json")}) + "\n"
    )
    rng = np.random.default_rng(rl.trainer.seed)
    rec = TransitionRecorder(learner.spec)
    obs, _ = env.reset()
    rec.reset(obs)
    t0 = time.time()
    returns: list[float] = []
    average = learner.algo.actor_average  # --algo '{"actor_average": 0.999}': evaluated beside the live actor
    for step in range(1, args.steps + 1):
        if learner.env_steps < rl.trainer.warmup_steps:
            action = rng.uniform(-1.0, 1.0, 3).astype(np.float32)
        else:
            action = learner.actor.act(obs)
        nxt, r, term, trunc, _ = env.step(action)
        rec.step(action, r, term, trunc, nxt)
        eps = rec.pop_episodes()
        learner.add_batch(0, rec.take(), eps)
        returns += [e["return"] for e in eps]
        if term or trunc:
            obs, _ = env.reset()
            rec.reset(obs)
        else:
            obs = nxt
        learner.train()
        if step % args.eval_every == 0 or step == args.steps:
            ev = evaluate(learner.actor, eval_env, [0] + [100 + i for i in range(args.unseen)])
            line = {
                "step": step,
                "updates": learner.updates,
                "minutes": round((time.time() - t0) / 60, 2),
                "train_mean10": round(float(np.mean(returns[-10:])), 1) if returns else None,
                "alpha": round(float(learner.algo.alpha), 4),
                "eval": ev,
            }
            if average is not None:
                line["eval_average"] = evaluate(
                    average, eval_env, [0] + [100 + i for i in range(args.unseen)]
                )
                save_actor(RESULTS / f"{args.name}-average.safetensors", average)
            log.write(json.dumps(line) + "\n")
            log.flush()
            print(args.name, json.dumps(line), flush=True)
            save_actor(RESULTS / f"{args.name}.safetensors", learner.actor)
    learner.close()


if __name__ == "__main__":
    main()

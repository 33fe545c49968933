"""Anchor for bench/train.py: SAC updates per second of TMRL 0.7.1's agent and of Stable-Baselines3's SAC.

Runs in the anchors venv (``import tmrl`` is TMRL 0.7.1 here). Both anchors train on CPU, batch 256, with sampling
from their own replay memory included, on the same observations as our benchmark:
- LIDAR: speed (1), 4 x 19 LIDAR history, the last 2 actions (2 x 3); MLP 256 x 256 (TMRL's MLPActorCritic).
- images: speed, gear, rpm, 4 x 64 x 64 uint8 frames, the last 2 actions; TMRL's VanillaCNN (64k8s2, 64k4s2,
  128k4s2, 128k4s2 + MLP 256 x 256). SB3 gets the same CNN as a features extractor.
Usage: train_sac.py SECONDS THREADS [KINDS]. KINDS: comma-separated, from lidar,image (default both).
Prints one JSON line: updates/s per anchor and observation kind.
"""

import json
import random
import sys
import time

import numpy as np
import torch

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
KINDS = sys.argv[3].split(",") if len(sys.argv) > 3 else ["lidar", "image"]
ROWS = 20_000
BATCH = 256


def measure(step, seconds: float) -> float:
    for _ in range(5):  # warm-up
        step()
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= 3:
            return n / dt


# -- TMRL 0.7.1 ---------------------------------------------------------------------------------------------------
def tmrl_agent(kind: str) -> float:
    from gymnasium import spaces
    from tmrl.custom.custom_algorithms import SpinupSacAgent
    from tmrl.custom.custom_memories import MemoryTMFull, MemoryTMLidar
    from tmrl.custom.custom_models import MLPActorCritic, VanillaCNNActorCritic
    from tmrl.networking import Buffer

    act_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    a = spaces.Box(-1.0, 1.0, (3,), np.float32)
    rng = np.random.default_rng(0)
    buf = Buffer(maxlen=ROWS + 10)
    if kind == "lidar":
        obs_space = spaces.Tuple((spaces.Box(0, 1000, (1,)), spaces.Box(0, 1000, (4, 19)), a, a))
        memory = MemoryTMLidar(memory_size=1_000_000, batch_size=BATCH, imgs_obs=4, act_buf_len=2, nb_steps=1)
        model_cls = MLPActorCritic
        for i in range(ROWS):
            obs = (rng.random(1, dtype=np.float32), rng.random(19, dtype=np.float32))
            done = i % 1000 == 999
            buf.append_sample((rng.random(3, dtype=np.float32), obs, np.float32(1.0), False, done, {}))
    else:
        f = spaces.Box(0, 1000, (1,))
        obs_space = spaces.Tuple((f, f, f, spaces.Box(0, 1, (4, 64, 64)), a, a))
        memory = MemoryTMFull(memory_size=1_000_000, batch_size=BATCH, imgs_obs=4, act_buf_len=2, nb_steps=1)
        model_cls = VanillaCNNActorCritic
        for i in range(ROWS):
            img = rng.integers(0, 256, (64, 64), dtype=np.uint8)
            f1 = rng.random(1, dtype=np.float32)
            done = i % 1000 == 999
            buf.append_sample(
                (rng.random(3, dtype=np.float32), (f1, f1, f1, img), np.float32(1.0), False, done, {})
            )
    memory.append(buf)
    agent = SpinupSacAgent(
        observation_space=obs_space,
        action_space=act_space,
        device="cpu",
        model_cls=model_cls,
        gamma=0.995,
        polyak=0.995,
        alpha=0.01,
        lr_actor=1e-5,
        lr_critic=5e-5,
        lr_entropy=3e-4,
        learn_entropy_coef=False,
        target_entropy=-0.5,
        optimizer_actor="adam",
        optimizer_critic="adam",
        betas_actor=[0.997, 0.997],
        betas_critic=[0.997, 0.997],
        l2_actor=0.0,
        l2_critic=0.0,
    )
    return measure(lambda: agent.train(memory.sample()), SECONDS)


# -- Stable-Baselines3 ------------------------------------------------------------------------------------------
def sb3_agent(kind: str) -> float:
    from gymnasium import spaces
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from torch import nn

    class TmrlCnnExtractor(BaseFeaturesExtractor):
        """TMRL's CNN on the frames + the vector parts flattened (same sizes as ours and TMRL's)."""

        def __init__(self, observation_space: spaces.Dict) -> None:
            super().__init__(observation_space, features_dim=128 + 3 + 6)
            self.cnn = nn.Sequential(
                nn.Conv2d(4, 64, 8, stride=2),
                nn.ReLU(),
                nn.Conv2d(64, 64, 4, stride=2),
                nn.ReLU(),
                nn.Conv2d(64, 128, 4, stride=2),
                nn.ReLU(),
                nn.Conv2d(128, 128, 4, stride=2),
                nn.ReLU(),
                nn.Flatten(),
            )

        def forward(self, obs):
            return torch.cat([self.cnn(obs["frames"]), obs["telemetry"], obs["actions"]], dim=1)

    act_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    rng = np.random.default_rng(0)
    if kind == "lidar":
        obs_space = spaces.Box(-np.inf, np.inf, (1 + 76 + 6,), np.float32)
        policy_kwargs = {"net_arch": [256, 256]}
        policy = "MlpPolicy"
    else:
        obs_space = spaces.Dict(
            {
                "frames": spaces.Box(0, 255, (4, 64, 64), np.uint8),
                "telemetry": spaces.Box(-np.inf, np.inf, (3,), np.float32),
                "actions": spaces.Box(-1, 1, (6,), np.float32),
            }
        )
        policy_kwargs = {"net_arch": [256, 256], "features_extractor_class": TmrlCnnExtractor}
        policy = "MultiInputPolicy"

    import gymnasium as gym

    class SpacesEnv(gym.Env):
        observation_space = obs_space
        action_space = act_space

        def reset(self, *, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    rows = ROWS if kind == "lidar" else 5_000
    model = SAC(
        policy,
        SpacesEnv(),
        buffer_size=rows,
        batch_size=BATCH,
        learning_starts=0,
        ent_coef=0.01,  # fixed, like TMRL's default and our benchmark configuration
        policy_kwargs=policy_kwargs,
        device="cpu",
        seed=0,
    )
    model.set_logger(configure(None, []))
    rb = model.replay_buffer
    if kind == "lidar":
        rb.observations[:] = rng.random(rb.observations.shape, dtype=np.float32)
        rb.next_observations[:] = rng.random(rb.next_observations.shape, dtype=np.float32)
    else:
        for key in rb.observations:
            shape = rb.observations[key].shape
            if rb.observations[key].dtype == np.uint8:
                rb.observations[key][:] = rng.integers(0, 256, shape, dtype=np.uint8)
                rb.next_observations[key][:] = rng.integers(0, 256, shape, dtype=np.uint8)
            else:
                rb.observations[key][:] = rng.random(shape, dtype=np.float32)
                rb.next_observations[key][:] = rng.random(shape, dtype=np.float32)
    rb.actions[:] = rng.uniform(-1, 1, rb.actions.shape).astype(np.float32)
    rb.rewards[:] = 1.0
    rb.full, rb.pos = True, 0
    return measure(lambda: model.train(gradient_steps=1, batch_size=BATCH), SECONDS)


def main() -> None:
    torch.set_num_threads(THREADS)
    random.seed(0)
    torch.manual_seed(0)
    out = {}
    for kind in KINDS:
        out[f"tmrl_{kind}"] = tmrl_agent(kind)
        out[f"sb3_{kind}"] = sb3_agent(kind)
        print(kind, out, file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Typed configuration of the learning side: algorithm, models and the trainer loop.

Defaults are TMRL 0.7.1's SAC hyper-parameters (DESIGN.md section 2): in real time on the built-in game they
learned far faster than the settings first tuned on a proxy that lacked rtgym's one-step action delay
(docs/learning.md). The trainer's minibatch is 128 where TMRL's is 256: on CPU the trainer is bound by one core,
and the smaller batch doubled the updates of a real-time hour. ``PRESETS`` names algorithm settings (TMRL's and a
few alternatives). Every value is configurable; nothing here is read from a global.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tmrl.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# TMRL 0.7.1's discount and entropy coefficient per time step (DESIGN.md section 2).
TMRL_GAMMA = 0.995
TMRL_ALPHA = 0.01


class AlgorithmConfig(_Strict):
    """SAC or REDQ-SAC hyper-parameters (defaults: TMRL 0.7.1's SAC, preset 'tmrl-sac'; docs/learning.md)."""

    name: Literal["sac", "redq"] = Field(
        "sac", description="sac (twin critics) or redq (N critics, subset M)"
    )
    lr_actor: float = Field(1e-5, gt=0, description="actor learning rate")
    lr_critic: float = Field(5e-5, gt=0, description="critic learning rate")
    lr_entropy: float = Field(3e-4, gt=0, description="entropy coefficient learning rate (learned alpha)")
    betas: tuple[float, float] = Field((0.997, 0.997), description="Adam betas of every optimiser")
    lr_decay_steps: tuple[int, int] | None = Field(
        None,
        description="(start, end) environment steps of a linear decay of the actor and critic learning rates to "
        "lr_final_scale times their values (constant before start and after end); None keeps them constant. "
        "Environment steps follow the clock in real time: 50 Hz makes 180,000 an hour",
    )
    lr_final_scale: float = Field(
        0.1, ge=0, le=1, description="learning-rate factor reached at the end of lr_decay_steps"
    )
    gamma: float | None = Field(
        None,
        gt=0,
        le=1,
        description="discount factor per time step. None = TMRL's 0.995 at the game's reference time step "
        "(TrackMania 0.05 s, the built-in game 0.04 s), scaled to keep the horizon in seconds: "
        "1 - 0.005 x time step / reference (0.9975 at the built-in game's 0.02 s)",
    )
    n_step: int = Field(
        1,
        ge=1,
        le=256,
        description="multi-step returns: the critics' target sums up to n_step discounted rewards (cut at episode "
        "ends) and bootstraps n_step steps later; the rewards of the steps in between are those of the policy "
        "that acted (uncorrected, and without their entropy bonus). 1 = one-step SAC",
    )
    step_penalty: float = Field(
        0.0,
        ge=0,
        description="subtracted from every transition's reward in the critics' target: a time cost that pays "
        "for speed. Training only: episode returns and test scores stay the env's rewards",
    )
    polyak: float = Field(
        0.995, ge=0, le=1, description="target networks: target <- polyak*target + (1-p)*net"
    )
    actor_average: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Polyak factor of an averaged copy of the actor, updated after every actor step: "
        "average <- actor_average*average + (1-a)*actor (0.9999 averages over about 10,000 actor steps). The "
        "average is the actor a run delivers: it drives the test episodes, is scored for keep-the-best and is "
        "exported as the run's actor; the live actor still explores. 0 = off, the live actor does everything",
    )
    smooth_spatial: float = Field(
        0.0,
        ge=0,
        description="weight of a spatial smoothness penalty on the actor (CAPS, Mysore et al. 2021): the mean "
        "squared distance between the deterministic actions at an observation and at the same observation with "
        "Gaussian noise of std smooth_sigma on its float components; 0 turns it off",
    )
    smooth_temporal: float = Field(
        0.0,
        ge=0,
        description="weight of a temporal smoothness penalty on the actor (CAPS): the mean squared distance "
        "between the deterministic actions at an observation and at the next one; 0 turns it off",
    )
    smooth_sigma: float = Field(
        0.05, gt=0, description="std of the observation noise of smooth_spatial (float components, unscaled)"
    )
    alpha: float | None = Field(
        None,
        gt=0,
        description="entropy coefficient (initial value when learned). None = TMRL's 0.01 at the game's "
        "reference time step, scaled with the step so the entropy bonus per second stays (0.005 at 0.02 s)",
    )
    learn_entropy: bool = Field(False, description="tune alpha towards target_entropy")
    target_entropy: float | None = Field(-0.5, description="entropy target; None means -action_dim")
    redq_n: int = Field(10, ge=2, description="REDQ: number of critics")
    redq_m: int = Field(2, ge=1, description="REDQ: critics in the random subset of the target minimum")
    redq_g: int = Field(20, ge=1, description="REDQ: critic updates per policy update")

    @model_validator(mode="after")
    def _check(self) -> AlgorithmConfig:
        if self.redq_m > self.redq_n:
            raise ValueError(f"redq_m ({self.redq_m}) must be <= redq_n ({self.redq_n})")
        if self.n_step > 1 and self.smooth_temporal:
            raise ValueError("smooth_temporal compares consecutive observations: it needs n_step = 1")
        if self.n_step > 1 and self.step_penalty:
            raise ValueError("step_penalty is paid per one-step transition: it needs n_step = 1")
        if self.lr_decay_steps is not None and not 0 <= self.lr_decay_steps[0] < self.lr_decay_steps[1]:
            raise ValueError(
                f"lr_decay_steps {list(self.lr_decay_steps)} must be [start, end] with 0 <= start < end"
            )
        return self

    def at_time_step(self, ratio: float) -> AlgorithmConfig:
        """A copy with ``gamma`` and ``alpha`` left at None filled in for a time step ``ratio`` times the reference
        one: ``1 - (1 - 0.995) * ratio`` and ``0.01 * ratio`` (TMRL's values at ratio 1). Rewards and the entropy
        bonus are paid every step, so this keeps the horizon and the bonus per second of game time
        (time-discretisation invariance, Tallec et al. 2019); values set explicitly are kept as they are."""
        update: dict[str, float] = {}
        if self.gamma is None:
            update["gamma"] = 1.0 - (1.0 - TMRL_GAMMA) * ratio
        if self.alpha is None:
            update["alpha"] = TMRL_ALPHA * ratio
        return self.model_copy(update=update) if update else self

    def lr_scale(self, env_steps: int) -> float:
        """Factor of the actor and critic learning rates after ``env_steps`` environment steps (1 without decay)."""
        if self.lr_decay_steps is None:
            return 1.0
        start, end = self.lr_decay_steps
        done = min(max((env_steps - start) / (end - start), 0.0), 1.0)
        return (1.0 - done) + done * self.lr_final_scale


class ModelConfig(_Strict):
    """Network shapes. ``backbone`` applies to uint8 frame components; vector components go through the MLP."""

    hidden: tuple[int, ...] = Field((256, 256), description="MLP hidden layer sizes (actor and each critic)")
    backbone: Literal["cnn", "mobilenet"] = Field(
        "cnn", description="image encoder: TMRL-style CNN or torchvision MobileNetV3-small"
    )
    share_critic_encoder: bool = Field(
        True,
        description="critics share one image encoder trained by their summed losses (as SB3; N critics then cost "
        "one CNN, not N as in TMRL); no effect without image components",
    )
    critic_layer_norm: bool = Field(
        True,
        description="layer normalisation (no affine) after each hidden layer of the critics, before the ReLU: it "
        "bounds the features, so Q cannot grow without limit for actions and states the replay barely holds "
        "(Ball et al. 2023, RLPD); the default since session 24 (docs/learning.md)",
    )
    log_std_min: float = Field(-20.0, description="lower clamp of the policy log standard deviation")
    log_std_max: float = Field(2.0, description="upper clamp of the policy log standard deviation")


class TrainerConfig(_Strict):
    """The training loop: replay, throttling, publishing, checkpoints, compute (docs/learning.md)."""

    batch_size: int = Field(
        128,
        ge=1,
        description="minibatch size (TMRL: 256; 128 costs 0.6 of the time per update on CPU, so a core-bound trainer "
        "makes 1.65x the updates; docs/learning.md)",
    )
    replay_capacity: int = Field(1_000_000, ge=2, description="replay ring capacity in rows")
    warmup_steps: int = Field(1000, ge=0, description="environment steps collected before the first update")
    max_updates_per_step: float = Field(
        4.0,
        gt=0,
        description="at most this many updates per environment step (update-to-data ratio cap; on 2 CPU cores "
        "the trainer reaches about 3 with the default network and batch)",
    )
    publish_every: int = Field(100, ge=1, description="publish the actor to workers every N updates")
    checkpoint_every: int = Field(5000, ge=1, description="write a checkpoint every N updates (and on stop)")
    log_every: int = Field(200, ge=1, description="write metrics every N updates")
    prefetch: int = Field(
        4, ge=0, description="minibatches the sampler thread keeps ready (0: sample in the training thread)"
    )
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N")
    threads: int = Field(
        1,
        ge=1,
        description="torch CPU threads; 1 is fastest for the MLP here: with the game, workers and relay on the same "
        "cores, more OpenMP threads spin-wait and slow updates down (measured 10x on 2 busy cores)",
    )
    seed: int = Field(0, description="seed of torch, the replay sampler and the exploration")


class RLConfig(_Strict):
    """Everything the trainer needs, as one object."""

    algorithm: AlgorithmConfig = AlgorithmConfig()
    model: ModelConfig = ModelConfig()
    trainer: TrainerConfig = TrainerConfig()


PRESETS: dict[str, AlgorithmConfig] = {
    # TMRL 0.7.1's defaults (DESIGN.md section 2).
    # The defaults are TMRL's, with gamma and alpha per second of game time; here per time step, as TMRL's.
    "tmrl-sac": AlgorithmConfig(gamma=TMRL_GAMMA, alpha=TMRL_ALPHA),
    # Usual SAC settings (CleanRL / SB3 style): fast learning on small synchronous continuous-control problems.
    "fast-sac": AlgorithmConfig(
        lr_actor=1e-3,
        lr_critic=1e-3,
        lr_entropy=1e-3,
        betas=(0.9, 0.999),
        gamma=0.99,
        polyak=0.995,
        alpha=0.2,
        learn_entropy=True,
        target_entropy=None,
    ),
}
PRESETS["tmrl-redq"] = PRESETS["tmrl-sac"].model_copy(update={"name": "redq"})
# The defaults of session 2 (docs/learning.md), tuned on a proxy without rtgym's action delay.
PRESETS["proxy-sac"] = PRESETS["fast-sac"].model_copy(update={"alpha": 0.1})


def preset(name: str, **overrides: object) -> AlgorithmConfig:
    """A named algorithm preset with optional field overrides; ConfigError for an unknown name."""
    if name not in PRESETS:
        raise ConfigError(f"unknown algorithm preset {name!r}; choose one of {sorted(PRESETS)}")
    return AlgorithmConfig.model_validate({**PRESETS[name].model_dump(), **overrides})

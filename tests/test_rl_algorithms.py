"""SAC and REDQ update steps checked against hand-computed quantities on tiny networks."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tmrl.errors import ConfigError
from tmrl.rl.config import PRESETS, AlgorithmConfig, ModelConfig, preset
from tmrl.rl.memory import Minibatch
from tmrl.rl.redq import REDQ
from tmrl.rl.sac import SAC
from tmrl.spaces import Component, ObservationSpec

SPEC = ObservationSpec((Component("state", (3,)),), 2)
SMALL = ModelConfig(hidden=(16, 16))
CPU = torch.device("cpu")


def minibatch(b: int = 32, seed: int = 0) -> Minibatch:
    g = torch.Generator().manual_seed(seed)
    term = (torch.rand(b, generator=g) < 0.3).float()
    trunc = (torch.rand(b, generator=g) < 0.3) & (term == 0)
    return Minibatch(
        obs={"state": torch.randn(b, 3, generator=g)},
        action=torch.rand(b, 2, generator=g) * 2 - 1,
        reward=torch.randn(b, generator=g),
        next_obs={"state": torch.randn(b, 3, generator=g)},
        terminated=term,
        truncated=trunc,
    )


def test_presets_are_tmrl_defaults_and_validated() -> None:
    sac = PRESETS["tmrl-sac"]
    assert (sac.lr_actor, sac.lr_critic, sac.lr_entropy, sac.gamma, sac.polyak, sac.alpha) == (
        1e-5,
        5e-5,
        3e-4,
        0.995,
        0.995,
        0.01,
    )
    assert not sac.learn_entropy and sac.target_entropy == -0.5
    redq = PRESETS["tmrl-redq"]
    assert (redq.name, redq.redq_n, redq.redq_m, redq.redq_g) == ("redq", 10, 2, 20)
    assert preset("tmrl-sac", lr_actor=1e-3).lr_actor == 1e-3
    with pytest.raises(ConfigError, match="unknown algorithm preset"):
        preset("nope")
    with pytest.raises(ValueError):
        AlgorithmConfig(redq_n=3, redq_m=4)
    with pytest.raises(ValueError):
        AlgorithmConfig(unknown=1)  # type: ignore[call-arg]


def test_gamma_and_alpha_left_unset_scale_with_the_time_step() -> None:
    # TMRL's per-step values at the reference step; the horizon and the entropy bonus per second stay.
    assert (AlgorithmConfig().at_time_step(1.0).gamma, AlgorithmConfig().at_time_step(1.0).alpha) == (
        0.995,
        0.01,
    )
    half = AlgorithmConfig().at_time_step(0.5)
    assert half.gamma == pytest.approx(0.9975) and half.alpha == pytest.approx(0.005)
    assert (1 - 0.995) / 0.04 == pytest.approx((1 - half.gamma) / 0.02)  # 1 / horizon in seconds
    explicit = AlgorithmConfig(gamma=0.9, alpha=0.3).at_time_step(0.5)
    assert (explicit.gamma, explicit.alpha) == (0.9, 0.3)
    # SAC on its own (no game, no time step): TMRL's per-step values.
    sac = SAC(SPEC, AlgorithmConfig(), SMALL, CPU)
    assert sac.gamma == 0.995 and float(sac.alpha) == pytest.approx(0.01)


def test_lr_decay_is_linear_from_start_to_end_steps_and_validated() -> None:
    algo = AlgorithmConfig(lr_decay_steps=(1000, 3000), lr_final_scale=0.2)
    assert [algo.lr_scale(s) for s in (0, 1000, 2000, 3000, 10_000)] == pytest.approx([1, 1, 0.6, 0.2, 0.2])
    assert AlgorithmConfig().lr_scale(10**9) == 1.0
    for bad in ((3000, 3000), (3000, 1000), (-1, 10)):
        with pytest.raises(ValueError, match="lr_decay_steps"):
            AlgorithmConfig(lr_decay_steps=bad)
    with pytest.raises(ValueError):
        AlgorithmConfig(lr_final_scale=1.5)


@given(
    start=st.integers(0, 10**6),
    length=st.integers(1, 10**6),
    final=st.floats(0, 1),
    a=st.integers(0, 3 * 10**6),
    b=st.integers(0, 3 * 10**6),
)
def test_lr_scale_never_increases_and_stays_between_final_and_one(
    start: int, length: int, final: float, a: int, b: int
) -> None:
    algo = AlgorithmConfig(lr_decay_steps=(start, start + length), lr_final_scale=final)
    lo, hi = sorted((a, b))
    assert final <= algo.lr_scale(hi) <= algo.lr_scale(lo) <= 1.0


@pytest.mark.parametrize("penalty", [0.0, 0.7])
def test_sac_critic_loss_uses_the_soft_target_and_only_termination_stops_bootstrap(penalty: float) -> None:
    torch.manual_seed(0)
    algo = AlgorithmConfig(gamma=0.9, alpha=0.3, learn_entropy=False, step_penalty=penalty)
    sac = SAC(SPEC, algo, SMALL, CPU)
    before = copy.deepcopy(sac)
    b = minibatch()
    rewards = b.reward.clone()
    torch.manual_seed(42)
    info = sac.update(b)
    # Recompute the critic loss from the networks as they were, with the same noise.
    torch.manual_seed(42)
    with torch.no_grad():
        a2, logp2 = before.actor(b.next_obs)
        q_next = before.critic_target(b.next_obs, a2).min(0).values
        target = b.reward - penalty + 0.9 * (1 - b.terminated) * (q_next - 0.3 * logp2)
        q = before.critic(b.obs, b.action)
        expected = ((q - target) ** 2).mean()
    assert torch.allclose(info["losses/critic"], expected, rtol=1e-5)
    # truncated rows bootstrap: the target differs from the reward where truncated and not terminated
    assert b.truncated.any()
    assert not torch.allclose(target[b.truncated], b.reward[b.truncated] - penalty)
    assert torch.allclose(target[b.terminated == 1], b.reward[b.terminated == 1] - penalty)
    assert torch.equal(b.reward, rewards)  # the penalty is not applied to the minibatch in place


@pytest.mark.parametrize("cls", [SAC, REDQ])
def test_nstep_targets_bootstrap_with_the_sampled_discount(cls) -> None:
    torch.manual_seed(0)
    algo = AlgorithmConfig(gamma=0.9, alpha=0.3, n_step=3, name="redq" if cls is REDQ else "sac", redq_n=3)
    net = cls(SPEC, algo, SMALL, CPU)
    b = minibatch()
    g = torch.Generator().manual_seed(7)
    b = b._replace(discount=0.9 ** torch.randint(1, 4, (32,), generator=g).float())
    with torch.no_grad():
        a2, logp2 = net.actor(b.next_obs)
        q_next = net.critic_target(b.next_obs, a2).min(0).values
        got = net._soft_target(b, q_next, logp2, torch.tensor(0.3))
    expected = b.reward + b.discount * (1 - b.terminated) * (q_next - 0.3 * logp2)
    assert torch.allclose(got, expected)
    one_step = b.reward + 0.9 * (1 - b.terminated) * (q_next - 0.3 * logp2)
    assert not torch.allclose(got, one_step)
    net.update(b)  # runs end to end on an n-step minibatch


def test_nstep_refuses_settings_that_need_one_step_transitions() -> None:
    with pytest.raises(ValueError, match="smooth_temporal"):
        AlgorithmConfig(n_step=3, smooth_temporal=1.0)
    with pytest.raises(ValueError, match="step_penalty"):
        AlgorithmConfig(n_step=3, step_penalty=0.1)
    with pytest.raises(ValueError):
        AlgorithmConfig(n_step=0)
    assert AlgorithmConfig(n_step=1, step_penalty=0.1).n_step == 1


def test_sac_polyak_and_fixed_alpha() -> None:
    torch.manual_seed(0)
    sac = SAC(SPEC, AlgorithmConfig(polyak=0.9, alpha=0.05, learn_entropy=False), SMALL, CPU)
    old_target = [p.clone() for p in sac.critic_target.parameters()]
    sac.update(minibatch())
    for t_old, t_new, p in zip(
        old_target, sac.critic_target.parameters(), sac.critic.parameters(), strict=True
    ):
        assert torch.allclose(t_new, 0.9 * t_old + 0.1 * p, atol=1e-6)
    assert math.isclose(float(sac.alpha), 0.05, rel_tol=1e-6)
    assert sac.alpha_opt is None and sac.updates == 1


@pytest.mark.parametrize("name", ["sac", "redq"])
def test_actor_average_follows_the_actor_after_each_actor_step_and_is_delivered(name: str) -> None:
    torch.manual_seed(0)
    off = SAC(SPEC, AlgorithmConfig(), SMALL, CPU)
    assert off.actor_average is None and off.delivered_actor is off.actor
    assert "actor_average" not in off.state_dict()

    algo = AlgorithmConfig(name=name, actor_average=0.9, lr_actor=1e-2, redq_n=3, redq_g=2)
    algorithm = (REDQ if name == "redq" else SAC)(SPEC, algo, SMALL, CPU)
    average = algorithm.actor_average
    assert average is not None and algorithm.delivered_actor is average
    assert all(
        torch.equal(a, p) for a, p in zip(average.parameters(), algorithm.actor.parameters(), strict=True)
    )
    assert not any(p.requires_grad for p in average.parameters())
    for i in range(4):
        before = [a.clone() for a in average.parameters()]
        actor_before = [p.clone() for p in algorithm.actor.parameters()]
        algorithm.update(minibatch(seed=i))
        actor_moved = any(
            not torch.equal(a, p) for a, p in zip(actor_before, algorithm.actor.parameters(), strict=True)
        )
        assert actor_moved == (name == "sac" or i % 2 == 1)  # REDQ: an actor step every redq_g updates
        for old, new, p in zip(before, average.parameters(), algorithm.actor.parameters(), strict=True):
            expected = 0.9 * old + 0.1 * p if actor_moved else old
            assert torch.allclose(new, expected, atol=1e-7)
    assert not all(
        torch.equal(a, p) for a, p in zip(average.parameters(), algorithm.actor.parameters(), strict=True)
    )

    # the average is part of the state; a state without it (made with the average off) starts it at the actor
    state = algorithm.state_dict()
    fresh = (REDQ if name == "redq" else SAC)(SPEC, algo, SMALL, CPU)
    fresh.load_state_dict(state)
    assert fresh.actor_average is not None
    for a, b in zip(fresh.actor_average.parameters(), average.parameters(), strict=True):
        assert torch.equal(a, b)
    del state["actor_average"]
    fresh.load_state_dict(state)
    for a, b in zip(fresh.actor_average.parameters(), algorithm.actor.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError):
        AlgorithmConfig(actor_average=1.0)


def test_learned_alpha_moves_towards_the_target_entropy() -> None:
    torch.manual_seed(0)
    # An unreachable target entropy (very high) must make alpha grow; a very low one must make it shrink.
    up = SAC(
        SPEC,
        AlgorithmConfig(learn_entropy=True, alpha=0.05, target_entropy=50.0, lr_entropy=1e-2),
        SMALL,
        CPU,
    )
    down = SAC(
        SPEC,
        AlgorithmConfig(learn_entropy=True, alpha=0.05, target_entropy=-50.0, lr_entropy=1e-2),
        SMALL,
        CPU,
    )
    for i in range(5):
        up.update(minibatch(seed=i))
        down.update(minibatch(seed=i))
    assert float(up.alpha) > 0.05 > float(down.alpha)
    assert SAC(SPEC, AlgorithmConfig(target_entropy=None), SMALL, CPU).target_entropy == -2.0


def test_actor_step_leaves_critics_untouched_by_actor_gradients() -> None:
    torch.manual_seed(0)
    sac = SAC(SPEC, AlgorithmConfig(lr_critic=1e-3, lr_actor=1e-3, gamma=0.995, alpha=0.01), SMALL, CPU)
    before = copy.deepcopy(sac)
    b = minibatch()
    torch.manual_seed(3)
    sac.update(b)
    # The critics' gradients after the update are those of the critic loss alone (the actor loss adds nothing).
    torch.manual_seed(3)
    with torch.no_grad():
        a2, logp2 = before.actor(b.next_obs)
        target = b.reward + 0.995 * (1 - b.terminated) * (
            before.critic_target(b.next_obs, a2).min(0).values - 0.01 * logp2
        )
    ((before.critic(b.obs, b.action) - target) ** 2).mean().backward()
    for p_after, p_ref in zip(sac.critic.parameters(), before.critic.parameters(), strict=True):
        assert p_after.grad is not None and p_ref.grad is not None
        assert torch.allclose(p_after.grad, p_ref.grad, atol=1e-6)
    assert any(
        not torch.equal(a, p) for a, p in zip(before.actor.parameters(), sac.actor.parameters(), strict=True)
    )


def test_redq_updates_the_actor_every_g_critic_updates_with_a_subset_target() -> None:
    torch.manual_seed(0)
    algo = AlgorithmConfig(name="redq", redq_n=5, redq_m=2, redq_g=3, lr_actor=1e-3, lr_critic=1e-3)
    redq = REDQ(SPEC, algo, SMALL, CPU)
    assert redq.critic.n == 5 and len(list(redq.critic_target.parameters())) == len(
        list(redq.critic.parameters())
    )
    changed = []
    for i in range(6):
        before = [p.clone() for p in redq.actor.parameters()]
        info = redq.update(minibatch(seed=i))
        changed.append(
            any(not torch.equal(a, p) for a, p in zip(before, redq.actor.parameters(), strict=True))
        )
        assert "losses/critic" in info
    assert changed == [False, False, True, False, False, True]
    assert redq.updates == 6


def test_redq_target_is_min_over_the_drawn_subset() -> None:
    torch.manual_seed(0)
    algo = AlgorithmConfig(
        name="redq", redq_n=6, redq_m=2, redq_g=100, gamma=0.5, alpha=0.2, step_penalty=0.3
    )
    redq = REDQ(SPEC, algo, SMALL, CPU)
    before = copy.deepcopy(redq)
    b = minibatch()
    torch.manual_seed(7)
    info = redq.update(b)
    torch.manual_seed(7)
    with torch.no_grad():
        a2, logp2 = before.actor(b.next_obs)
        subset = torch.randperm(6)[:2]
        q_all = before.critic_target(b.next_obs, a2)
        target = b.reward - 0.3 + 0.5 * (1 - b.terminated) * (q_all[subset].min(0).values - 0.2 * logp2)
        expected = ((before.critic(b.obs, b.action) - target) ** 2).mean()
    assert torch.allclose(info["losses/critic"], expected, rtol=1e-5)


def _deterministic(sac: SAC, obs: dict[str, torch.Tensor]) -> torch.Tensor:
    return sac.actor(obs, deterministic=True)[0]


def test_smoothness_penalties_are_the_weighted_squared_action_distances() -> None:
    torch.manual_seed(0)
    b = minibatch()
    temporal = SAC(SPEC, AlgorithmConfig(smooth_temporal=3.0), SMALL, CPU)
    with torch.no_grad():
        got = temporal._smoothness(b)
        step = _deterministic(temporal, b.obs) - _deterministic(temporal, b.next_obs)
        want = 3.0 * step.pow(2).sum(-1).mean()
    assert got is not None and torch.allclose(got, want)

    spatial = SAC(SPEC, AlgorithmConfig(smooth_spatial=2.0, smooth_sigma=0.1), SMALL, CPU)
    with torch.no_grad():
        torch.manual_seed(5)
        got = spatial._smoothness(b)
        torch.manual_seed(5)
        noisy = {"state": b.obs["state"] + 0.1 * torch.randn_like(b.obs["state"])}
        want = 2.0 * (_deterministic(spatial, b.obs) - _deterministic(spatial, noisy)).pow(2).sum(-1).mean()
    assert got is not None and torch.allclose(got, want) and got > 0
    assert SAC(SPEC, AlgorithmConfig(), SMALL, CPU)._smoothness(b) is None
    assert "losses/smooth" in spatial.update(b)
    assert "losses/smooth" not in SAC(SPEC, AlgorithmConfig(), SMALL, CPU).update(b)


def test_spatial_smoothness_makes_the_actor_less_sensitive_to_observation_noise() -> None:
    def sensitivity(weight: float) -> float:
        torch.manual_seed(0)
        sac = SAC(SPEC, AlgorithmConfig(lr_actor=3e-3, lr_critic=3e-3, smooth_spatial=weight), SMALL, CPU)
        for i in range(150):
            sac.update(minibatch(seed=i))
        b = minibatch(b=512, seed=1000)
        with torch.no_grad():
            noisy = {"state": b.obs["state"] + 0.05 * torch.randn_like(b.obs["state"])}
            return float((_deterministic(sac, b.obs) - _deterministic(sac, noisy)).pow(2).sum(-1).mean())

    assert sensitivity(50.0) < 0.5 * sensitivity(0.0)


def test_redq_actor_step_adds_the_smoothness_penalty() -> None:
    torch.manual_seed(0)
    algo = AlgorithmConfig(name="redq", redq_n=3, redq_m=2, redq_g=2, smooth_temporal=1.0)
    redq = REDQ(SPEC, algo, SMALL, CPU)
    assert "losses/smooth" not in redq.update(minibatch(seed=0))
    assert float(redq.update(minibatch(seed=1))["losses/smooth"]) > 0

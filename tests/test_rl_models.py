"""Models: the squashed Gaussian, the critic ensemble, image backbones, and the pickle-free actor export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from tmrl.errors import CheckpointError
from tmrl.rl.config import ModelConfig
from tmrl.rl.export import actor_from_arrays, actor_meta, actor_to_arrays, load_actor, save_actor
from tmrl.rl.models import Actor, QEnsemble
from tmrl.spaces import Component, ObservationSpec

LIDAR = ObservationSpec(
    (Component("speed", (1,)), Component("lidar", (19,), history=4), Component("prev_actions", (2, 3))), 3
)
IMAGES = ObservationSpec((Component("telemetry", (3,)), Component("frames", (64, 64), "uint8", history=4)), 3)


def lidar_obs(b: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "speed": torch.rand(b, 1, generator=g),
        "lidar": torch.rand(b, 4, 19, generator=g),
        "prev_actions": torch.rand(b, 2, 3, generator=g) * 2 - 1,
    }


def image_obs(b: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "telemetry": torch.rand(b, 3, generator=g),
        "frames": torch.randint(0, 256, (b, 4, 64, 64), dtype=torch.uint8, generator=g),
    }


def test_log_prob_matches_torch_tanh_normal_and_actions_are_bounded() -> None:
    torch.manual_seed(0)
    actor = Actor(LIDAR, ModelConfig(hidden=(32, 32)))
    obs = lidar_obs(64)
    torch.manual_seed(1)
    action, logp = actor(obs)
    assert action.shape == (64, 3) and logp is not None and logp.shape == (64,)
    assert action.abs().max() <= 1.0
    # Recompute with torch.distributions from the same mean / std.
    h = actor.trunk(actor.encoder(obs))
    mean, log_std = actor.mean(h), actor.log_std(h).clamp(-20, 2)
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform(cache_size=1)])
    clipped = action.clamp(-1 + 1e-6, 1 - 1e-6)
    expected = dist.log_prob(clipped).sum(-1)
    ok = action.abs() < 0.999  # atanh is ill-conditioned at the bounds
    assert torch.allclose(logp[ok.all(-1)], expected[ok.all(-1)], atol=2e-3)


def test_deterministic_action_is_tanh_of_mean() -> None:
    actor = Actor(LIDAR, ModelConfig(hidden=(16,)))
    obs = lidar_obs()
    action, logp = actor(obs, deterministic=True)
    assert logp is None
    assert torch.allclose(action, torch.tanh(actor.mean(actor.trunk(actor.encoder(obs)))))
    single = {k: v[0].numpy() for k, v in obs.items()}
    assert np.allclose(actor.act(single, deterministic=True), action[0].detach().numpy(), atol=1e-6)


def test_a_given_noise_draw_is_the_stochastic_action() -> None:
    actor = Actor(LIDAR, ModelConfig(hidden=(16,)))
    obs = lidar_obs()
    h = actor.trunk(actor.encoder(obs))
    mean, std = actor.mean(h), actor.log_std(h).clamp(-20, 2).exp()
    eps = torch.randn(7, 3)
    action, _ = actor(obs, eps=eps)
    assert torch.allclose(action, torch.tanh(mean + std * eps), atol=1e-6)
    single = {k: v[0].numpy() for k, v in obs.items()}
    noise = eps[0].numpy()
    assert np.allclose(actor.act(single, noise=noise), action[0].detach().numpy(), atol=1e-6)
    assert not np.allclose(actor.act(single, noise=-noise), action[0].detach().numpy(), atol=1e-3)
    # the deterministic action ignores the noise
    assert np.allclose(
        actor.act(single, deterministic=True, noise=noise), torch.tanh(mean[0]).detach().numpy()
    )


@pytest.mark.parametrize("layer_norm", [False, True])
def test_ensemble_members_are_independent_critics(layer_norm: bool) -> None:
    torch.manual_seed(0)
    q = QEnsemble(LIDAR, ModelConfig(hidden=(32, 16), critic_layer_norm=layer_norm), n=5)
    obs, act = lidar_obs(), torch.rand(7, 3) * 2 - 1
    all_q = q(obs, act)
    assert all_q.shape == (5, 7)
    x = torch.cat([obs["speed"], obs["lidar"].flatten(1), obs["prev_actions"].flatten(1), act], 1)
    for i in range(5):  # member i as a plain MLP
        h = x
        for j, layer in enumerate(q.layers):
            h = h @ layer.weight[i] + layer.bias[i]
            if j < len(q.layers) - 1:
                if layer_norm:  # each hidden feature vector to mean 0, variance 1
                    h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(
                        h.var(-1, unbiased=False, keepdim=True) + 1e-5
                    )
                h = torch.relu(h)
        assert torch.allclose(all_q[i], h.squeeze(-1), atol=1e-5)
    subset = torch.tensor([4, 1])
    assert torch.allclose(q(obs, act, subset), all_q[[4, 1]], atol=1e-6)
    assert not torch.allclose(all_q[0], all_q[1])


@pytest.mark.parametrize("backbone", ["cnn", "mobilenet"])
def test_image_models_take_uint8_frames(backbone: str) -> None:
    cfg = ModelConfig(backbone=backbone, hidden=(64, 64))
    actor, q = Actor(IMAGES, cfg), QEnsemble(IMAGES, cfg, n=2)
    obs = image_obs()
    action, logp = actor(obs)
    assert action.shape == (3, 3) and logp is not None
    assert q(obs, action).shape == (2, 3)
    assert len(q.encoders) == 1  # one CNN shared by the critics by default
    per_critic = QEnsemble(IMAGES, cfg.model_copy(update={"share_critic_encoder": False}), n=2)
    assert len(per_critic.encoders) == 2 and per_critic(obs, action).shape == (2, 3)  # one each, as TMRL
    # the frames matter: changing them changes the output
    other = dict(obs, frames=255 - obs["frames"])
    assert not torch.allclose(actor(obs, deterministic=True)[0], actor(other, deterministic=True)[0])


def test_cnn_is_tmrl_geometry() -> None:
    actor = Actor(IMAGES, ModelConfig())
    convs = [m for m in actor.encoder.images["frames"] if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (4, 64, 8, 2),
        (64, 64, 4, 2),
        (64, 128, 4, 2),
        (128, 128, 4, 2),
    ]
    assert actor.encoder.out_dim == 128 + 3


@pytest.mark.parametrize("spec,obs_fn", [(LIDAR, lidar_obs), (IMAGES, image_obs)])
def test_actor_export_round_trip(tmp_path: Path, spec: ObservationSpec, obs_fn) -> None:
    actor = Actor(spec, ModelConfig(hidden=(32, 32)))
    arrays, meta = actor_to_arrays(actor), actor_meta(actor, weight_version=3)
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    clone = actor_from_arrays(arrays, meta)
    obs = obs_fn()
    expected = actor(obs, deterministic=True)[0]
    assert torch.equal(clone(obs, deterministic=True)[0], expected)
    path = save_actor(tmp_path / "w" / "actor.safetensors", actor, weight_version=3)
    loaded = load_actor(path)
    assert torch.equal(loaded(obs, deterministic=True)[0], expected)
    assert not list(path.parent.glob("*.tmp-*"))


def test_actor_records_its_pedal_mapping(tmp_path: Path) -> None:
    """The mapping an actor was trained with travels in its file; files from before the field mean "clip"."""
    linear = ObservationSpec(LIDAR.components, LIDAR.action_dim, "linear")
    assert linear != LIDAR and LIDAR.pedals == "clip"
    assert (
        load_actor(save_actor(tmp_path / "a.safetensors", Actor(linear, ModelConfig(hidden=(8,))))).spec
        == linear
    )
    old = {k: v for k, v in LIDAR.to_dict().items() if k != "pedals"}
    assert ObservationSpec.from_dict(old) == LIDAR
    with pytest.raises(ValueError, match="pedal mapping"):
        ObservationSpec(LIDAR.components, 3, "half")


def test_actor_file_is_safetensors_layout(tmp_path: Path) -> None:
    import json
    import struct

    path = save_actor(tmp_path / "a.safetensors", Actor(LIDAR, ModelConfig(hidden=(8,))))
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    assert header["mean.weight"]["dtype"] == "F32" and header["mean.weight"]["shape"] == [3, 8]
    assert json.loads(header["__metadata__"]["tmrl"])["format"] == "tmrl-actor"


def test_bad_actor_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read"):
        load_actor(tmp_path / "missing.safetensors")
    path = save_actor(tmp_path / "a.safetensors", Actor(LIDAR, ModelConfig(hidden=(8,))))
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_actor(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_actor(tmp_path / "junk.safetensors")
    actor = Actor(LIDAR, ModelConfig(hidden=(8,)))
    arrays = actor_to_arrays(actor)
    arrays.pop("mean.bias")
    with pytest.raises(CheckpointError, match="do not match"):
        actor_from_arrays(arrays, actor_meta(actor))
    with pytest.raises(CheckpointError, match="format"):
        actor_from_arrays(actor_to_arrays(actor), {"format": "other"})

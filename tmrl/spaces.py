"""Observation layout shared by environments, the replay ring, the models and the wire.

An observation is a dict of named components. A component with ``history`` K > 1 (LIDAR scans, frames) is seen
by the policy as an array of shape (K, *shape), oldest first, but stored and sent once per step as a single
(*shape) slice: the replay ring rebuilds the K-step history at sampling time. A component with K == 1 (speed,
previous actions...) has shape (*shape) everywhere.

A worker *batch* (and a ``ReplayRing.append_batch`` call) carries, for n consecutive steps of one stream:
``obs.<name>`` (n, *shape), ``action`` (n, A) float32, ``reward`` (n,) float32, ``terminated``, ``truncated`` and
``first`` (n,) bool. Row t holds the observation at t, the action taken at t, and the reward / termination that
followed it; ``first`` marks an episode's first step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

DTYPES = ("uint8", "float32")
ActionName = Literal["gas", "brake", "steer"]
"""The action's dimensions, in order (each in [-1, 1])."""
ACTION_NAMES: tuple[str, ...] = get_args(ActionName)
PedalMapping = Literal["clip", "linear"]
"""How the game reads the gas and brake actions (``EnvConfig.pedals``)."""
PEDAL_MAPPINGS: tuple[str, ...] = get_args(PedalMapping)


def pedal_values(gas: float, brake: float, mapping: str) -> tuple[float, float]:
    """The gas and brake an action asks of the game's controller (pressed when > 0), per ``EnvConfig.pedals``:
    'clip' passes them on (the game presses max(0, value)); 'linear' maps [-1, 1] onto [0, 1]."""
    if mapping == "linear":
        return 0.5 * (gas + 1.0), 0.5 * (brake + 1.0)
    return gas, brake


@dataclass(frozen=True)
class Component:
    """One named part of an observation."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    history: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"component {self.name!r}: dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.history < 1 or any(d < 1 for d in self.shape):
            raise ValueError(f"component {self.name!r}: history and every dimension must be >= 1")

    @property
    def policy_shape(self) -> tuple[int, ...]:
        """Shape the policy sees for one observation."""
        return (self.history, *self.shape) if self.history > 1 else self.shape


@dataclass(frozen=True)
class ObservationSpec:
    """The ordered components of an observation, the action dimension and how the game reads the pedal actions
    (``EnvConfig.pedals``; files written before it existed hold no mapping and mean "clip")."""

    components: tuple[Component, ...]
    action_dim: int
    pedals: str = "clip"

    def __post_init__(self) -> None:
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate component names in {names}")
        if self.pedals not in PEDAL_MAPPINGS:
            raise ValueError(f"pedal mapping must be one of {PEDAL_MAPPINGS}, not {self.pedals!r}")

    def ring_components(self) -> list[tuple[str, tuple[int, ...], str, int]]:
        """The ``components`` argument of ``tmrl._core.ReplayRing``."""
        return [(c.name, c.shape, c.dtype, c.history) for c in self.components]

    def step_slice(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What is stored for one step: the newest slice of history components, the rest as is."""
        return {c.name: (obs[c.name][-1] if c.history > 1 else obs[c.name]) for c in self.components}

    def to_dict(self) -> dict:
        return {
            "action_dim": self.action_dim,
            "pedals": self.pedals,
            "components": [
                {"name": c.name, "shape": list(c.shape), "dtype": c.dtype, "history": c.history}
                for c in self.components
            ],
        }

    @classmethod
    def from_dict(cls, doc: Mapping) -> ObservationSpec:
        comps: Sequence[Mapping] = doc["components"]
        return cls(
            tuple(Component(c["name"], tuple(c["shape"]), c["dtype"], int(c["history"])) for c in comps),
            int(doc["action_dim"]),
            str(doc.get("pedals", "clip")),
        )

"""``TransitionRecorder``: environment steps -> replay rows (the row convention of ``tmrl/spaces.py``).

Feed it ``reset(obs)`` at the start of an episode, then ``step(action, reward, terminated, truncated, next_obs)``
after every environment step. Row t holds the observation at t, the action taken at t and the reward / flags that
followed; the episode's final observation gets a row of its own (zero action, zero reward, the episode's end
flags) so the last transition has its successor. ``take()`` hands over the completed rows as one batch, exactly the
columns of ``ReplayRing.append_batch`` and of a worker batch. Storage is preallocated and reused: no per-step
allocation besides the small copies into it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tmrl.spaces import ObservationSpec


class TransitionRecorder:
    """Accumulates rows of one stream (one worker's sequence of episodes)."""

    def __init__(self, spec: ObservationSpec, initial_rows: int = 256) -> None:
        self.spec = spec
        self._rows = 0
        self._cap = 0
        self._cols: dict[str, np.ndarray] = {}
        self._grow(max(1, initial_rows))
        self._pending: dict[str, np.ndarray] | None = None  # obs at t, waiting for the action taken at t
        self._first = False
        self.episode_return = 0.0
        self.episode_length = 0
        self._finished: list[dict] = []

    def _grow(self, cap: int) -> None:
        cols: dict[str, np.ndarray] = {}
        for c in self.spec.components:
            cols[f"obs.{c.name}"] = np.zeros((cap, *c.shape), dtype=c.dtype)
        cols["action"] = np.zeros((cap, self.spec.action_dim), dtype=np.float32)
        cols["reward"] = np.zeros(cap, dtype=np.float32)
        for flag in ("terminated", "truncated", "first"):
            cols[flag] = np.zeros(cap, dtype=bool)
        for key, old in self._cols.items():
            cols[key][: self._rows] = old[: self._rows]
        self._cols, self._cap = cols, cap

    def _slice(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.array(v, copy=True) for k, v in self.spec.step_slice(obs).items()}

    def _write(
        self, obs: Mapping[str, np.ndarray], action, reward: float, term: bool, trunc: bool, first: bool
    ) -> None:
        if self._rows == self._cap:
            self._grow(2 * self._cap)
        i = self._rows
        for name, value in obs.items():
            self._cols[f"obs.{name}"][i] = value
        if action is None:
            self._cols["action"][i] = 0.0
        else:
            self._cols["action"][i] = action
        self._cols["reward"][i] = reward
        self._cols["terminated"][i] = term
        self._cols["truncated"][i] = trunc
        self._cols["first"][i] = first
        self._rows += 1

    @property
    def in_episode(self) -> bool:
        return self._pending is not None

    def reset(self, obs: Mapping[str, np.ndarray]) -> None:
        """Start an episode with its first observation (policy shapes). An episode still open is cut: its
        pending observation becomes a final row marked truncated."""
        if self._pending is not None:
            self._end(terminated=False, truncated=True)
        self._pending = self._slice(obs)
        self._first = True
        self.episode_return = 0.0
        self.episode_length = 0

    def step(
        self,
        action: np.ndarray,
        reward: float,
        terminated: bool,
        truncated: bool,
        next_obs: Mapping[str, np.ndarray],
    ) -> None:
        """Record one environment step; at the episode's end also its final observation row."""
        if self._pending is None:
            raise RuntimeError("TransitionRecorder.step() before reset(): start each episode with reset(obs)")
        self._write(self._pending, action, float(reward), bool(terminated), bool(truncated), self._first)
        self._first = False
        self.episode_return += float(reward)
        self.episode_length += 1
        self._pending = self._slice(next_obs)
        if terminated or truncated:
            self._end(bool(terminated), bool(truncated))

    def _end(self, terminated: bool, truncated: bool) -> None:
        assert self._pending is not None
        self._write(self._pending, None, 0.0, terminated, truncated, self._first)
        self._finished.append(
            {"return": self.episode_return, "length": self.episode_length, "terminated": terminated}
        )
        self._pending = None

    def __len__(self) -> int:
        """Completed rows waiting to be taken."""
        return self._rows

    def take(self, allow_empty: bool = False) -> dict[str, np.ndarray] | None:
        """The completed rows as a batch (fresh arrays); clears them. With none: None, or with ``allow_empty``
        a batch of 0 rows (to carry episode stats when nothing else will)."""
        if self._rows == 0 and not allow_empty:
            return None
        n, self._rows = self._rows, 0
        return {k: v[:n].copy() for k, v in self._cols.items()}

    def pop_episodes(self) -> list[dict]:
        """Stats of the episodes finished since the last call: return, length, terminated."""
        done, self._finished = self._finished, []
        return done

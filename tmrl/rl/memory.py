"""The trainer's replay memory: the Rust ``ReplayRing`` plus a sampler thread that keeps minibatches ready.

``Minibatch`` is the whole contract between the memory and the algorithms: observation dicts and tensors with a
leading batch dimension. The sampler thread fills preallocated slots with ``ReplayRing.sample(out=...)`` (the Rust
sampling runs without the GIL) and wraps them as torch tensors without copying; a minibatch handed out by
``sample()`` stays valid until the next ``sample()`` call, when its slot goes back to the sampler. With
``prefetch=0`` sampling happens in the caller's thread instead (fully deterministic).

With ``n_step`` > 1 the ring samples multi-step returns (``ReplayRing.sample``): ``reward`` is the discounted sum
of up to n rewards, ``next_obs`` the observation after the last of them, and ``Minibatch.discount`` gamma^m.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from tmrl._core import ReplayRing
from tmrl.spaces import ObservationSpec


class Minibatch(NamedTuple):
    """A sampled minibatch: obs / next_obs map component names to (B, *policy_shape) tensors."""

    obs: dict[str, Tensor]
    action: Tensor  # (B, A) float32
    reward: Tensor  # (B,) float32
    next_obs: dict[str, Tensor]
    terminated: Tensor  # (B,) float32, 1.0 where the episode ended by termination (no bootstrap)
    truncated: Tensor  # (B,) bool, informative only: truncation bootstraps
    discount: Tensor | None = None  # (B,) float32 gamma^m of n-step returns; None: one step, gamma


class _Slot:
    """Preallocated numpy output of one ``ReplayRing.sample`` call and its zero-copy torch views."""

    def __init__(
        self, ring: ReplayRing, spec: ObservationSpec, batch_size: int, n_step: int, gamma: float | None
    ) -> None:
        self.n_step, self.gamma = n_step, gamma
        self.arrays = ring.alloc_batch(batch_size, n_step=n_step)
        t = {k: torch.from_numpy(v) for k, v in self.arrays.items()}
        self.terminated = torch.zeros(batch_size, dtype=torch.float32)
        names = [c.name for c in spec.components]
        self.batch = Minibatch(
            obs={n: t[f"obs.{n}"] for n in names},
            action=t["action"],
            reward=t["reward"],
            next_obs={n: t[f"next_obs.{n}"] for n in names},
            terminated=self.terminated,
            truncated=t["truncated"],
            discount=t.get("discount"),
        )
        self._term_bool = t["terminated"]

    def fill(self, ring: ReplayRing) -> None:
        if self.n_step == 1:
            ring.sample(len(self.terminated), out=self.arrays)
        else:
            ring.sample(len(self.terminated), out=self.arrays, n_step=self.n_step, gamma=self.gamma)
        self.terminated.copy_(self._term_bool)

    def tensors(self) -> dict[str, Tensor]:
        """Copies of the slot's content (for checkpoints)."""
        out = {k: torch.from_numpy(v.copy()) for k, v in self.arrays.items()}
        out["terminated_f"] = self.terminated.clone()
        return out

    def load(self, tensors: Mapping[str, Tensor]) -> None:
        missing = sorted(set(self.arrays) - set(tensors))
        if missing:
            raise ValueError(
                f"a saved minibatch lacks {missing}: it was sampled with another algorithm.n_step than {self.n_step}"
            )
        for k, v in self.arrays.items():
            v[...] = tensors[k].numpy()
        self.terminated.copy_(tensors["terminated_f"])


class ReplayMemory:
    """Replay ring + sampler thread. ``append`` from the ingest side, ``sample`` from the update loop."""

    def __init__(
        self,
        spec: ObservationSpec,
        capacity: int,
        batch_size: int,
        *,
        device: torch.device | None = None,
        seed: int | None = None,
        prefetch: int = 4,
        ring: ReplayRing | None = None,
        n_step: int = 1,
        gamma: float | None = None,
    ) -> None:
        if n_step > 1 and gamma is None:
            raise ValueError(f"n_step = {n_step} needs gamma")
        self.spec = spec
        self.n_step, self.gamma = n_step, gamma
        self.batch_size = batch_size
        self.device = device or torch.device("cpu")
        self.prefetch = prefetch
        self.ring = (
            ring
            if ring is not None
            else ReplayRing(capacity, spec.ring_components(), spec.action_dim, seed=seed)
        )
        n_slots = max(prefetch, 1) + 1
        self._slots = [_Slot(self.ring, spec, batch_size, n_step, gamma) for _ in range(n_slots)]
        self._free: queue.Queue[int] = queue.Queue()
        self._ready: queue.Queue[int] = queue.Queue()
        for i in range(n_slots):
            self._free.put(i)
        self._held: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None

    # -- ingest ---------------------------------------------------------------------------------------------
    def append(self, stream: int, arrays: Mapping[str, np.ndarray]) -> int:
        """Append one batch of rows of ``stream`` (the ``ReplayRing.append_batch`` columns); returns rows added."""

        def col(key: str) -> np.ndarray:  # arrays decoded from the wire may be misaligned views: copy those
            return np.require(arrays[key], requirements=("C", "A"))

        obs = {c.name: col(f"obs.{c.name}") for c in self.spec.components}
        self.ring.append_batch(
            stream, obs, col("action"), col("reward"), col("terminated"), col("truncated"), col("first")
        )
        return len(arrays["reward"])

    def __len__(self) -> int:
        return len(self.ring)

    def num_transitions(self) -> int:
        return self.ring.num_transitions()

    # -- sampling -------------------------------------------------------------------------------------------
    def sample(self) -> Minibatch:
        """The next minibatch, on ``device``. Valid until the next call."""
        if self._held is not None:
            self._free.put(self._held)
            self._held = None
        if self.prefetch == 0:
            try:
                i = self._ready.get_nowait()  # restored from a checkpoint
            except queue.Empty:
                i = self._free.get_nowait()
                self._slots[i].fill(self.ring)
        else:
            self._start()
            i = self._next_ready()
        batch = self._slots[i].batch
        if self.device.type == "cpu":
            self._held = i
            return batch
        moved = _to_device(batch, self.device)
        self._free.put(i)
        return moved

    def _next_ready(self) -> int:
        while True:
            try:
                return self._ready.get(timeout=0.5)
            except queue.Empty:
                if self._error is not None:
                    raise RuntimeError("replay sampler thread failed") from self._error
                if self._thread is None or not self._thread.is_alive():
                    raise RuntimeError("replay sampler thread is not running") from None

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tmrl-replay-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    i = self._free.get(timeout=0.1)
                except queue.Empty:
                    continue
                self._slots[i].fill(self.ring)  # releases the GIL while sampling
                self._ready.put(i)
        except BaseException as exc:  # surfaced by sample()
            self._error = exc

    def pause(self) -> list[dict[str, Tensor]]:
        """Stop the sampler thread; return (and keep queued) the minibatches it prepared but nobody consumed.

        Together with the ring's saved RNG state they make a resumed run sample exactly what this one would."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        ready: list[int] = []
        while not self._ready.empty():
            ready.append(self._ready.get_nowait())
        for i in ready:
            self._ready.put(i)
        return [self._slots[i].tensors() for i in ready]

    def restore_ready(self, batches: list[dict[str, Tensor]]) -> None:
        """Queue minibatches saved by ``pause`` (on resume) ahead of anything newly sampled."""
        self.pause()
        while self._free.qsize() < len(batches):  # saved with a larger prefetch: add slots
            self._slots.append(_Slot(self.ring, self.spec, self.batch_size, self.n_step, self.gamma))
            self._free.put(len(self._slots) - 1)
        for tensors in batches:
            i = self._free.get_nowait()
            self._slots[i].load(tensors)
            self._ready.put(i)

    def close(self) -> None:
        self.pause()


def _to_device(b: Minibatch, device: torch.device) -> Minibatch:
    def mv(t: Tensor) -> Tensor:
        return t.to(device, non_blocking=False)

    return Minibatch(
        obs={k: mv(v) for k, v in b.obs.items()},
        action=mv(b.action),
        reward=mv(b.reward),
        next_obs={k: mv(v) for k, v in b.next_obs.items()},
        terminated=mv(b.terminated),
        truncated=mv(b.truncated),
        discount=None if b.discount is None else mv(b.discount),
    )

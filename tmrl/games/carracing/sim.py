"""The built-in game's world: CarRacing-v3 physics and track, a cheap renderer of its 96x96 view, telemetry.

Physics and the lap rule are Gymnasium's (``CarRacing.step`` with its rendering switched off). The picture is
CarRacing's "state_pixels" view (a 1000x800 window camera that follows and rotates with the car, squeezed to the
frame size) drawn directly at the frame size times ``supersample`` with every polygon transformed at once in
numpy and the off-screen ones culled, then smoothly scaled down: about 1 ms instead of CarRacing's ~15 ms. The
zoom-in animation of CarRacing's first second is disabled (the camera starts at its final zoom). The reward
counter text of CarRacing's dashboard is not drawn; the bars are.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pygame
from gymnasium.envs.box2d import car_dynamics
from gymnasium.envs.box2d.car_racing import (
    FPS,
    GRASS_DIM,
    PLAYFIELD,
    SCALE,
    WINDOW_H,
    WINDOW_W,
    ZOOM,
    CarRacing,
)

from tmrl.games.telemetry import TelemetryFrame

GAME_DT = 1.0 / FPS
"""Game time advanced by one physics frame (CarRacing's 1/50 s)."""

_GEAR_SPEEDS_KMH = (40.0, 80.0, 125.0, 175.0, 230.0)
_GEAR_RATIOS = (3.2, 2.3, 1.75, 1.4, 1.15, 1.0)


class _QuietCarRacing(CarRacing):
    """CarRacing whose step does not render (we render on demand with ``Renderer``)."""

    def _render(self, mode: str) -> None:  # type: ignore[override]
        return None


class RaceSim:
    """One car on one fixed track; ``tick`` advances one physics frame and returns its telemetry."""

    def __init__(self, seed: int, lap_complete_percent: float = 0.95) -> None:
        self.seed = seed
        self.env = _QuietCarRacing(render_mode=None, lap_complete_percent=lap_complete_percent)
        self.distance = 0.0
        self.finished = False
        self.steer = self.gas = self.brake = 0.0
        self.env.reset(seed=seed)  # builds the track for this seed (tens of ms)

    def set_track(self, seed: int) -> None:
        """Build the track of ``seed`` (tens of ms; nothing when it is the current one) with a new car standing
        at its start line."""
        if seed == self.seed:
            return
        self.env.reset(seed=seed)
        self.seed = seed
        self.distance = 0.0
        self.finished = False
        self.steer = self.gas = self.brake = 0.0

    def reset(self, tile: int = 0, speed_kmh: float = 0.0) -> None:
        """Back to the start line of the same track (or onto ``tile``), in about a millisecond.

        What ``CarRacing.reset(seed)`` does minus rebuilding the (identical) track: a new car standing on the
        first tile (or on ``tile``, facing the driving direction), every tile unvisited, lap counters and game
        time at zero. With ``speed_kmh`` the car starts rolling at that speed along its heading (hull and wheels
        moving, the wheels spinning to match, so it coasts as if it had driven there). Raises ValueError for a
        tile outside the track or a negative speed.
        """
        if not 0 <= tile < self.n_tiles:
            raise ValueError(f"tile {tile} is not on the track (0..{self.n_tiles - 1})")
        if not speed_kmh >= 0.0:
            raise ValueError(f"start speed {speed_kmh} km/h must be >= 0")
        env = self.env
        self.car.destroy()
        road: list[Any] = list(env.road or ())
        for piece in road:
            piece.road_visited = False
        env.reward = env.prev_reward = 0.0
        env.tile_visited_count = 0
        env.t = 0.0
        env.new_lap = False
        env.car = car_dynamics.Car(env.world, *env.track[tile][1:4])
        if speed_kmh > 0.0:
            self._roll(env.car, float(env.track[tile][1]), speed_kmh / 3.6)
        env.step(None)  # type: ignore[arg-type]  # CarRacing.reset ends with one actionless frame: so do we
        self.distance = 0.0
        self.finished = False
        self.steer = self.gas = self.brake = 0.0

    @staticmethod
    def _roll(car: car_dynamics.Car, angle: float, speed: float) -> None:
        # a Box2D body's forward (its local +y) in world coordinates at rotation ``angle``
        velocity = (-math.sin(angle) * speed, math.cos(angle) * speed)
        car.hull.linearVelocity = velocity
        for wheel in car.wheels:
            wheel.linearVelocity = velocity
            wheel.omega = speed / wheel.wheel_rad  # rolling without slip

    @property
    def n_tiles(self) -> int:
        """Tiles of the track (also the points of ``track_xy``)."""
        return len(self.env.track)

    @property
    def car(self) -> car_dynamics.Car:
        """The car (exists once reset)."""
        car = self.env.car
        assert car is not None
        return car

    @property
    def track_xy(self) -> np.ndarray:
        """Track centre line, (N, 2) float64 world x, y, in driving order starting at the start line."""
        return np.array([(t[2], t[3]) for t in self.env.track], dtype=np.float64)

    def tick(self, gas: float, brake: float, steer: float) -> TelemetryFrame:
        """Advance one physics frame with env-style values in [-1, 1] (gas/brake = max(0, value))."""
        self.gas = max(0.0, min(1.0, gas))
        self.brake = max(0.0, min(1.0, brake))
        self.steer = max(-1.0, min(1.0, steer))
        env = self.env
        env.step(np.array([self.steer, self.gas, self.brake], dtype=np.float64))
        if env.tile_visited_count == len(env.track) or env.new_lap:
            self.finished = True
        v = self.car.hull.linearVelocity
        speed = math.hypot(v[0], v[1])
        self.distance += speed * GAME_DT
        return self.telemetry(speed)

    def telemetry(self, speed: float | None = None) -> TelemetryFrame:
        """The current state as an OpenPlanet-format frame.

        speed: km/h = |hull velocity| * 3.6 (a Box2D unit taken as a metre); distance: units driven;
        x, z: the car's 2-D position (y, up, is 0); gear: from speed with 5 thresholds (1..6); rpm: the rear
        wheels' rotation times the gear ratio (an engine-like 0..~10000 figure, not a physical one).
        """
        car = self.car
        if speed is None:
            v = car.hull.linearVelocity
            speed = math.hypot(v[0], v[1])
        kmh = speed * 3.6
        gear = 1 + sum(kmh > s for s in _GEAR_SPEEDS_KMH)
        omega = 0.5 * (abs(car.wheels[2].omega) + abs(car.wheels[3].omega))
        rpm = min(10000.0, omega * 60.0 / (2.0 * math.pi) * _GEAR_RATIOS[gear - 1] * 2.0)
        x, y = car.hull.position
        return TelemetryFrame(
            speed=kmh,
            distance=self.distance,
            x=float(x),
            y=0.0,
            z=float(y),
            steer=self.steer,
            gas=self.gas,
            brake=self.brake,
            finished=1.0 if self.finished else 0.0,
            gear=float(gear),
            rpm=rpm,
        )


class Renderer:
    """Draws CarRacing's "state_pixels" view of a ``RaceSim`` at (height, width) into an RGB uint8 array."""

    def __init__(self, sim: RaceSim, width: int, height: int, supersample: int = 2) -> None:
        self.sim = sim
        self.width = width
        self.height = height
        self.ss = supersample
        self.surf_w = width * supersample
        self.surf_h = height * supersample
        self.surf = pygame.Surface((self.surf_w, self.surf_h), depth=24)
        self.small = pygame.Surface((width, height), depth=24) if supersample > 1 else self.surf
        self.sx = self.surf_w / WINDOW_W
        self.sy = self.surf_h / WINDOW_H
        self.zoom = ZOOM * SCALE
        self._seed = sim.seed
        self._build_static()

    def _build_static(self) -> None:
        """The grass and road polygons of the sim's current track (rebuilt when it changes track)."""
        env = self.sim.env
        bounds = PLAYFIELD
        self.bg_poly = np.array([(bounds, bounds), (bounds, -bounds), (-bounds, -bounds), (-bounds, bounds)])
        polys: list[list[tuple[float, float]]] = []
        colors: list[tuple[int, int, int]] = []
        grass = tuple(int(c) for c in env.grass_color)
        for x in range(-20, 20, 2):
            for y in range(-20, 20, 2):
                polys.append(
                    [
                        (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + 0),
                        (GRASS_DIM * x + 0, GRASS_DIM * y + 0),
                        (GRASS_DIM * x + 0, GRASS_DIM * y + GRASS_DIM),
                        (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + GRASS_DIM),
                    ]
                )
                colors.append(grass)  # type: ignore[arg-type]
        for poly, color in env.road_poly:
            polys.append([(float(p[0]), float(p[1])) for p in poly])
            colors.append(tuple(int(c) for c in color))  # type: ignore[arg-type]
        self.polys = np.array(polys, dtype=np.float64)  # (P, 4, 2)
        self.colors = colors
        self.bg_color = tuple(int(c) for c in env.bg_color)
        # culling: a polygon can be visible only if its bounding circle meets the circle around the car that
        # holds the whole view (the window is 1000x800 at zoom ZOOM*SCALE, the car at (W/2, 3H/4) of it)
        self.centres = self.polys.mean(axis=1)
        self.radii = np.hypot(*(self.polys - self.centres[:, None, :]).transpose(2, 0, 1)).max(axis=1)
        half_w = WINDOW_W / 2 / self.zoom
        self.view_radius = math.hypot(half_w, max(WINDOW_H * 3 / 4, WINDOW_H / 4) / self.zoom) + 1.0

    def _to_screen(self, pts: np.ndarray, px: float, py: float, cos_a: float, sin_a: float) -> np.ndarray:
        """World points (..., 2) to surface pixel coordinates (..., 2)."""
        dx = pts[..., 0] - px
        dy = pts[..., 1] - py
        wx = (dx * cos_a - dy * sin_a) * self.zoom + WINDOW_W / 2
        wy = (dx * sin_a + dy * cos_a) * self.zoom + WINDOW_H / 4
        out = np.empty(pts.shape, dtype=np.float64)
        out[..., 0] = wx * self.sx
        out[..., 1] = (WINDOW_H - wy) * self.sy
        return out

    def render(self, out: np.ndarray | None = None) -> np.ndarray:
        """Draw the current view; returns (height, width, 3) uint8 RGB (written into ``out`` if given)."""
        if self.sim.seed != self._seed:  # the sim changed track
            self._seed = self.sim.seed
            self._build_static()
        car = self.sim.car
        angle = -car.hull.angle
        cos_a, sin_a = math.cos(angle), math.sin(angle)
        px, py = car.hull.position
        surf = self.surf
        surf.fill((0, 0, 0))
        pygame.draw.polygon(surf, self.bg_color, self._to_screen(self.bg_poly, px, py, cos_a, sin_a).tolist())
        reach = self.radii + self.view_radius
        near = np.nonzero(np.hypot(self.centres[:, 0] - px, self.centres[:, 1] - py) < reach)[0]
        scr = self._to_screen(self.polys[near], px, py, cos_a, sin_a).tolist()
        colors = self.colors
        for k, i in enumerate(near.tolist()):
            pygame.draw.polygon(surf, colors[i], scr[k])
        self._draw_car(car, px, py, cos_a, sin_a)
        self._draw_indicators(car)
        if self.ss > 1:
            pygame.transform.smoothscale(surf, (self.width, self.height), self.small)
        raw = pygame.image.tobytes(self.small, "RGB")
        arr = np.frombuffer(raw, dtype=np.uint8).reshape(self.height, self.width, 3)
        if out is None:
            return arr.copy()
        out[...] = arr
        return out

    def _points(
        self, pts: list[tuple[float, float]], px: float, py: float, cos_a: float, sin_a: float
    ) -> list[tuple[float, float]]:
        """A few world points to surface coordinates (plain Python: cheaper than numpy for a handful)."""
        z, sx, sy = self.zoom, self.sx, self.sy
        cx, cy = WINDOW_W / 2, WINDOW_H / 4
        out = []
        for x, y in pts:
            dx, dy = x - px, y - py
            out.append(
                (
                    ((dx * cos_a - dy * sin_a) * z + cx) * sx,
                    (WINDOW_H - ((dx * sin_a + dy * cos_a) * z + cy)) * sy,
                )
            )
        return out

    def _draw_car(self, car: car_dynamics.Car, px: float, py: float, cos_a: float, sin_a: float) -> None:
        """The hull and wheels (with their rotating white stripe), as CarRacing draws them."""
        surf = self.surf
        ww, wr, size = car_dynamics.WHEEL_W, car_dynamics.WHEEL_R, car_dynamics.SIZE
        for obj in car.drawlist:
            color = [int(c * 255) for c in obj.color]
            for f in obj.fixtures:
                trans = f.body.transform
                path = [tuple(trans * v) for v in f.shape.vertices]
                pygame.draw.polygon(surf, color, self._points(path, px, py, cos_a, sin_a))  # type: ignore[arg-type]
                if "phase" not in obj.__dict__:
                    continue
                a1 = obj.phase
                a2 = obj.phase + 1.2
                s1, s2 = math.sin(a1), math.sin(a2)
                c1, c2 = math.cos(a1), math.cos(a2)
                if s1 > 0 and s2 > 0:
                    continue
                if s1 > 0:
                    c1 = math.copysign(1.0, c1) if c1 else 0.0
                if s2 > 0:
                    c2 = math.copysign(1.0, c2) if c2 else 0.0
                white = [
                    (-ww * size, +wr * c1 * size),
                    (+ww * size, +wr * c1 * size),
                    (+ww * size, +wr * c2 * size),
                    (-ww * size, +wr * c2 * size),
                ]
                wpath = [tuple(trans * v) for v in white]
                pygame.draw.polygon(
                    surf,
                    car_dynamics.WHEEL_WHITE,
                    self._points(wpath, px, py, cos_a, sin_a),  # type: ignore[arg-type]
                )

    def _draw_indicators(self, car: car_dynamics.Car) -> None:
        """CarRacing's dashboard bars (window coordinates scaled to the surface)."""
        surf = self.surf
        W, H = WINDOW_W, WINDOW_H
        sx, sy = self.sx, self.sy
        s = W / 40.0
        h = H / 40.0

        def poly(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
            return [(x * sx, y * sy) for x, y in points]

        pygame.draw.polygon(surf, (0, 0, 0), poly([(W, H), (W, H - 5 * h), (0, H - 5 * h), (0, H)]))

        def vertical(place: float, val: float) -> list[tuple[float, float]]:
            return poly(
                [
                    (place * s, H - (h + h * val)),
                    ((place + 1) * s, H - (h + h * val)),
                    ((place + 1) * s, H - h),
                    ((place + 0) * s, H - h),
                ]
            )

        def horizontal(place: float, val: float) -> list[tuple[float, float]]:
            return poly(
                [
                    ((place + 0) * s, H - 4 * h),
                    ((place + val) * s, H - 4 * h),
                    ((place + val) * s, H - 2 * h),
                    ((place + 0) * s, H - 2 * h),
                ]
            )

        v = car.hull.linearVelocity
        true_speed = math.hypot(v[0], v[1])
        bars = [
            (true_speed, vertical(5, 0.02 * true_speed), (255, 255, 255)),
            (car.wheels[0].omega, vertical(7, 0.01 * car.wheels[0].omega), (0, 0, 255)),
            (car.wheels[1].omega, vertical(8, 0.01 * car.wheels[1].omega), (0, 0, 255)),
            (car.wheels[2].omega, vertical(9, 0.01 * car.wheels[2].omega), (51, 0, 255)),
            (car.wheels[3].omega, vertical(10, 0.01 * car.wheels[3].omega), (51, 0, 255)),
            (car.wheels[0].joint.angle, horizontal(20, -10.0 * car.wheels[0].joint.angle), (0, 255, 0)),
            (car.hull.angularVelocity, horizontal(30, -0.8 * car.hull.angularVelocity), (255, 0, 0)),
        ]
        for value, points, color in bars:
            if abs(value) > 1e-4:
                pygame.draw.polygon(surf, color, points)

"""The built-in game's world in-process: the cheap renderer against CarRacing's own, telemetry units."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gymnasium.envs.box2d.car_racing import CarRacing

from tmrl.games.carracing.pilot import Pilot
from tmrl.games.carracing.sim import GAME_DT, RaceSim, Renderer


class _Reference(CarRacing):
    """Gymnasium's CarRacing, rendering only when asked (its step renders every frame otherwise)."""

    rendering = False

    def _render(self, mode: str):  # type: ignore[no-untyped-def]
        return super()._render(mode) if self.rendering else None


def test_renderer_matches_carracing_state_pixels() -> None:
    sim = RaceSim(3)
    ref = _Reference(render_mode="state_pixels")
    ref.reset(seed=3)
    pilot = Pilot(sim.track_xy)  # on the road, into a bend: road edges and kerbs are in view
    frame = sim.telemetry()
    for _ in range(150):
        gas, brake, steer = pilot.action(frame)
        frame = sim.tick(gas, brake, steer)
        ref.step(np.array([steer, gas, brake]))
    assert tuple(sim.env.car.hull.position) == pytest.approx(tuple(ref.car.hull.position))
    ref.t = max(ref.t, 1.0)  # past CarRacing's zoom-in animation, which our renderer skips
    ref.reward = 0.0  # CarRacing prints its reward counter on the dashboard; we do not
    ref.rendering = True
    ref._render("state_pixels")  # draws CarRacing's 1000x800 view into ref.surf (then scales it to 96x96)
    for w, h in [(96, 96), (128, 64)]:
        expected = ref._create_image_array(ref.surf, (w, h))
        got = Renderer(sim, w, h, supersample=2).render()
        assert got.shape == (h, w, 3) and got.dtype == np.uint8
        diff = np.abs(got.astype(int) - expected.astype(int)).max(axis=2)
        scene = slice(0, int(h * 0.85))  # the dashboard's reward text is the one thing we leave out
        assert diff[scene].mean() < 3.5, (w, h)  # measured 2.8; a 3 % zoom error gives 4.2
        assert (diff[scene] > 40).mean() < 0.012, (w, h)  # measured 0.006; 3 % zoom error: 0.019


def test_renderer_reuses_out_and_is_deterministic() -> None:
    sim = RaceSim(0)
    r = Renderer(sim, 96, 96)
    a = r.render()
    out = np.zeros_like(a)
    b = r.render(out)
    assert b is out and np.array_equal(a, b)
    # car at about row 72, column 48 on the road; the dashboard is dark
    road = a[60:84, 40:56].astype(int)
    assert ((abs(road[..., 0] - road[..., 1]) < 4) & (road[..., 0] > 95) & (road[..., 0] < 112)).sum() > 20
    assert a[88:, :, :].mean() < 40


def test_telemetry_units() -> None:
    sim = RaceSim(2)
    start = sim.telemetry()
    assert start.distance == 0.0 and start.speed == pytest.approx(0.0, abs=1e-3)
    travelled = 0.0
    for _ in range(100):
        f = sim.tick(1.0, 0.0, 0.0)
        v = sim.env.car.hull.linearVelocity
        travelled += math.hypot(v[0], v[1]) * GAME_DT
    assert f.speed == pytest.approx(math.hypot(v[0], v[1]) * 3.6, rel=1e-4)
    assert f.distance == pytest.approx(travelled, rel=1e-6)
    assert f.y == 0.0 and (f.x, f.z) == pytest.approx(tuple(sim.env.car.hull.position))
    assert f.gas == 1.0 and f.brake == 0.0 and f.finished == 0.0
    assert 1.0 <= f.gear <= 6.0 and 0.0 < f.rpm <= 10000.0
    sim.reset()
    again = sim.telemetry()
    assert (again.x, again.z, again.distance) == pytest.approx((start.x, start.z, 0.0))
    # gas / brake are max(0, value); steer clipped
    f = sim.tick(-1.0, -0.5, 3.0)
    assert (f.gas, f.brake, f.steer) == (0.0, 0.0, 1.0)


def test_respawn_replays_like_a_fresh_track() -> None:
    """The fast respawn (no track rebuild) leaves the world as a fresh reset(seed) would: same drive, same
    positions, and the lap logic starts over."""

    def drive(sim: RaceSim) -> np.ndarray:
        out = []
        for i in range(150):
            f = sim.tick(1.0, 0.0, 0.5 * math.sin(i / 20.0))
            out.append((f.x, f.z, f.distance))
        return np.array(out)

    fresh_sim = RaceSim(6)
    at_start = fresh_sim.env.tile_visited_count  # the car touches its first tile(s) on the first frame
    fresh = drive(fresh_sim)
    sim = RaceSim(6)
    first = drive(sim)
    visited = sim.env.tile_visited_count
    assert visited > 0
    sim.reset()
    assert sim.env.tile_visited_count == at_start and not sim.env.new_lap
    again = drive(sim)
    assert np.array_equal(first, fresh)
    assert np.abs(again - fresh).max() < 1e-3
    assert sim.env.tile_visited_count == visited


def test_another_track_looks_and_drives_as_a_fresh_one() -> None:
    """``set_track`` builds the other seed's track: its tiles, its picture and its drive are a fresh sim's of that
    seed; and back again."""

    def drive(sim: RaceSim) -> np.ndarray:
        return np.array([(f.x, f.z) for f in (sim.tick(0.6, 0.0, 0.2) for _ in range(60))])

    sim, fresh = RaceSim(2), RaceSim(9)
    renderer, fresh_renderer = Renderer(sim, 96, 96), Renderer(fresh, 96, 96)
    first_picture = renderer.render().copy()
    sim.set_track(9)
    sim.reset()
    fresh.reset()
    assert sim.seed == 9 and np.array_equal(sim.track_xy, fresh.track_xy)
    assert np.array_equal(renderer.render(), fresh_renderer.render())
    assert np.abs(drive(sim) - drive(fresh)).max() < 1e-3
    sim.set_track(2)
    sim.reset()
    assert np.array_equal(renderer.render(), first_picture)


def test_respawn_on_a_tile_faces_the_driving_direction() -> None:
    """A respawn onto a tile stands the car on it, still, heading along the track: gas alone drives it to the
    next tiles, and the lap logic starts over with nothing but the tiles under the car visited."""
    sim = RaceSim(0)
    tile = sim.n_tiles // 3
    sim.reset(tile)
    x, z = sim.track_xy[tile]
    f = sim.telemetry()
    assert math.hypot(f.x - x, f.z - z) < 0.5 and f.speed < 1.0 and f.distance == 0.0
    assert 0 < sim.env.tile_visited_count <= 3 and not sim.finished
    for _ in range(60):
        f = sim.tick(0.3, 0.0, 0.0)
    nearest = int(np.argmin(np.hypot(sim.track_xy[:, 0] - f.x, sim.track_xy[:, 1] - f.z)))
    assert tile < nearest <= tile + 10
    with pytest.raises(ValueError, match="not on the track"):
        sim.reset(sim.n_tiles)
    sim.reset()
    assert math.hypot(sim.telemetry().x - sim.track_xy[0, 0], sim.telemetry().z - sim.track_xy[0, 1]) < 0.5


@pytest.mark.parametrize("speed_kmh", [60.0, 200.0])
def test_respawn_rolling_keeps_the_speed_along_the_track(speed_kmh: float) -> None:
    """A rolling respawn puts the car on the tile at the given speed, moving along the track, its wheels
    turning with it: with no pedal it coasts on (slowing a little), with full brake it stops."""
    sim = RaceSim(0)
    tile = sim.n_tiles // 4
    sim.reset(tile, speed_kmh=speed_kmh)
    f = sim.telemetry()
    x, z = sim.track_xy[tile]
    assert math.hypot(f.x - x, f.z - z) < 0.5 + speed_kmh / 3.6 * GAME_DT
    assert speed_kmh * 0.97 < f.speed <= speed_kmh
    for _ in range(25):  # half a second of coasting
        f = sim.tick(0.0, 0.0, 0.0)
    assert speed_kmh * 0.8 < f.speed < speed_kmh
    nearest = int(np.argmin(np.hypot(sim.track_xy[:, 0] - f.x, sim.track_xy[:, 1] - f.z)))
    assert tile < nearest  # forward, along the driving direction
    for _ in range(200):
        f = sim.tick(0.0, 1.0, 0.0)
    assert f.speed < 1.0
    sim.reset(tile)  # a standing respawn after a rolling one stands still
    assert sim.telemetry().speed < 1.0
    with pytest.raises(ValueError, match="must be >= 0"):
        sim.reset(tile, speed_kmh=-1.0)

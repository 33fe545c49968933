"""The scripted pilot: lap quality on the synchronous simulation, then a short real-time drive on the real game."""

from __future__ import annotations

import numpy as np
import pytest

from tmrl.games import CarRacingConfig, open_game
from tmrl.games.carracing.pilot import Pilot, track_centerline
from tmrl.games.carracing.sim import GAME_DT, RaceSim

TRACK_HALF_WIDTH = 40 / 6.0  # CarRacing's TRACK_WIDTH


@pytest.mark.parametrize(("seed", "rate"), [(0, "50Hz"), (4, "20Hz")])
def test_pilot_finishes_a_lap_on_the_simulation(seed: int, rate: str) -> None:
    """Same physics as the game process, stepped as fast as possible. At 50 Hz the action computed from frame
    t is applied at t + 1 (controls are read at the next physics frame); at 20 Hz (an rtgym env's rate) each
    action is held for 2 or 3 physics frames and applied one frame late."""
    sim = RaceSim(seed)
    pilot = Pilot(track_centerline(seed))
    frame = sim.telemetry()
    action = (0.0, 0.0, 0.0)
    periods = (1,) if rate == "50Hz" else (2, 3)
    off_track = 0
    ticks = 0
    track = sim.track_xy
    k = 0
    while ticks < int(90 / GAME_DT) and not frame.finished:  # at most 90 s of game time
        new_action = pilot.action(frame)
        period = periods[k % len(periods)]
        k += 1
        for _ in range(period):
            ticks += 1
            frame = sim.tick(*action)
            action = new_action  # from the period's second frame on: applied one frame late
            d = np.hypot(*(track - np.array([frame.x, frame.z])).T).min()
            off_track += d > TRACK_HALF_WIDTH + 2.0
            if frame.finished:
                break
    assert frame.finished == 1.0, f"no lap after {ticks} physics frames; visited {sim.env.tile_visited_count}"
    assert ticks * GAME_DT < 60.0, "a lap should take well under a minute of game time"
    assert off_track < 0.02 * ticks, f"{off_track} of {ticks} frames off the road"
    assert frame.distance > 0.8 * len(track) * 3.5


def test_pilot_finds_the_start_after_a_respawn_without_reset() -> None:
    sim = RaceSim(2)
    pilot = Pilot(sim.track_xy)
    action = (0.0, 0.0, 0.0)
    for _ in range(400):
        frame = sim.tick(*action)
        action = pilot.action(frame)
    assert pilot.index > 50
    sim.reset()
    pilot.action(sim.telemetry())
    assert pilot.index < 3


def test_centerline_matches_the_game_start_and_is_deterministic() -> None:
    a, b = track_centerline(3), track_centerline(3)
    assert np.array_equal(a, b) and a.shape[1] == 2 and len(a) > 100
    assert not np.array_equal(a[:50], track_centerline(5)[:50])
    sim = RaceSim(3)
    f = sim.telemetry()
    assert np.hypot(f.x - a[0, 0], f.z - a[0, 1]) < 1e-3


def test_pilot_drives_the_real_time_game() -> None:
    game = open_game(CarRacingConfig(seed=1))
    try:
        track = track_centerline(1)
        pilot = Pilot(track)
        game.controller.respawn()
        counter, frame = game.telemetry.latest()
        worst = 0.0
        for _ in range(150):  # 150 telemetry frames: about 3 s of real time
            game.controller.act(*pilot.action(frame))
            counter, frame = game.telemetry.wait_newer(counter, timeout=2.0)
            worst = max(worst, float(np.hypot(*(track - np.array([frame.x, frame.z])).T).min()))
        game.controller.neutral()
        assert frame.distance > 30.0, frame
        assert worst < TRACK_HALF_WIDTH + 2.0, worst
        assert pilot.index > 5
    finally:
        game.close()

"""``tmrl check-env``: drive the real env and show what the agent sees.

The driver is the scripted pilot (built-in game), the keyboard (arrows, in a window: needs a display) or random
actions. Every ``--every`` steps the captured frame is saved as a PNG with the LIDAR beams drawn on it (green up
to the measured distance, red end point) or, in image mode, the observed frame history side by side. A summary of
rewards, observation ranges and time-step timeouts is printed at the end.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tmrl.errors import ConfigError, GameError

SCALE = 4


def _has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def annotate(
    frame: np.ndarray, channel_order: str, beam_paths: list[np.ndarray], distances: np.ndarray
) -> Any:
    """An RGB PIL image of ``frame`` (scaled up) with each beam drawn up to its distance (pixel index)."""
    from PIL import Image, ImageDraw

    rgb = frame[..., :3]
    if channel_order.startswith("bgr"):
        rgb = rgb[..., ::-1]
    img = Image.fromarray(np.ascontiguousarray(rgb)).resize(
        (frame.shape[1] * SCALE, frame.shape[0] * SCALE), Image.Resampling.NEAREST
    )
    draw = ImageDraw.Draw(img)
    for path, dist in zip(beam_paths, distances, strict=True):
        if len(path) == 0:
            continue
        end = min(len(path) - 1, max(0, int(round(float(dist)))))
        (r0, c0), (r1, c1) = path[0], path[end]
        a = (c0 * SCALE + SCALE // 2, r0 * SCALE + SCALE // 2)
        b = (c1 * SCALE + SCALE // 2, r1 * SCALE + SCALE // 2)
        draw.line([a, b], fill=(0, 255, 0), width=1)
        draw.ellipse([b[0] - 3, b[1] - 3, b[0] + 3, b[1] + 3], fill=(255, 0, 0))
    return img


def frames_image(frames: np.ndarray) -> Any:
    """The observed (K, H, W) uint8 frame history side by side, oldest first."""
    from PIL import Image

    strip = np.concatenate(list(frames), axis=1)
    return Image.fromarray(strip).resize((strip.shape[1] * SCALE, strip.shape[0] * SCALE))


class _Keyboard:
    """Arrow keys in a small pygame window: up gas, down brake, left / right steer."""

    def __init__(self) -> None:
        if not _has_display():
            raise GameError(
                "keyboard driving needs a display (none found: DISPLAY is not set); use --driver pilot or random"
            )
        import pygame

        pygame.init()
        self.pg = pygame
        self.screen = pygame.display.set_mode((96 * SCALE, 96 * SCALE))
        pygame.display.set_caption("tmrl check-env: arrows drive, Esc quits")

    def action(self) -> tuple[np.ndarray, bool]:
        pg = self.pg
        quit_ = any(e.type == pg.QUIT for e in pg.event.get())
        keys = pg.key.get_pressed()
        gas = 1.0 if keys[pg.K_UP] else 0.0
        brake = 1.0 if keys[pg.K_DOWN] else 0.0
        steer = (1.0 if keys[pg.K_RIGHT] else 0.0) - (1.0 if keys[pg.K_LEFT] else 0.0)
        return np.array([gas, brake, steer], np.float32), quit_ or bool(keys[pg.K_ESCAPE])

    def show(self, img: Any) -> None:
        surf = self.pg.image.fromstring(img.tobytes(), img.size, "RGB")
        self.screen.blit(self.pg.transform.scale(surf, self.screen.get_size()), (0, 0))
        self.pg.display.flip()

    def close(self) -> None:
        self.pg.quit()


def check_env(config: Any, *, driver: str, steps: int, output: Path | None, every: int) -> int:
    """Drive ``steps`` time steps and save annotated frames; prints a summary."""
    from tmrl.envs import make_env
    from tmrl.worker import TimeoutCounter

    if driver == "pilot" and config.env.game != "carracing":
        raise ConfigError("the scripted pilot drives the built-in game only; use --driver keyboard on tm2020")
    out_dir = Path(output) if output is not None else config.data_dir / "check-env"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    keyboard = _Keyboard() if driver == "keyboard" else None
    env = make_env(config.env, config.game_config())
    saved: list[Path] = []
    rewards: list[float] = []
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    episodes = 0
    try:
        pilot = None
        if driver == "pilot":
            from tmrl.games.carracing.pilot import Pilot, track_centerline

            pilot = Pilot(track_centerline(config.carracing.seed))
        lidar = getattr(env.interface.builder, "lidar", None)
        paths = lidar.beam_paths() if lidar is not None else []
        scale = getattr(env.interface.builder, "lidar_scale", None)
        with TimeoutCounter() as timeouts:
            obs, _ = env.reset()
            for t in range(steps):
                if pilot is not None:
                    action = np.array(pilot.action(env.game.telemetry.latest()[1]), np.float32)
                elif keyboard is not None:
                    action, quit_ = keyboard.action()
                    if quit_:
                        break
                else:
                    action = rng.uniform(-1, 1, 3).astype(np.float32)
                obs, reward, terminated, truncated, _ = env.step(action)
                rewards.append(reward)
                for name, value in obs.items():
                    lows[name] = min(lows.get(name, np.inf), float(np.min(value)))
                    highs[name] = max(highs.get(name, -np.inf), float(np.max(value)))
                if t % max(1, every) == 0 or keyboard is not None:
                    if "frames" in obs:
                        img = frames_image(obs["frames"])
                    else:
                        dist = obs["lidar"][-1] / scale if scale is not None else np.zeros(len(paths))
                        img = annotate(env.game.screen.grab(), env.game.screen.channel_order, paths, dist)
                    if keyboard is not None:
                        keyboard.show(img)
                    if t % max(1, every) == 0:
                        path = out_dir / f"step-{t:05d}.png"
                        img.save(path)
                        saved.append(path)
                if terminated or truncated:
                    episodes += 1
                    if pilot is not None:
                        pilot.reset()
                    obs, _ = env.reset()
    finally:
        env.close()
        if keyboard is not None:
            keyboard.close()
    print(
        f"drove {len(rewards)} steps ({episodes} episodes ended), return {sum(rewards):.1f}, "
        f"{timeouts.count} time-step timeouts"
    )
    for name in sorted(lows):
        print(f"  obs {name}: min {lows[name]:.3f} max {highs[name]:.3f}")
    print(f"{len(saved)} PNG snapshots in {out_dir}")
    return 0

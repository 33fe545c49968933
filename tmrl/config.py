"""The one typed configuration: ``TmrlConfig``, loaded from a commented TOML file and overridden by env / flags.

Where values come from, lowest priority first:

1. the defaults of the pydantic models (each section is owned by the module that uses it);
2. the TOML file, ``<data-dir>/config.toml`` by default, written with comments on first use;
3. environment variables ``TMRL_<SECTION>__<KEY>`` (nested tables add ``__<SUBKEY>``; case-insensitive), for
   example ``TMRL_TRAINER__BATCH_SIZE=128`` or ``TMRL_RELAY__PORT=6000``;
4. command-line flags: ``--set section.key=value`` (repeatable) and each command's dedicated flags.

Values from the environment and ``--set`` are TOML literals when they parse as one (``128``, ``1e-3``, ``true``,
``[1, 2]``, ``"text"``), otherwise plain strings (``--set relay.host=0.0.0.0``). The data directory is
``--data-dir``, else ``TMRL_DATA_DIR``, else ``$XDG_DATA_HOME/tmrl``, else ``~/.local/share/tmrl``; runs live in
``<data-dir>/runs/<run.name>/``. An unknown key or a bad value is a ``ConfigError`` naming the key and where it
came from. Nothing here is read at import time: ``load_config`` is called by the command line and the result is
passed down.
"""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from tmrl.envs.config import ALGORITHM_TIME_STEP_S, EnvConfig, resolved_rtgym
from tmrl.errors import ConfigError
from tmrl.games.config import CarRacingConfig, TM2020Config
from tmrl.net.config import RelayConfig
from tmrl.rl.config import AlgorithmConfig, ModelConfig, RLConfig, TrainerConfig
from tmrl.spaces import ACTION_NAMES, ActionName

CONFIG_FILE_NAME = "config.toml"
ENV_PREFIX = "TMRL_"
ENV_DATA_DIR = "TMRL_DATA_DIR"
ENV_CONFIG_FILE = "TMRL_CONFIG"
# Share of the built-in game's training episodes that start at a random place on the track (docs/learning.md).
RANDOM_START_CARRACING = 0.5


class RunConfig(BaseModel):
    """Run-level settings: the run's name, how many workers (the game is env.game)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Run name; the run lives in <data-dir>/runs/<name>/ (config snapshot, checkpoints, logs).",
    )
    workers: int = Field(1, ge=1, le=64, description="Rollout workers `tmrl run` starts (one game each).")
    status_interval_s: float = Field(
        1.0, gt=0, le=60, description="Seconds between refreshes of the live status view of `tmrl run`."
    )
    stop_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Seconds `tmrl run` waits for each role to stop (the trainer writes its checkpoint) before "
        "killing it.",
    )


class WorkerConfig(BaseModel):
    """The rollout worker: how it acts and what it reports."""

    model_config = ConfigDict(extra="forbid")

    test_every: int = Field(
        5,
        ge=0,
        description="Run a test episode (deterministic policy) every this many training episodes; 0 disables "
        "test episodes.",
    )
    train_on_test: bool = Field(
        True,
        description="Stream test episodes' samples to the trainer too (they are valid off-policy transitions and "
        "a sixth of the time steps at test_every = 5); their returns are still reported as test returns.",
    )
    confirm_episodes: int = Field(
        2,
        ge=0,
        le=20,
        description="After a test episode that beats this worker's best test score, drive this many more test "
        "episodes with the same weights; the weight version's score is the mean of them all, and the trainer keeps "
        "the actor with the best score (weights/best-actor.safetensors). They count against test_every (the next "
        "test episode comes test_every training episodes later for each). 0 scores every test episode alone.",
    )
    retest_every: int = Field(
        0,
        ge=0,
        le=100,
        description="Every this many test episodes that open no confirming series, re-drive the best-scored "
        "version instead of the latest: its return joins that version's episodes and its score becomes their mean, "
        "up or down, so a lucky score falls back and a later version can replace the kept best actor. They count "
        "as test episodes against test_every. 0 never re-tests.",
    )
    random_start: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Fraction of training episodes that start standing at a random place on the track instead of "
        "the start line, so every part of the track is practised from the first minutes, not only what the car "
        "has learned to reach; test episodes always start at the line. None = per game: 0.5 on the built-in game, "
        "0 on TrackMania (its car can only respawn at the start).",
    )
    random_start_speed_kmh: float = Field(
        0.0,
        ge=0.0,
        le=400.0,
        description="Random starts roll instead of standing: each starts at a speed drawn uniformly from 0 to this "
        "many km/h, along the track, so corners are practised at the speeds the car reaches them with (a car "
        "that learned to floor a straight meets its corner at 300 km/h and more, which no standing start "
        "teaches). 0 = standing starts. Built-in game only.",
    )
    failure_starts: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of the random starts placed shortly before (2-10 % of a lap) where one of the last 20 "
        "episodes from the start line ended short of the finish, instead of anywhere on the track, so a corner the "
        "policy keeps leaving the road at is practised as often as it fails there. Rolling at the speed "
        "worker.random_start_speed_kmh draws. Needs random starts (worker.random_start above 0). 0 = off.",
    )
    other_tracks: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of the training episodes driven on another track, drawn uniformly from the seeds "
        "worker.other_track_seeds and rewarded along its centre line, so the policy meets more corners than its own "
        "track has (test episodes, failure starts and the kept best actor stay on the game's own track). The "
        "episode starts as the others do (worker.random_start). Built-in game only. 0 = only the own track.",
    )
    other_track_seeds: tuple[int, int] = Field(
        (1000, 1999),
        description="First and last track seed (inclusive) of worker.other_tracks. The default range leaves out "
        "seeds 0-999: the default track (0) and the unseen tracks of the learning benchmark (1-5).",
    )
    finish_bootstraps: bool = Field(
        False,
        description="In the samples streamed to the trainer, record reaching the finish line as a truncation "
        "(the critics bootstrap past it) instead of a termination. A LIDAR policy cannot see how far the finish "
        "is and the road goes on past it, so a terminal finish makes the same observation worth a whole future "
        "early in the lap and nothing at its end. The episode, its return and its statistics still end there.",
    )
    failure_bootstraps: bool = Field(
        False,
        description="In the samples streamed to the trainer, record the failure countdown's end (too many steps "
        "without progress) as a truncation (the critics bootstrap past it) instead of a termination. The car "
        "could go on, so the countdown is a time limit of the environment's making; as a terminal state it is "
        "worth 0, which a critic that values the road ahead below the time cost prefers to driving on. The "
        "episode, its return and its statistics still end there.",
    )
    noise_correlation_s: float = Field(
        0.0,
        ge=0.0,
        le=60.0,
        description="Exploration of the training episodes: the standard normal noise of the policy's Gaussian is "
        "an AR(1) process with this time constant in seconds of game time instead of a fresh draw every step "
        "(0 = fresh draws, as SAC). Each step's noise is still standard normal, so the actions' distribution "
        "at a step is the policy's; only successive steps are correlated (factor exp(-time_step / this)), "
        "which at short time steps keeps the exploration from averaging out within a fraction of a second.",
    )
    pulse_rate_hz: float = Field(
        0.0,
        ge=0.0,
        le=50.0,
        description="Temporally extended exploration of the training episodes (after epsilon-z-greedy, Dabney et "
        "al. 2021): each action dimension starts, at this rate per second of game time, a pulse that holds it at "
        "a uniform random value in [-1, 1] for a random while (mean worker.pulse_s, geometric), whatever the "
        "policy asks; the samples record the action driven. A brake held for a fraction of a second, which "
        "per-step Gaussian noise around a released pedal never presses. 0 = no pulses (SAC's exploration alone).",
    )
    pulse_s: float = Field(
        0.25,
        gt=0.0,
        le=60.0,
        description="Mean duration of an exploration pulse (worker.pulse_rate_hz), seconds of game time.",
    )
    pulse_actions: list[ActionName] = Field(
        default_factory=lambda: list(ACTION_NAMES),
        min_length=1,
        description="The action dimensions that exploration pulses (worker.pulse_rate_hz) hold: gas, brake, "
        "steer.",
    )
    trace_tests: int = Field(
        200,
        ge=0,
        description="Write a step-by-step trace (CSV: progress, speed, distance from the trajectory, heading, "
        "reward, actions, pedals pressed) of each test episode into <run dir>/traces/<worker id>/, keeping the "
        "newest this many; `tmrl trace FILE` shows how an episode ended. 0 = no traces.",
    )
    random_until_weights: bool = Field(
        True, description="Act uniformly at random until the first weights arrive (warm-up exploration)."
    )
    threads: int = Field(1, ge=1, le=64, description="Torch CPU threads for the worker's policy.")
    max_episodes: int = Field(0, ge=0, description="Stop after this many episodes (0 = run until stopped).")


class TmrlConfig(BaseModel):
    """Everything tmrl needs, one section per part."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(
        Path("~/.local/share/tmrl").expanduser(),
        description="Data directory (set by --data-dir / TMRL_DATA_DIR, never in the file).",
        exclude=True,
    )
    run: RunConfig = Field(default_factory=RunConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    carracing: CarRacingConfig = Field(default_factory=CarRacingConfig)
    tm2020: TM2020Config = Field(default_factory=TM2020Config)
    relay: RelayConfig = Field(default_factory=RelayConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    @model_validator(mode="after")
    def _check_random_start(self) -> TmrlConfig:
        if self.env.game != "carracing" and self.worker.random_start:
            raise ValueError(
                f"worker.random_start needs the built-in game ({self.env.game} respawns only at the start line)"
            )
        if self.env.game != "carracing" and self.worker.random_start_speed_kmh:
            raise ValueError(
                f"worker.random_start_speed_kmh needs the built-in game ({self.env.game} respawns standing)"
            )
        if self.env.game != "carracing" and self.worker.other_tracks:
            raise ValueError(f"worker.other_tracks needs the built-in game ({self.env.game} runs one track)")
        first, last = self.worker.other_track_seeds
        if not 0 <= first <= last:
            raise ValueError(
                f"worker.other_track_seeds = [{first}, {last}] must be a first and a last seed with 0 <= first <= last"
            )
        if self.worker.failure_starts and not self.random_start():
            raise ValueError(
                "worker.failure_starts places some of the random starts; set worker.random_start above 0 "
                "(built-in game only)"
            )
        return self

    def random_start(self) -> float:
        """``worker.random_start`` with its per-game default resolved."""
        if self.worker.random_start is not None:
            return self.worker.random_start
        return RANDOM_START_CARRACING if self.env.game == "carracing" else 0.0

    def noise_correlation(self) -> float:
        """Correlation of the exploration noise between successive time steps (``worker.noise_correlation_s``)."""
        tau = self.worker.noise_correlation_s
        if tau == 0.0:
            return 0.0
        step = resolved_rtgym(self.env).time_step_s
        assert step is not None
        return math.exp(-step / tau)

    def action_pulses(self) -> tuple[float, float, tuple[bool, ...]]:
        """Per time step, the chance that an action dimension starts an exploration pulse and the chance that a
        pulse ends (``worker.pulse_rate_hz``, ``worker.pulse_s``; a start chance of 0 when pulses are off), and
        which dimensions pulse (``worker.pulse_actions``, in the action's order)."""
        step = resolved_rtgym(self.env).time_step_s
        assert step is not None
        start = -math.expm1(-self.worker.pulse_rate_hz * step)
        dims = tuple(name in self.worker.pulse_actions for name in ACTION_NAMES)
        return start, min(1.0, step / self.worker.pulse_s), dims

    @property
    def run_dir(self) -> Path:
        """``<data-dir>/runs/<run.name>``."""
        return self.data_dir / "runs" / self.run.name

    def game_config(self) -> CarRacingConfig | TM2020Config:
        """The config section of the game selected by ``env.game``."""
        return self.carracing if self.env.game == "carracing" else self.tm2020

    def default_reward_path(self) -> Path:
        """Where the reward trajectory lives when ``env.reward.path`` is not set: one file per game (and track)."""
        name = f"carracing-seed{self.carracing.seed}.json" if self.env.game == "carracing" else "tm2020.json"
        return self.data_dir / "rewards" / name

    def rl(self) -> RLConfig:
        """The learning side's configuration, with ``algorithm.gamma`` / ``alpha`` left at None resolved for the
        game's time step (TMRL's per-step values at the game's reference step, ``ALGORITHM_TIME_STEP_S``)."""
        step = resolved_rtgym(self.env).time_step_s
        assert step is not None
        algorithm = self.algorithm.at_time_step(step / ALGORITHM_TIME_STEP_S[self.env.game])
        return RLConfig(algorithm=algorithm, model=self.model, trainer=self.trainer)

    def with_resolved_paths(self) -> TmrlConfig:
        """A copy with the data-directory-dependent defaults filled in (the reward trajectory path)."""
        if self.env.reward.path is not None:
            return self
        reward = self.env.reward.model_copy(update={"path": self.default_reward_path()})
        return self.model_copy(update={"env": self.env.model_copy(update={"reward": reward})})


# --------------------------------------------------------------------------------------------------------------
# Locations


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``TMRL_DATA_DIR``, else ``$XDG_DATA_HOME/tmrl``, else ``~/.local/share/tmrl``."""
    env = os.environ if environ is None else environ
    if env.get(ENV_DATA_DIR):
        return Path(env[ENV_DATA_DIR]).expanduser()
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]).expanduser() / "tmrl"
    return Path.home() / ".local" / "share" / "tmrl"


# --------------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class _Layers:
    """The merged raw values and, for each dotted key set by a layer, where it came from."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def put(self, path: Sequence[str], value: Any, source: str) -> None:
        node = self.values
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
        key = ".".join(path)
        self.sources.pop(key, None)  # re-inserted: the order of ``sources`` is the order values were last set
        self.sources[key] = source

    def merge_file(self, doc: Mapping[str, Any], source: str, prefix: tuple[str, ...] = ()) -> None:
        for key, value in doc.items():
            path = (*prefix, key)
            if isinstance(value, dict):
                self.merge_file(value, source, path)
                if not value:
                    self.put(path, {}, source)
            else:
                self.put(path, value, source)

    def source_of(self, loc: Sequence[str | int]) -> str | None:
        parts = [str(p) for p in loc]
        dotted = ".".join(parts)
        # An error about a whole section (a check across its keys) blames the layer that set one of them last.
        for key, found in reversed(self.sources.items()):
            if key.startswith(dotted + "."):
                return found
        while parts:
            src = self.sources.get(".".join(parts))
            if src is not None:
                return src
            parts.pop()
        return None


def parse_value(raw: str) -> Any:
    """A TOML literal when ``raw`` parses as one, else the string itself."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


_STRINGY = (str, SecretStr, Path)


def _annotation_at(path: Sequence[str]) -> Any:
    """The type annotation of the field at ``path`` in ``TmrlConfig`` (None when there is no such field)."""
    model: Any = TmrlConfig
    annotation: Any = None
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation
    return annotation


def _is_stringy(annotation: Any) -> bool:
    """True when every non-None alternative of ``annotation`` is a string-like type (str, SecretStr, Path)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_is_stringy(a) for a in args)
    if origin is Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, _STRINGY)


def _override_value(path: Sequence[str], raw: str) -> Any:
    """``raw`` as the string itself for string fields (a secret "12345" stays a string), else a TOML literal."""
    value = parse_value(raw)
    if not isinstance(value, str) and _is_stringy(_annotation_at(path)):
        return raw
    return value


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[tuple[str, ...], Any, str]]:
    out = []
    for name, raw in sorted(environ.items()):
        if not name.upper().startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = tuple(p.lower() for p in name[len(ENV_PREFIX) :].split("__"))
        if any(not p for p in parts):
            raise ConfigError(
                f"environment variable {name}: expected TMRL_<SECTION>__<KEY>, e.g. TMRL_RUN__WORKERS"
            )
        out.append((parts, _override_value(parts, raw), f"environment variable {name}"))
    return out


def _flag_overrides(overrides: Sequence[str]) -> list[tuple[tuple[str, ...], Any, str]]:
    out = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = tuple(p.strip() for p in key.strip().split("."))
        if not sep or len(parts) < 2 or any(not p for p in parts):
            raise ConfigError(
                f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. --set trainer.batch_size=128"
            )
        out.append((parts, _override_value(parts, raw.strip()), f"--set {item}"))
    return out


def _describe_error(err: Mapping[str, Any], layers: _Layers, config_file: Path | None) -> str:
    loc = [str(p) for p in err["loc"]]
    # Errors inside a union or a tagged model end with the type name, which means nothing to the user.
    key = ".".join(p for p in loc if not p[:1].isupper() and "[" not in p) or "(top level)"
    source = layers.source_of(loc)
    if err["type"] == "extra_forbidden":
        where = source or (f"file {config_file}" if config_file else "the configuration")
        return f"unknown key '{key}' (in {where}); see `tmrl config` for the valid keys"
    where = f" (from {source})" if source else ""
    given = ""
    if "input" in err and not isinstance(err["input"], dict):
        given = f", got {err['input']!r}"
    return f"{key}: {err['msg']}{given}{where}"


def validate_layers(layers: _Layers, data_dir: Path, config_file: Path | None = None) -> TmrlConfig:
    """Validate merged raw values into a ``TmrlConfig``; errors become one ``ConfigError`` line."""
    values = dict(layers.values)
    if "data_dir" in values:
        raise ConfigError(
            f"unknown key 'data_dir' (in {layers.sources.get('data_dir', 'the configuration')}): the data "
            "directory is set with --data-dir or TMRL_DATA_DIR"
        )
    try:
        return TmrlConfig.model_validate({**values, "data_dir": data_dir})
    except ValidationError as exc:
        errors = exc.errors()
        lines = [_describe_error(e, layers, config_file) for e in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise ConfigError("invalid configuration: " + "; ".join(lines) + more) from None


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a ConfigError naming the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML ({exc}); fix it or delete it to get the defaults"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None


def load_config(
    *,
    data_dir: Path | str | None = None,
    config_file: Path | str | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    create: bool = True,
) -> TmrlConfig:
    """Resolve the data directory, create the commented default file on first use, apply env and flags.

    ``config_file`` (or ``TMRL_CONFIG``) selects another file; an explicitly given file must exist.
    """
    env = os.environ if environ is None else environ
    ddir = Path(data_dir).expanduser() if data_dir else default_data_dir(env)
    explicit = config_file or env.get(ENV_CONFIG_FILE)
    path = Path(explicit).expanduser() if explicit else ddir / CONFIG_FILE_NAME

    layers = _Layers()
    if path.exists():
        layers.merge_file(read_toml(path), f"file {path}")
    elif explicit:
        raise ConfigError(
            f"{path}: configuration file not found (omit --config to use {ddir / CONFIG_FILE_NAME})"
        )
    elif create:
        write_default_config(path)
    for parts, value, source in [*_env_overrides(env), *_flag_overrides(overrides)]:
        layers.put(parts, value, source)
    return validate_layers(layers, ddir, path).with_resolved_paths()


def write_default_config(path: Path) -> None:
    """Write the commented default configuration to ``path`` (atomically; parents created)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(render_toml(TmrlConfig()), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot create the configuration file ({exc.strerror}); choose another --data-dir"
        ) from None


def write_snapshot(config: TmrlConfig, path: Path) -> None:
    """Write the effective configuration (every value explicit) as commented TOML, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        render_toml(config, title="Effective configuration of this run (snapshot)"), encoding="utf-8"
    )
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------------
# Commented TOML rendering


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """A JSON-compatible value as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Enum):
        return toml_value(value.value)
    raise TypeError(f"cannot write {value!r} as TOML")


def _choices(annotation: Any) -> list[Any] | None:
    """The allowed values when the annotation is a Literal (possibly optional)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return list(typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            if arg is type(None):
                continue
            sub = _choices(arg)
            if sub is None:
                return None
            out.extend(sub)
        return out
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [m.value for m in annotation]
    return None


def _comment(text: str, indent: str = "") -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in textwrap.wrap(text, 104) or [""]]


def _render_model(model: BaseModel, path: tuple[str, ...], lines: list[str]) -> None:
    cls = type(model)
    dumped = model.model_dump(mode="json")
    tables: list[tuple[str, BaseModel]] = []
    for name, info in cls.model_fields.items():
        if info.exclude:
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            tables.append((name, value))
            continue
        raw = dumped[name]
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
        desc = info.description or ""
        choices = _choices(info.annotation)
        if choices:
            sep = "" if not desc or desc.endswith((".", ":", ";")) else "."
            desc = f"{desc}{sep} One of: {', '.join(json.dumps(c) for c in choices)}.".strip()
        lines.extend(_comment(desc))
        if raw is None:
            lines.append(f"# {_toml_key(name)} =   (not set)")
        else:
            lines.append(f"{_toml_key(name)} = {toml_value(raw)}")
        lines.append("")
    for name, sub in tables:
        sub_path = (*path, name)
        doc = (type(sub).__doc__ or "").strip().splitlines()
        lines.append("")
        if doc and doc[0]:
            lines.extend(_comment(doc[0]))
        lines.append("[" + ".".join(_toml_key(p) for p in sub_path) + "]")
        _render_model(sub, sub_path, lines)


def render_toml(config: BaseModel, title: str = "tmrl configuration") -> str:
    """The configuration as TOML with each key's description as a comment above it."""
    lines = _comment(title) + [
        "#",
        "# Every key can also be set by an environment variable TMRL_<SECTION>__<KEY> (e.g. TMRL_RUN__WORKERS=2)",
        "# or a flag --set section.key=value (e.g. --set trainer.batch_size=128). Unknown keys are errors.",
        "",
    ]
    _render_model(config, (), lines)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"

"""The exception hierarchy: every error tmrl raises on purpose derives from ``TmrlError``.

A ``TmrlError`` reaching the command line is printed as one line (no traceback) and exits non-zero.
"""


class TmrlError(Exception):
    """Base of every deliberate tmrl error; its message is meant for the user."""


class ConfigError(TmrlError):
    """A configuration file, flag or environment variable is invalid."""


class GameError(TmrlError):
    """The game (TrackMania or the built-in one) is not reachable or misbehaves."""


class TelemetryError(GameError):
    """The telemetry stream (OpenPlanet plugin or built-in game) is silent or malformed."""


class RewardError(TmrlError):
    """A reward trajectory file is missing or invalid."""


class ProtocolError(TmrlError):
    """A peer sent bytes that break the relay protocol."""


class AuthError(TmrlError):
    """The relay refused the shared secret or the role."""


class CheckpointError(TmrlError):
    """A checkpoint is missing, corrupt or incompatible."""


class RoleError(TmrlError):
    """A role of ``tmrl run`` (relay, trainer, worker) cannot start or stopped unexpectedly."""


class RunError(TmrlError):
    """A run directory is missing or holds no metrics to show."""
